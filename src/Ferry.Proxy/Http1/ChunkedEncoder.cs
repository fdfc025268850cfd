using System.Buffers;
using System.Diagnostics;

namespace Ferry.Http1;

/// <summary>Writes chunked framing (RFC 9112 §7.1) around payload the caller writes itself.</summary>
internal static class ChunkedEncoder
{
    /// <summary>"hex-size CRLF"; lower-case hex without leading zeros, as nginx and Kestrel write it.</summary>
    public static void WriteChunkHeader(IBufferWriter<byte> writer, long length)
    {
        ArgumentNullException.ThrowIfNull(writer);
        // A zero-length chunk would be the last-chunk and end the body early.
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(length);

        // 16 hex digits hold any long, then CRLF.
        Span<byte> span = writer.GetSpan(18);
        bool formatted = length.TryFormat(span, out int digits, "x");
        Debug.Assert(formatted, "18 bytes hold any long in hex plus CRLF.");
        span[digits] = (byte)'\r';
        span[digits + 1] = (byte)'\n';
        writer.Advance(digits + 2);
    }

    /// <summary>The CRLF that follows each chunk's data.</summary>
    public static void WriteChunkEnd(IBufferWriter<byte> writer)
    {
        ArgumentNullException.ThrowIfNull(writer);
        writer.Write("\r\n"u8);
    }

    /// <summary>"0 CRLF CRLF": last-chunk and an empty trailer section.</summary>
    public static void WriteLastChunk(IBufferWriter<byte> writer)
    {
        ArgumentNullException.ThrowIfNull(writer);
        writer.Write("0\r\n\r\n"u8);
    }

    /// <summary>Last-chunk followed by trailer fields. Trailers are validated like request headers, all of them
    /// before the first byte is written.</summary>
    public static void WriteLastChunk(IBufferWriter<byte> writer, IEnumerable<KeyValuePair<string, string>> trailers)
    {
        ArgumentNullException.ThrowIfNull(writer);
        ArgumentNullException.ThrowIfNull(trailers);

        IReadOnlyCollection<KeyValuePair<string, string>> fields = trailers as IReadOnlyCollection<KeyValuePair<string, string>> ?? trailers.ToList();
        foreach (KeyValuePair<string, string> field in fields)
        {
            HeadWriting.ValidateToken(field.Key, nameof(trailers));
            HeadWriting.ValidateValue(field.Value, nameof(trailers));
        }

        writer.Write("0\r\n"u8);
        foreach (KeyValuePair<string, string> field in fields)
        {
            HeadWriting.WriteFieldLine(writer, field.Key, field.Value);
        }

        writer.Write("\r\n"u8);
    }
}
