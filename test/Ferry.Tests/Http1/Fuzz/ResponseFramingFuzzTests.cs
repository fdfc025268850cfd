using System.Buffers;
using System.Text;
using CsCheck;
using Ferry.Http1;

namespace Ferry.Tests.Http1.Fuzz;

/// <summary>ResponseFraming.Decide against a reference decision written from RFC 9112 §6.3 and Ferry's documented
/// policy, over generated heads full of Content-Length / Transfer-Encoding / Connection combinations, and over
/// mutated real heads.</summary>
public class ResponseFramingFuzzTests
{
    private static readonly int[] Statuses = [100, 101, 102, 103, 199, 200, 201, 204, 205, 206, 299, 301, 304, 400, 404, 500, 502, 599, 999];

    private static readonly (string Name, string[] Values)[] FieldPool =
    [
        ("Content-Length", ["0", "5", "05", "5, 5", "5,5,5", "5, 6", "5,", ",5", ",", "", "+5", "-1", " 5 ", "5 5", "0x5", "1e3",
            "9223372036854775807", "9223372036854775808", "18446744073709551616", "00000000000000000000000000042"]),
        ("content-length", ["5", "6"]),
        ("Transfer-Encoding", ["chunked", "Chunked", "CHUNKED", " chunked ", "gzip, chunked", "chunked, gzip", "chunked, chunked",
            "identity", "gzip", "", ",", ",chunked,", "chunked;q=1", "x-chunked", "chunked\t,\t"]),
        ("transfer-encoding", ["chunked", "gzip"]),
        ("Connection", ["close", "Close", "keep-alive", "Keep-Alive", "upgrade", "close, keep-alive", "X-Trace", ",close,", "closed", ""]),
        ("Keep-Alive", ["timeout=5, max=100", "timeout=99999999999"]),
        ("Server", ["nginx", "gunicorn", "TornadoServer/6.4.2"]),
        ("X-Content-Length", ["5"]),
        ("Content-Lengths", ["5"]),
    ];

    internal sealed record Case(int Minor, int Status, (int Field, int Value)[] Fields, bool IsHead, bool RequestedUpgrade)
    {
        public (string Name, string Value)[] Lines =>
            [.. Fields.Select(f => (FieldPool[f.Field % FieldPool.Length].Name,
                FieldPool[f.Field % FieldPool.Length].Values[f.Value % FieldPool[f.Field % FieldPool.Length].Values.Length]))];

        public byte[] Bytes => Encoding.Latin1.GetBytes(
            $"HTTP/1.{Minor} {Statuses[Status % Statuses.Length]} Reason\r\n{string.Concat(Lines.Select(l => $"{l.Name}: {l.Value}\r\n"))}\r\n");

        public override string ToString() => $"head={IsHead} upgrade={RequestedUpgrade} {FuzzRun.Escape(Bytes)}";
    }

    private static readonly Gen<Case> Generated =
        Gen.Select(Gen.Int[0, 1], Gen.Int[0, Statuses.Length - 1], Gen.Select(Gen.Int[0, 100], Gen.Int[0, 100]).Array[0, 5],
            Gen.Int[0, 9].Select(n => n == 0), Gen.Int[0, 3].Select(n => n == 0),
            (minor, status, fields, isHead, upgrade) => new Case(minor, status, fields, isHead, upgrade));

    [Fact]
    public void Generated_heads_are_framed_as_the_reference_decides()
    {
        FuzzRun.Check(Generated, ciCount: 20_000, c =>
        {
            ResponseHead head = ParseValid(c.Bytes);
            Assert.Equal(
                ReferenceFraming.Decide(c.IsHead, c.RequestedUpgrade, head.MinorVersion, head.StatusCode, c.Lines),
                Actual(c.IsHead, c.RequestedUpgrade, head));
        }, c => c.ToString());
    }

    [Fact]
    public void Mutated_real_heads_that_parse_are_framed_as_the_reference_decides()
    {
        var gen = Gen.Select(MutatedHead.Cases, Gen.Bool, Gen.Bool);
        FuzzRun.Check(gen, ciCount: 20_000, t =>
        {
            (MutatedHead c, bool isHead, bool upgrade) = t;
            var head = new ResponseHead();
            var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(c.Bytes));
            try
            {
                if (!new ResponseHeadParser(Http1Limits.Default).TryParse(ref reader, head))
                {
                    return;
                }
            }
            catch (Http1Exception)
            {
                return;
            }

            var lines = head.Headers.Select(f => (f.Key, f.Value)).ToArray();
            Assert.Equal(ReferenceFraming.Decide(isHead, upgrade, head.MinorVersion, head.StatusCode, lines), Actual(isHead, upgrade, head));
        }, t => $"head={t.Item2} upgrade={t.Item3} {t.Item1}");
    }

    private static ResponseHead ParseValid(byte[] bytes)
    {
        var head = new ResponseHead();
        var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(bytes));
        Assert.True(new ResponseHeadParser(Http1Limits.Default).TryParse(ref reader, head));
        return head;
    }

    private static string Actual(bool isHead, bool requestedUpgrade, ResponseHead head)
    {
        try
        {
            BodyFraming framing = ResponseFraming.Decide(isHead, requestedUpgrade, head);
            return $"{framing.Kind} {framing.ContentLength} keep-alive={framing.KeepAlivePermitted}";
        }
        catch (Http1Exception ex)
        {
            return $"reject {ex.Error}";
        }
    }
}

