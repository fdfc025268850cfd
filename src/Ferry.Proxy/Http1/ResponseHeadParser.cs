using System.Buffers;

namespace Ferry.Http1;

/// <summary>Parses an HTTP/1.x response head (RFC 9112 §2-§5) from bytes already received. No I/O: the caller
/// reads, calls TryParse, and reads more when it returns false.</summary>
internal sealed class ResponseHeadParser
{
    private readonly Http1Limits _limits;

    public ResponseHeadParser(Http1Limits limits)
    {
        ArgumentNullException.ThrowIfNull(limits);
        _limits = limits;
    }

    /// <summary>
    /// True: a complete head was parsed into <paramref name="head"/> (reset first) and the reader is just past its
    /// empty line. False: the head is not complete yet; neither the reader nor the head changed. Throws
    /// <see cref="Http1Exception"/> for a malformed head, and HeaderSectionTooLarge once MaxResponseHeaderBytes are
    /// available without a complete head.
    /// </summary>
    public bool TryParse(ref SequenceReader<byte> reader, ResponseHead head)
    {
        ArgumentNullException.ThrowIfNull(head);

        // Like Kestrel (Http1Connection slices the buffer to the header bytes still allowed), the limit bounds the
        // input instead of being counted while parsing: nothing beyond it is looked at, so a slow or endless head
        // costs at most one scan of MaxResponseHeaderBytes per call.
        int max = _limits.MaxResponseHeaderBytes;
        ReadOnlySequence<byte> bounded = reader.UnreadSequence.Slice(0, Math.Min(reader.Remaining, max));
        if (!TryFindEnd(bounded, out long headLength))
        {
            if (reader.Remaining >= max)
            {
                // max bytes hold no complete head, so the head is at least max + 1 bytes long.
                throw new Http1Exception(Http1Error.HeaderSectionTooLarge);
            }

            return false;
        }

        // The head is complete: parse it once, line by line. Every line in it is known to end in LF.
        head.Reset();
        var lines = new SequenceReader<byte>(bounded.Slice(0, headLength));
        using var buffer = new LineBuffer();
        bool statusLineParsed = false;
        int fieldCount = 0;
        while (lines.TryReadTo(out ReadOnlySequence<byte> rawLine, (byte)'\n'))
        {
            ReadOnlySpan<byte> line = Http1Syntax.RemoveCr(buffer.GetSpan(rawLine));
            if (!statusLineParsed)
            {
                ParseStatusLine(line, head);
                statusLineParsed = true;
            }
            else if (line.IsEmpty)
            {
                break;
            }
            else
            {
                if (++fieldCount > _limits.MaxResponseHeaderCount)
                {
                    throw new Http1Exception(Http1Error.TooManyHeaders);
                }

                Http1Syntax.SplitFieldLine(line, out ReadOnlySpan<byte> name, out ReadOnlySpan<byte> value);
                head.AddField(KnownHeaders.GetName(name, out FramingHeader framing), framing, value);
            }
        }

        reader.Advance(headLength);
        return true;
    }

    // Finds the end of the head: the first empty line after the status line. A bare LF counts as a line end here
    // so that a head using bare LFs is found, and then rejected by the parse, instead of waiting for the limit.
    private static bool TryFindEnd(ReadOnlySequence<byte> bytes, out long headLength)
    {
        var scan = new SequenceReader<byte>(bytes);
        headLength = 0;
        if (!scan.TryAdvanceTo((byte)'\n'))
        {
            return false;
        }

        while (true)
        {
            if (scan.IsNext((byte)'\n', advancePast: true) || scan.IsNext("\r\n"u8, advancePast: true))
            {
                headLength = scan.Consumed;
                return true;
            }

            if (!scan.TryAdvanceTo((byte)'\n'))
            {
                return false;
            }
        }
    }

    // status-line = HTTP-version SP status-code SP [ reason-phrase ] (RFC 9112 §4). The SP before an empty reason
    // is often omitted in practice ("HTTP/1.1 200"); like SocketsHttpHandler, accept both.
    private static void ParseStatusLine(ReadOnlySpan<byte> line, ResponseHead head)
    {
        int minorVersion = ParseVersion(line);

        // "HTTP/1.x" is 8 bytes, then SP and 3DIGIT.
        if (line.Length < 12 || line[8] != (byte)' ')
        {
            throw new Http1Exception(Http1Error.InvalidStatusLine);
        }

        int hundreds = line[9] - '0';
        int tens = line[10] - '0';
        int units = line[11] - '0';
        if (hundreds is < 1 or > 9 || tens is < 0 or > 9 || units is < 0 or > 9
            || (line.Length > 12 && line[12] != (byte)' '))
        {
            throw new Http1Exception(Http1Error.InvalidStatusCode);
        }

        ReadOnlySpan<byte> reason = line.Length > 13 ? line[13..] : [];
        // reason-phrase = 1*( HTAB / SP / VCHAR / obs-text ): the field-value rule.
        if (reason.ContainsAny(Http1Syntax.InvalidFieldValueBytes))
        {
            throw new Http1Exception(Http1Error.InvalidStatusLine);
        }

        head.SetStatusLine(minorVersion, (hundreds * 100) + (tens * 10) + units, ReasonPhrases.Get(reason));
    }

    private static int ParseVersion(ReadOnlySpan<byte> line)
    {
        // HTTP-name is case-sensitive (RFC 9112 §2.3).
        if (!line.StartsWith("HTTP/"u8))
        {
            throw new Http1Exception(Http1Error.InvalidStatusLine);
        }

        int end = line.IndexOf((byte)' ');
        ReadOnlySpan<byte> version = end < 0 ? line[5..] : line[5..end];
        if (version.Length == 3 && char.IsAsciiDigit((char)version[0]) && version[1] == (byte)'.' && char.IsAsciiDigit((char)version[2]))
        {
            if (version[0] == (byte)'1')
            {
                // RFC 9110 §2.5: a higher minor version is processed as the highest one the recipient implements.
                return version[2] == (byte)'0' ? 0 : 1;
            }

            throw new Http1Exception(Http1Error.UnsupportedHttpVersion);
        }

        // "HTTP/2 200" is how an HTTP/2 status would be written; anything else after "HTTP/" is just malformed.
        if (version.Length == 1 && char.IsAsciiDigit((char)version[0]))
        {
            throw new Http1Exception(Http1Error.UnsupportedHttpVersion);
        }

        throw new Http1Exception(Http1Error.InvalidStatusLine);
    }
}
