using System.Buffers;
using System.IO.Pipelines;
using Ferry.Errors;
using Ferry.Http1;
using Ferry.Loops;
using Ferry.Upstream;

namespace Ferry.Forwarding;

// Response bodies of one exchange (step 6 of the request path): relayed to the client as their framing delimits them,
// or drained when the forwarder retries elsewhere. `inactivity` is Timeouts:BodyInactivity, infinite when the
// configuration sets no limit. Each method says whether the connection is left clean enough to be reused.
internal static class BodyRelay
{
    // Largest body of a retried response read to its end to keep the connection: error pages are a few hundred bytes
    // to a few KiB, and reading them from an open connection is cheaper than a new connection's handshake.
    private const long MaxRetryDrain = 16 * 1024;

    // Reads a short, framed body of a response the forwarder retries elsewhere; null when the connection may be reused.
    public static async Task<RetireReason?> DrainForRetryAsync(UpstreamConnection connection, BodyFraming framing, TimeSpan inactivity, CancellationToken ct)
    {
        if (!framing.KeepAlivePermitted || framing.Kind is not (BodyKind.None or BodyKind.ContentLength)
            || framing.ContentLength > MaxRetryDrain)
        {
            return RetireReason.NotReusable;
        }
        var input = connection.Input;
        var remaining = framing.Kind == BodyKind.None ? 0 : framing.ContentLength;
        try
        {
            connection.SetDeadline(inactivity);
            while (remaining > 0)
            {
                var read = await input.ReadAsync(ct);
                var take = Math.Min(read.Buffer.Length, remaining);
                input.AdvanceTo(read.Buffer.GetPosition(take));
                remaining -= take;
                if (remaining > 0 && read.IsCompleted)
                {
                    return RetireReason.Error;
                }
            }
            return HasBufferedInput(input) ? RetireReason.NotReusable : null;
        }
        catch (Exception ex) when (ex is IOException or OperationCanceledException)
        {
            // The retry does not depend on this connection; a failed drain only costs it.
            return RetireReason.Error;
        }
    }

    // Returns true when the connection's input holds nothing beyond this response (a reuse precondition).
    public static async Task<bool> CopyAsync(UpstreamConnection connection, BodyFraming framing, HttpContext context, RequestRecord record,
        TimeSpan inactivity, CancellationToken ct)
    {
        var input = connection.Input;
        var output = context.Response.BodyWriter;
        var loop = connection.Loop;
        var unsent = 0L;
        switch (framing.Kind)
        {
            case BodyKind.None:
                return !HasBufferedInput(input);
            case BodyKind.ContentLength:
            {
                var remaining = framing.ContentLength;
                var clean = true;
                while (remaining > 0)
                {
                    connection.SetDeadline(inactivity);
                    var read = await input.ReadAsync(ct);
                    var buffer = read.Buffer;
                    var take = buffer.Length <= remaining ? buffer : buffer.Slice(0, remaining);
                    Write(output, take);
                    record.BytesOut += take.Length;
                    remaining -= take.Length;
                    clean = take.Length == buffer.Length;
                    input.AdvanceTo(take.End);
                    if (remaining > 0 && read.IsCompleted)
                    {
                        throw new ProxyException(ProxyError.ResponseIncomplete,
                            $"the destination closed the connection {remaining} bytes before the end of the body");
                    }
                    ClientFlushed(await output.FlushAsync(context.RequestAborted));
                    await LetTheClientSend(loop, ref unsent, take.Length);
                }
                return clean;
            }
            case BodyKind.Chunked:
            {
                var decoder = connection.Chunked;
                decoder.Reset();
                while (true)
                {
                    connection.SetDeadline(inactivity);
                    var read = await input.ReadAsync(ct);
                    var (complete, consumed, leftover, written) = DecodeChunks(decoder, read.Buffer, output);
                    record.BytesOut += written;
                    input.AdvanceTo(consumed, complete ? consumed : read.Buffer.End);
                    if (complete)
                    {
                        if (decoder.Trailers.Count > 0 && context.Response.SupportsTrailers())
                        {
                            var tokens = connection.Head.ConnectionTokens;
                            foreach (var (name, value) in decoder.Trailers)
                            {
                                if (HopByHop.IsAllowedTrailer(name, tokens))
                                {
                                    context.Response.AppendTrailer(name, value);
                                }
                            }
                        }
                        ClientFlushed(await output.FlushAsync(context.RequestAborted));
                        return !leftover;
                    }
                    if (read.IsCompleted)
                    {
                        throw new ProxyException(ProxyError.ResponseIncomplete, "the destination closed the connection before the last chunk");
                    }
                    if (written > 0)
                    {
                        // Only content is worth sending the head early for: while nothing but chunk framing or trailers
                        // came, a failure (a trailer section over the limit) can still be answered with a status.
                        ClientFlushed(await output.FlushAsync(context.RequestAborted));
                        await LetTheClientSend(loop, ref unsent, written);
                    }
                }
            }
            default: // CloseDelimited: the body ends when the destination closes.
                while (true)
                {
                    connection.SetDeadline(inactivity);
                    var read = await input.ReadAsync(ct);
                    var length = read.Buffer.Length;
                    Write(output, read.Buffer);
                    record.BytesOut += length;
                    input.AdvanceTo(read.Buffer.End);
                    ClientFlushed(await output.FlushAsync(context.RequestAborted));
                    if (read.IsCompleted)
                    {
                        return false;
                    }
                    await LetTheClientSend(loop, ref unsent, length);
                }
        }
    }

    // On the loops, a relay yields after every LoopPipeOptions.WriteBeforeYield bytes written: the client's send runs
    // before it writes more (see there).
    private static EventLoop.LoopYield LetTheClientSend(EventLoop? loop, ref long unsent, long written)
    {
        unsent += written;
        if (loop is null || unsent < LoopPipeOptions.WriteBeforeYield)
        {
            return default;
        }
        unsent = 0;
        return loop.Yield();
    }

    private static (bool Complete, SequencePosition Consumed, bool Leftover, long Written) DecodeChunks(ChunkedDecoder decoder, in ReadOnlySequence<byte> buffer, PipeWriter output)
    {
        var reader = new SequenceReader<byte>(buffer);
        long written = 0;
        while (true)
        {
            switch (decoder.Read(ref reader, out var data))
            {
                case ChunkedStatus.Data:
                    Write(output, data);
                    written += data.Length;
                    break;
                case ChunkedStatus.Complete:
                    return (true, reader.Position, !reader.End, written);
                default:
                    return (false, reader.Position, false, written);
            }
        }
    }

    private static void Write(PipeWriter output, in ReadOnlySequence<byte> data)
    {
        foreach (var segment in data)
        {
            output.Write(segment.Span);
        }
    }

    // Awaited in the copy loops themselves: an async helper cost an allocation per flush that did not complete at once,
    // which a streamed body has for most of its reads.
    private static void ClientFlushed(FlushResult result)
    {
        if (result.IsCanceled || result.IsCompleted)
        {
            throw new ProxyException(ProxyError.ClientAborted, "client went away while streaming the response body");
        }
    }

    private static bool HasBufferedInput(PipeReader input) =>
        input.TryRead(out var read) && ConsumeNothing(input, read);

    private static bool ConsumeNothing(PipeReader input, ReadResult read)
    {
        var any = !read.Buffer.IsEmpty;
        input.AdvanceTo(read.Buffer.Start);
        return any || read.IsCompleted;
    }
}
