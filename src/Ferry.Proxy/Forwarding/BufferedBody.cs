using System.Buffers;
using Ferry.Errors;

namespace Ferry.Forwarding;

// A request body read whole before the first attempt, so that a replay can send it again. Pooled; disposed when the
// request ends.
internal sealed class BufferedBody : IDisposable
{
    private byte[]? _buffer;

    private BufferedBody(byte[] buffer, int length)
    {
        _buffer = buffer;
        Length = length;
    }

    public int Length { get; }

    public ReadOnlyMemory<byte> Memory => _buffer.AsMemory(0, Length);

    // `length` is the announced Content-Length; which bodies are read whole is ReplayPolicy.Decide's call.
    public static async ValueTask<BufferedBody> ReadAsync(HttpContext context, int length)
    {
        var buffer = ArrayPool<byte>.Shared.Rent(length);
        var filled = 0;
        try
        {
            var reader = context.Request.BodyReader;
            while (true)
            {
                var read = await reader.ReadAsync(context.RequestAborted);
                foreach (var segment in read.Buffer)
                {
                    // Kestrel enforces Content-Length, so the body cannot exceed it.
                    segment.Span.CopyTo(buffer.AsSpan(filled));
                    filled += segment.Length;
                }
                reader.AdvanceTo(read.Buffer.End);
                if (read.IsCompleted)
                {
                    return new BufferedBody(buffer, filled);
                }
            }
        }
        catch (Exception ex)
        {
            ArrayPool<byte>.Shared.Return(buffer);
            throw ex is BadHttpRequestException
                ? new ProxyException(ProxyError.ClientRequestBodyError, $"the client's request body could not be read: {ex.Message}", ex)
                : new ProxyException(ProxyError.ClientAborted, "client went away while sending the request body", ex);
        }
    }

    public void Dispose()
    {
        if (_buffer is { } buffer)
        {
            _buffer = null;
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }
}