/// <summary>RFC 9112 §6.3 written out from the field lines alone, independent of ResponseHead's interpretation,
/// with the two places where Ferry's documented policy is stricter than the RFC spelled out.</summary>
internal static class ReferenceFraming
{
    public static string Decide(bool isHead, bool requestedUpgrade, int minor, int status, IReadOnlyList<(string Name, string Value)> fields)
    {
        string[] connection = [.. Elements(fields, "Connection").Select(e => e.ToLowerInvariant())];
        // RFC 9112 §9.3: 1.1 persists unless "close"; 1.0 only with "keep-alive".
        bool keepAlive = !connection.Contains("close") && (minor == 1 || connection.Contains("keep-alive"));

        if (status == 101)
        {
            // Policy: a 101 nobody asked for cannot be framed.
            return requestedUpgrade ? "Upgrade -1 keep-alive=False" : "reject UnexpectedUpgrade";
        }

        // Rule 1: HEAD, 1xx, 204, 304 end at the head.
        if (isHead || status is >= 100 and < 200 or 204 or 304)
        {
            return $"None 0 keep-alive={keepAlive}";
        }

        bool hasTe = fields.Any(f => Is(f.Name, "Transfer-Encoding"));
        bool hasCl = fields.Any(f => Is(f.Name, "Content-Length"));
        if (hasTe)
        {
            // Rule 3: both is smuggling-shaped; policy: reject rather than prefer TE.
            if (hasCl)
            {
                return "reject ContentLengthWithTransferEncoding";
            }

            // RFC 9112 §6.1: TE in 1.0 is faulty framing.
            if (minor == 0)
            {
                return "reject TransferEncodingInHttp10";
            }

            string[] codings = [.. Elements(fields, "Transfer-Encoding")];
            // Rule 4: chunked last → chunked; anything else → close-delimited. Policy: Ferry forwards codings
            // undecoded, so it accepts exactly one coding, chunked, and rejects every other list.
            return codings.Length == 1 && codings[0].Equals("chunked", StringComparison.OrdinalIgnoreCase)
                ? $"Chunked -1 keep-alive={keepAlive}"
                : "reject UnsupportedTransferEncoding";
        }

        if (hasCl)
        {
            // Rule 5 and RFC 9110 §8.6: every element 1*DIGIT, all equal; the first problem met decides the reason.
            long? length = null;
            foreach ((string name, string value) in fields)
            {
                if (!Is(name, "Content-Length"))
                {
                    continue;
                }

                string[] elements = SplitList(value);
                if (elements.Length == 0)
                {
                    return "reject InvalidContentLength";
                }

                foreach (string element in elements)
                {
                    if (element.Length == 0 || !element.All(char.IsAsciiDigit)
                        || !System.Numerics.BigInteger.TryParse(element, out var n) || n > long.MaxValue)
                    {
                        return "reject InvalidContentLength";
                    }

                    if (length is { } previous && previous != (long)n)
                    {
                        return "reject ConflictingContentLength";
                    }

                    length = (long)n;
                }
            }

            return length == 0 ? $"None 0 keep-alive={keepAlive}" : $"ContentLength {length} keep-alive={keepAlive}";
        }

        // Rule 8: close-delimited, so the connection ends with the body.
        return "CloseDelimited -1 keep-alive=False";
    }

    private static bool Is(string name, string expected) => name.Equals(expected, StringComparison.OrdinalIgnoreCase);

    private static IEnumerable<string> Elements(IReadOnlyList<(string Name, string Value)> fields, string name) =>
        fields.Where(f => Is(f.Name, name)).SelectMany(f => SplitList(f.Value));

    // RFC 9110 §5.6.1: comma-separated, OWS around elements, empty elements ignored.
    private static string[] SplitList(string value) =>
        [.. value.Split(',').Select(e => e.Trim(' ', '\t')).Where(e => e.Length > 0)];
}
