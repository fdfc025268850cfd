using System.Text;
using CsCheck;

namespace Ferry.Tests.Http1.Fuzz;

/// <summary>One edit of a seed input. Position and argument are taken modulo what the input allows, so any
/// generated edit applies to any input, and shrinking an edit list keeps it applicable.</summary>
internal readonly record struct Mutation(int Kind, int Position, int Argument)
{
    private const int Kinds = 9;

    /// <summary>Single bytes that change how a line, a list or a number is read.</summary>
    private static readonly byte[] Interesting =
        "\r\n\0 \t:,;=\"-+09afAFxX"u8.ToArray().Concat(new byte[] { 0x01, 0x0B, 0x7F, 0x80, 0xE9, 0xFF }).ToArray();

    /// <summary>Fragments spliced in anywhere.</summary>
    private static readonly string[] Fragments =
    [
        "\r\n", "\n", "\r", "\r\n ", "\r\n\t", "\r\n\r\n", " ", "  \t", ": ", ", ", ",,", ";", "chunked", "Chunked", "gzip",
        "HTTP/1.1 ", "HTTP/1.0 ", "HTTP/2 ", "HTTP/1.1 200", "99999999999999999999", "18446744073709551616",
        "9223372036854775807", "9223372036854775808", "FFFFFFFFFFFFFFFF", "7FFFFFFFFFFFFFFF", "0000000000000000000001",
        "-1", "0x10", "1e3", "\0", "\u00ff",
    ];

    /// <summary>Whole field lines that change framing, inserted after a line end: the CL/TE combinations.</summary>
    private static readonly string[] FramingLines =
    [
        "Content-Length: 0\r\n", "Content-Length: 5\r\n", "Content-Length: 5, 5\r\n", "Content-Length: 5,6\r\n",
        "Content-Length: 05\r\n", "Content-Length: +5\r\n", "Content-Length: -1\r\n", "Content-Length:\r\n",
        "Content-Length: ,\r\n", "Content-Length: 9223372036854775807\r\n", "Content-Length: 9223372036854775808\r\n",
        "Content-Length: 1 2\r\n", "content-length: 7\r\n", "CONTENT-LENGTH: 7\r\n", "Content-Length : 5\r\n",
        "Transfer-Encoding: chunked\r\n", "Transfer-Encoding: Chunked\r\n", "transfer-encoding: CHUNKED\r\n",
        "Transfer-Encoding: gzip, chunked\r\n", "Transfer-Encoding: chunked, gzip\r\n", "Transfer-Encoding: chunked, chunked\r\n",
        "Transfer-Encoding: identity\r\n", "Transfer-Encoding:\r\n", "Transfer-Encoding: ,chunked,\r\n",
        "Transfer-Encoding: chunked;q=1\r\n", " Transfer-Encoding: chunked\r\n", "Transfer-Encoding\t: chunked\r\n",
        "Connection: close\r\n", "Connection: keep-alive\r\n", "Connection: Upgrade, X-Foo\r\n", "Connection: ,CLOSE,\r\n",
        "Keep-Alive: timeout=99999999999, max=-1\r\n", "X-Fold: a\r\n b\r\n", "X-Nul: a\0b\r\n", "X-Bare: lf\n",
        "Server: gunicorn\r\n", "Set-Cookie: a=1\r\n",
    ];

    public static Gen<Mutation> Gen { get; } =
        CsCheck.Gen.Select(CsCheck.Gen.Int[0, Kinds - 1], CsCheck.Gen.Int[0, int.MaxValue], CsCheck.Gen.Int[0, int.MaxValue],
            (kind, position, argument) => new Mutation(kind, position, argument));

    /// <summary>Up to <paramref name="max"/> edits, fewer more often: most inputs should stay close to real ones.</summary>
    public static Gen<Mutation[]> List(int max) => Gen.Array[0, max];

    public static byte[] Apply(byte[] seed, Mutation[] mutations)
    {
        var bytes = new List<byte>(seed);
        foreach (Mutation m in mutations)
        {
            m.ApplyTo(bytes);
        }

        return [.. bytes];
    }

    public override string ToString() => $"{Kind}@{Position}:{Argument}";

    private void ApplyTo(List<byte> bytes)
    {
        int at = bytes.Count == 0 ? 0 : Position % (bytes.Count + 1);
        switch (Kind)
        {
            case 0 when bytes.Count > 0:
                // A bit flip anywhere.
                bytes[at % bytes.Count] ^= (byte)(1 << (Argument % 8));
                break;
            case 1:
                bytes.Insert(at, Interesting[Argument % Interesting.Length]);
                break;
            case 2:
                bytes.InsertRange(at, Encoding.Latin1.GetBytes(Fragments[Argument % Fragments.Length]));
                break;
            case 3 when bytes.Count > 0:
            {
                int start = at % bytes.Count;
                bytes.RemoveRange(start, Math.Min(1 + (Argument % 8), bytes.Count - start));
                break;
            }

            case 4:
                DuplicateLine(bytes, at);
                break;
            case 5 when bytes.Count > 0:
                // Truncation: the peer closed or the read ended mid-message.
                bytes.RemoveRange(at % bytes.Count, bytes.Count - (at % bytes.Count));
                break;
            case 6 when bytes.Count > 0:
                bytes[at % bytes.Count] = Interesting[Argument % Interesting.Length];
                break;
            case 7:
                bytes.InsertRange(AfterLineEnd(bytes, at), Encoding.Latin1.GetBytes(FramingLines[Argument % FramingLines.Length]));
                break;
            case 8:
                ReplaceNumber(bytes, at, Argument);
                break;
        }
    }

    // The line holding position `at` (LF included) inserted again right after itself: duplicate headers.
    private static void DuplicateLine(List<byte> bytes, int at)
    {
        if (bytes.Count == 0)
        {
            return;
        }

        int start = bytes.FindLastIndex(Math.Min(at, bytes.Count - 1), b => b == (byte)'\n') + 1;
        int end = bytes.FindIndex(start, b => b == (byte)'\n');
        if (end < 0)
        {
            return;
        }

        bytes.InsertRange(end + 1, bytes.GetRange(start, end + 1 - start));
    }

    private static int AfterLineEnd(List<byte> bytes, int at)
    {
        int lf = at < bytes.Count ? bytes.FindIndex(at, b => b == (byte)'\n') : -1;
        return lf < 0 ? bytes.Count : lf + 1;
    }

    // The run of digits at or after `at` becomes a huge, signed, or empty number.
    private static void ReplaceNumber(List<byte> bytes, int at, int argument)
    {
        int start = at < bytes.Count ? bytes.FindIndex(at, b => char.IsAsciiHexDigit((char)b)) : -1;
        if (start < 0)
        {
            return;
        }

        int end = start;
        while (end < bytes.Count && char.IsAsciiHexDigit((char)bytes[end]))
        {
            end++;
        }

        string[] numbers = ["", "0", "00000000000000000000000", "99999999999999999999", "9223372036854775808", "8000000000000000", "10000000000000000", "-0", "4294967296"];
        bytes.RemoveRange(start, end - start);
        bytes.InsertRange(start, Encoding.Latin1.GetBytes(numbers[argument % numbers.Length]));
    }
}
