using System.Buffers;
using Microsoft.Extensions.Primitives;

namespace Ferry.Http1;

/// <summary>Writes an HTTP/1.1 request head straight into a buffer writer (a PipeWriter in production). Every piece
/// is validated before any byte is written, so a rejected call leaves the writer untouched.</summary>
internal static class RequestHeadWriter
{
    /// <summary>"METHOD SP target SP HTTP/1.1 CRLF". Ferry always speaks HTTP/1.1 to upstreams.</summary>
    public static void WriteRequestLine(IBufferWriter<byte> writer, string method, string target)
    {
        ArgumentNullException.ThrowIfNull(writer);
        HeadWriting.ValidateToken(method, nameof(method));
        HeadWriting.ValidateTarget(target, nameof(target));

        int length = method.Length + 1 + target.Length + " HTTP/1.1\r\n"u8.Length;
        Span<byte> span = writer.GetSpan(length);
        Span<byte> rest = HeadWriting.WriteLatin1(span, method);
        rest = HeadWriting.WriteBytes(rest, " "u8);
        rest = HeadWriting.WriteLatin1(rest, target);
        HeadWriting.WriteBytes(rest, " HTTP/1.1\r\n"u8);
        writer.Advance(length);
    }

    /// <summary>"name: value CRLF".</summary>
    public static void WriteHeader(IBufferWriter<byte> writer, string name, string value)
    {
        ArgumentNullException.ThrowIfNull(writer);
        HeadWriting.ValidateToken(name, nameof(name));
        HeadWriting.ValidateValue(value, nameof(value));
        HeadWriting.WriteFieldLine(writer, name, value);
    }

    /// <summary>One field line per value, in order; a null value is written as an empty one. Nothing is written
    /// unless every value is valid.</summary>
    public static void WriteHeader(IBufferWriter<byte> writer, string name, StringValues values)
    {
        ArgumentNullException.ThrowIfNull(writer);
        HeadWriting.ValidateToken(name, nameof(name));
        foreach (string? value in values)
        {
            HeadWriting.ValidateValue(value ?? string.Empty, nameof(values));
        }

        foreach (string? value in values)
        {
            HeadWriting.WriteFieldLine(writer, name, value ?? string.Empty);
        }
    }

    /// <summary>The empty line that ends the head.</summary>
    public static void WriteEnd(IBufferWriter<byte> writer)
    {
        ArgumentNullException.ThrowIfNull(writer);
        writer.Write("\r\n"u8);
    }
}
