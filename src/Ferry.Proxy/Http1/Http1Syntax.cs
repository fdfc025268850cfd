using System.Buffers;
using System.Text;

namespace Ferry.Http1;

/// <summary>Character classes and small grammar rules of RFC 9110/9112 shared by the head parser, the chunked
/// decoder and the writers.</summary>
internal static class Http1Syntax
{
    /// <summary>tchar, RFC 9110 §5.6.2.</summary>
    public static readonly SearchValues<byte> TokenBytes =
        SearchValues.Create("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"u8);

    /// <summary>Bytes a field value may not hold: CTLs other than HTAB, and DEL (RFC 9110 §5.5 field-vchar is
    /// VCHAR / obs-text). CR, LF and NUL are in this set, which is what makes a value unable to end a line.</summary>
    public static readonly SearchValues<byte> InvalidFieldValueBytes = SearchValues.Create(
        "\0\x01\x02\x03\x04\x05\x06\x07\x08\x0A\x0B\x0C\x0D\x0E\x0F\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1A\x1B\x1C\x1D\x1E\x1F\x7F"u8);

    /// <summary>Splits a field line (CRLF already removed) into its name and its value without surrounding OWS
    /// (RFC 9112 §5). Throws for obs-fold, a name that is not a token, whitespace before the colon and control
    /// characters in the value.</summary>
    public static void SplitFieldLine(ReadOnlySpan<byte> line, out ReadOnlySpan<byte> name, out ReadOnlySpan<byte> value)
    {
        // RFC 9112 §5.2 lets a proxy either reject a folded response or unfold it; rejecting never guesses.
        if (line.Length > 0 && IsOws(line[0]))
        {
            throw new Http1Exception(Http1Error.ObsoleteLineFolding);
        }

        int colon = line.IndexOfAnyExcept(TokenBytes);
        // No colon at all, an empty name, or a non-token byte. That includes whitespace before the colon: RFC 9112
        // §5.1 forbids it because parsers disagreed on such names, and rejecting is stricter than stripping it.
        if (colon <= 0 || line[colon] != (byte)':')
        {
            throw new Http1Exception(Http1Error.InvalidHeaderName);
        }

        name = line[..colon];
        value = TrimOws(line[(colon + 1)..]);
        if (value.ContainsAny(InvalidFieldValueBytes))
        {
            throw new Http1Exception(Http1Error.InvalidHeaderValue);
        }
    }

    /// <summary>Removes the CR that must precede the LF the line was split at.</summary>
    public static ReadOnlySpan<byte> RemoveCr(ReadOnlySpan<byte> lineBeforeLf)
    {
        if (lineBeforeLf.IsEmpty || lineBeforeLf[^1] != (byte)'\r')
        {
            // Accepting a bare LF is how parsers come to disagree on where a message ends. Kestrel accepts it in
            // requests unless its DisableHttp1LineFeedTerminators switch is set, which FerryServer does.
            throw new Http1Exception(Http1Error.InvalidLineEnding);
        }

        return lineBeforeLf[..^1];
    }

    public static bool IsOws(byte b) => b is (byte)' ' or (byte)'\t';

    public static ReadOnlySpan<byte> TrimOws(ReadOnlySpan<byte> span)
    {
        int start = 0;
        while (start < span.Length && IsOws(span[start]))
        {
            start++;
        }

        int end = span.Length;
        while (end > start && IsOws(span[end - 1]))
        {
            end--;
        }

        return span[start..end];
    }

    /// <summary>Parses 1*DIGIT into a non-negative long; false when empty, not all digits, or too large.</summary>
    public static bool TryParseDecimal(ReadOnlySpan<byte> digits, out long value)
    {
        value = 0;
        if (digits.IsEmpty)
        {
            return false;
        }

        foreach (byte b in digits)
        {
            uint digit = (uint)(b - '0');
            if (digit > 9 || value > (long.MaxValue - digit) / 10)
            {
                value = 0;
                return false;
            }

            value = (value * 10) + digit;
        }

        return true;
    }

    /// <summary>Latin-1 decoding (byte n → char n) so that any byte an upstream sends round-trips exactly.</summary>
    public static string DecodeLatin1(ReadOnlySpan<byte> bytes) => bytes.IsEmpty ? string.Empty : Encoding.Latin1.GetString(bytes);
}

/// <summary>Walks the elements of a comma-separated list (RFC 9110 §5.6.1), OWS trimmed, empty elements skipped.</summary>
internal ref struct FieldListEnumerator
{
    private ReadOnlySpan<byte> _rest;
    private bool _done;

    public FieldListEnumerator(ReadOnlySpan<byte> value)
    {
        _rest = value;
    }

    public ReadOnlySpan<byte> Current { get; private set; }

    public readonly FieldListEnumerator GetEnumerator() => this;

    public bool MoveNext()
    {
        while (!_done)
        {
            ReadOnlySpan<byte> element;
            int comma = _rest.IndexOf((byte)',');
            if (comma < 0)
            {
                element = _rest;
                _done = true;
            }
            else
            {
                element = _rest[..comma];
                _rest = _rest[(comma + 1)..];
            }

            element = Http1Syntax.TrimOws(element);
            if (!element.IsEmpty)
            {
                Current = element;
                return true;
            }
        }

        return false;
    }
}
