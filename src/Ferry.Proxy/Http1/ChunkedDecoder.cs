using System.Buffers;
using System.Diagnostics;

namespace Ferry.Http1;

internal enum ChunkedStatus
{
    /// <summary>Payload bytes were returned.</summary>
    Data,

    /// <summary>The remaining bytes hold no complete framing element; read more and call again.</summary>
    NeedMoreData,

    /// <summary>The last chunk, the trailer section and the final CRLF were consumed.</summary>
    Complete,
}

/// <summary>Decodes a chunked body (RFC 9112 §7.1) incrementally, returning payload as slices of the input.
/// One instance per connection, Reset() per message.</summary>
internal sealed class ChunkedDecoder
{
    private enum State
    {
        ChunkSizeLine,
        ChunkData,
        ChunkDataEnd,
        Trailer,
        Complete,
    }

    private readonly Http1Limits _limits;

    private State _state;

    // Payload bytes of the current chunk not yet returned.
    private long _chunkRemaining;

    // Bytes of the trailer section consumed so far, bounded by MaxTrailerBytes.
    private long _trailerBytes;

    public ChunkedDecoder(Http1Limits limits)
    {
        ArgumentNullException.ThrowIfNull(limits);
        _limits = limits;
    }

    /// <summary>Trailer fields of the message, in order, names as received (cached for well-known names).</summary>
    public List<KeyValuePair<string, string>> Trailers { get; } = [];

    public void Reset()
    {
        _state = State.ChunkSizeLine;
        _chunkRemaining = 0;
        _trailerBytes = 0;
        Trailers.Clear();
    }

    /// <summary>
    /// Consumes framing and at most one contiguous run of payload. Data: <paramref name="data"/> is a non-empty slice
    /// of the reader's sequence and the reader is past it. NeedMoreData: everything decodable was consumed; a partial
    /// line is left for the next call. Complete: the reader is just past the message.
    /// </summary>
    public ChunkedStatus Read(ref SequenceReader<byte> reader, out ReadOnlySequence<byte> data)
    {
        data = default;
        while (true)
        {
            switch (_state)
            {
                case State.ChunkSizeLine:
                {
                    if (!TryReadLine(ref reader, _limits.MaxChunkLineBytes, Http1Error.ChunkLineTooLong, out ReadOnlySequence<byte> line))
                    {
                        return ChunkedStatus.NeedMoreData;
                    }

                    using var buffer = new LineBuffer();
                    _chunkRemaining = ParseChunkSizeLine(Http1Syntax.RemoveCr(buffer.GetSpan(line)));
                    _state = _chunkRemaining == 0 ? State.Trailer : State.ChunkData;
                    break;
                }

                case State.ChunkData:
                {
                    if (reader.End)
                    {
                        return ChunkedStatus.NeedMoreData;
                    }

                    Debug.Assert(_chunkRemaining > 0, "A chunk with nothing left moves to ChunkDataEnd.");
                    long length = Math.Min(_chunkRemaining, reader.Remaining);
                    data = reader.UnreadSequence.Slice(0, length);
                    reader.Advance(length);
                    _chunkRemaining -= length;
                    if (_chunkRemaining == 0)
                    {
                        _state = State.ChunkDataEnd;
                    }

                    return ChunkedStatus.Data;
                }

                case State.ChunkDataEnd:
                {
                    if (reader.IsNext("\r\n"u8, advancePast: true))
                    {
                        _state = State.ChunkSizeLine;
                        break;
                    }

                    // Anything but CRLF after the data means the size was wrong: the upstream's framing can no
                    // longer be trusted. A lone CR may still be followed by LF.
                    if (reader.Remaining >= 2 || (reader.TryPeek(out byte first) && first != (byte)'\r'))
                    {
                        throw new Http1Exception(Http1Error.InvalidChunkTerminator);
                    }

                    return ChunkedStatus.NeedMoreData;
                }

                case State.Trailer:
                {
                    long budget = _limits.MaxTrailerBytes - _trailerBytes;
                    long before = reader.Consumed;
                    if (!TryReadLine(ref reader, budget, Http1Error.TrailerSectionTooLarge, out ReadOnlySequence<byte> line))
                    {
                        return ChunkedStatus.NeedMoreData;
                    }

                    _trailerBytes += reader.Consumed - before;
                    using var buffer = new LineBuffer();
                    ReadOnlySpan<byte> field = Http1Syntax.RemoveCr(buffer.GetSpan(line));
                    if (field.IsEmpty)
                    {
                        _state = State.Complete;
                        return ChunkedStatus.Complete;
                    }

                    Http1Syntax.SplitFieldLine(field, out ReadOnlySpan<byte> name, out ReadOnlySpan<byte> value);
                    Trailers.Add(new(KnownHeaders.GetName(name, out _), Http1Syntax.DecodeLatin1(value)));
                    break;
                }

                case State.Complete:
                    return ChunkedStatus.Complete;

                default:
                    throw new UnreachableException();
            }
        }
    }

    // Reads one LF-terminated line if it lies within the first maxLength bytes (LF included); otherwise throws once
    // maxLength bytes are available, and leaves the reader untouched while fewer are.
    private static bool TryReadLine(ref SequenceReader<byte> reader, long maxLength, Http1Error tooLong, out ReadOnlySequence<byte> line)
    {
        long window = Math.Max(0, Math.Min(reader.Remaining, maxLength));
        var bounded = new SequenceReader<byte>(reader.UnreadSequence.Slice(0, window));
        if (bounded.TryReadTo(out line, (byte)'\n'))
        {
            reader.Advance(bounded.Consumed);
            return true;
        }

        if (reader.Remaining >= maxLength)
        {
            throw new Http1Exception(tooLong);
        }

        return false;
    }

    // chunk-size [ chunk-ext ], chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] ).
    // Extensions carry nothing Ferry uses, so they are only checked for control characters, not parsed.
    private static long ParseChunkSizeLine(ReadOnlySpan<byte> line)
    {
        long size = 0;
        int i = 0;
        for (; i < line.Length; i++)
        {
            int digit = HexValue(line[i]);
            if (digit < 0)
            {
                break;
            }

            if (size > (long.MaxValue >> 4))
            {
                throw new Http1Exception(Http1Error.InvalidChunkSize);
            }

            size = (size << 4) | (uint)digit;
        }

        if (i == 0)
        {
            throw new Http1Exception(Http1Error.InvalidChunkSize);
        }

        ReadOnlySpan<byte> rest = line[i..];
        if (rest.IsEmpty)
        {
            return size;
        }

        ReadOnlySpan<byte> extensions = rest.TrimStart(" \t"u8);
        if (extensions.IsEmpty || extensions[0] != (byte)';')
        {
            throw new Http1Exception(Http1Error.InvalidChunkSize);
        }

        if (extensions.ContainsAny(Http1Syntax.InvalidFieldValueBytes))
        {
            throw new Http1Exception(Http1Error.InvalidChunkExtension);
        }

        return size;
    }

    private static int HexValue(byte b) => b switch
    {
        >= (byte)'0' and <= (byte)'9' => b - '0',
        >= (byte)'a' and <= (byte)'f' => b - 'a' + 10,
        >= (byte)'A' and <= (byte)'F' => b - 'A' + 10,
        _ => -1,
    };
}
