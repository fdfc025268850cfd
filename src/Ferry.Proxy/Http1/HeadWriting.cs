using System.Buffers;
using System.Text;

namespace Ferry.Http1;

/// <summary>Writes text into a buffer writer as Latin-1 (char n → byte n), the inverse of how Ferry decodes what it
/// receives, after checking that it cannot break out of the line it is written into.</summary>
internal static class HeadWriting
{
    // Chars a header value may carry: everything that maps to a Latin-1 byte except NUL, CR and LF. CR and LF would
    // end the line early and let the rest be read as another field or another request (request smuggling); NUL is
    // treated as a line end by some parsers.
    private static readonly SearchValues<char> s_valueChars = SearchValues.Create(
        Enumerable.Range(1, 0xFF).Select(c => (char)c).Where(c => c is not '\r' and not '\n').ToArray());

    private static readonly SearchValues<char> s_tokenChars =
        SearchValues.Create("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz");

    // request-target has no whitespace (RFC 9112 §3.2): a SP would move "HTTP/1.1" and change how the upstream
    // reads the request line. Bytes above 0x7F are let through (raw UTF-8 paths exist in the wild).
    private static readonly SearchValues<char> s_targetChars = SearchValues.Create(
        Enumerable.Range(0x21, 0xFF - 0x20).Select(c => (char)c).Where(c => c != 0x7F).ToArray());

    public static bool IsToken(ReadOnlySpan<char> token) => token.Length > 0 && !token.ContainsAnyExcept(s_tokenChars);

    public static bool IsTarget(ReadOnlySpan<char> target) => target.Length > 0 && !target.ContainsAnyExcept(s_targetChars);

    public static bool IsValue(ReadOnlySpan<char> value) => !value.ContainsAnyExcept(s_valueChars);

    public static void ValidateToken(string token, string paramName)
    {
        ArgumentNullException.ThrowIfNull(token, paramName);
        if (token.Length == 0 || token.AsSpan().ContainsAnyExcept(s_tokenChars))
        {
            throw new ArgumentException($"'{token}' is not an HTTP token.", paramName);
        }
    }

    public static void ValidateTarget(string target, string paramName)
    {
        ArgumentNullException.ThrowIfNull(target, paramName);
        if (target.Length == 0 || target.AsSpan().ContainsAnyExcept(s_targetChars))
        {
            throw new ArgumentException("The request target is empty or contains whitespace, a control character or a character above U+00FF.", paramName);
        }
    }

    public static void ValidateValue(string value, string paramName)
    {
        ArgumentNullException.ThrowIfNull(value, paramName);
        if (value.AsSpan().ContainsAnyExcept(s_valueChars))
        {
            throw new ArgumentException("A header value contains CR, LF, NUL or a character above U+00FF.", paramName);
        }
    }

    /// <summary>Writes validated text; every char is below U+0100, so Latin-1 maps each to one byte.</summary>
    public static Span<byte> WriteLatin1(Span<byte> destination, string text)
    {
        int written = Encoding.Latin1.GetBytes(text, destination);
        return destination[written..];
    }

    public static Span<byte> WriteBytes(Span<byte> destination, ReadOnlySpan<byte> bytes)
    {
        bytes.CopyTo(destination);
        return destination[bytes.Length..];
    }

    /// <summary>"name: value CRLF" for an already validated name and value.</summary>
    public static void WriteFieldLine(IBufferWriter<byte> writer, string name, string value)
    {
        int length = name.Length + 2 + value.Length + 2;
        Span<byte> span = writer.GetSpan(length);
        Span<byte> rest = WriteLatin1(span, name);
        rest = WriteBytes(rest, ": "u8);
        rest = WriteLatin1(rest, value);
        WriteBytes(rest, "\r\n"u8);
        writer.Advance(length);
    }
}
