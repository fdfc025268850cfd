using System.Text;
using Microsoft.Extensions.Primitives;

namespace Ferry.Forwarding;

// RFC 9110 §7.6.1: the fields a client's Connection header names are its own and must not be forwarded. Kestrel
// rewrites a Connection header whose only standard option is close, keep-alive or upgrade to that one word
// (HttpHeaders.ParseConnection), so "Connection: X-Api-Key, close" reaches the application as "close" and the field it
// names would cross the proxy. Kestrel has no API for the raw value; the decoder it is given for that one header
// (KestrelServerOptions.RequestHeaderEncodingSelector) sees it, and keeps it for the request of this connection.
internal static class RawConnectionHeader
{
    // Parsing and the application run on the same flow of the connection's request loop, one request at a time: a box
    // created there is the one the application sees, and the application empties it for the next request.
    private static readonly AsyncLocal<Box> s_box = new();

    // Far more than any honest Connection header; bounds what a connection without the forwarder can accumulate.
    private const int MaxLength = 8 * 1024;

    public static Encoding Encoding { get; } = new CapturingLatin1();

    // Puts back what Kestrel dropped from this request's Connection header, and forgets it for the next request.
    public static void Restore(IHeaderDictionary headers)
    {
        if (s_box.Value is not { } box || box.Value is not { } raw)
        {
            return;
        }
        box.Value = null;
        var parsed = headers.Connection;
        if (parsed.Count == 1 && parsed[0] is { } single
            && (single.Equals("close", StringComparison.OrdinalIgnoreCase) || single.Equals("keep-alive", StringComparison.OrdinalIgnoreCase)
                || single.Equals("upgrade", StringComparison.OrdinalIgnoreCase))
            && !single.Equals(raw, StringComparison.OrdinalIgnoreCase))
        {
            headers.Connection = new StringValues(raw);
        }
    }

    private static void Capture(ReadOnlySpan<char> value)
    {
        var box = s_box.Value;
        if (box?.Value is null && IsLoneOption(value))
        {
            // What most clients send ("keep-alive", "close"): Kestrel keeps it as it is, so there is nothing to put
            // back, and no string is made per request for it.
            return;
        }
        if (box is null)
        {
            box = new Box();
            s_box.Value = box;
        }
        box.Value = box.Value is null ? value.ToString()
            : box.Value.Length + value.Length < MaxLength ? $"{box.Value}, {value}"
            : value.ToString();
    }

    private static bool IsLoneOption(ReadOnlySpan<char> value)
    {
        var token = value.Trim(" \t");
        return token.Equals("keep-alive", StringComparison.OrdinalIgnoreCase) || token.Equals("close", StringComparison.OrdinalIgnoreCase)
            || token.Equals("upgrade", StringComparison.OrdinalIgnoreCase);
    }

    private sealed class Box
    {
        public string? Value;
    }

    // Latin-1 like every other request header (FerryServer), and NUL refused like Kestrel's own Latin-1 decoder does.
    private sealed class CapturingLatin1 : Encoding
    {
        public override int GetByteCount(char[] chars, int index, int count) => Latin1.GetByteCount(chars, index, count);

        public override int GetBytes(char[] chars, int charIndex, int charCount, byte[] bytes, int byteIndex) =>
            Latin1.GetBytes(chars, charIndex, charCount, bytes, byteIndex);

        public override int GetCharCount(byte[] bytes, int index, int count) => count;

        public override int GetChars(byte[] bytes, int byteIndex, int byteCount, char[] chars, int charIndex)
        {
            var source = bytes.AsSpan(byteIndex, byteCount);
            if (source.Contains((byte)0))
            {
                throw new DecoderFallbackException("NUL in a header value");
            }
            var written = Latin1.GetChars(source, chars.AsSpan(charIndex));
            Capture(chars.AsSpan(charIndex, written));
            return written;
        }

        public override int GetMaxByteCount(int charCount) => charCount;

        public override int GetMaxCharCount(int byteCount) => byteCount;
    }
}
