using System.Buffers;
using System.IO.Pipelines;
using Ferry.Upstream;
using Microsoft.AspNetCore.Http.Features;

namespace Ferry.Forwarding;

// What an exchange becomes after a 101 for an upgrade the route allows (Routes:<id>:Upgrades, a WebSocket by default).
// Nothing in it is routed or parsed, and its connection is never reused afterwards.
internal static class Tunnel
{
    // Both directions are copied until either side ends or both are silent for Timeouts:TunnelIdle; the other is
    // then shut down so both finish. The access log line is written when the tunnel ends: bytes each way, the
    // duration and how it ended. `idle` is infinite when the configuration sets no limit.
    public static async Task RunAsync(HttpContext context, UpstreamConnection connection, RequestRecord record, TimeSpan idle, TimeProvider time)
    {
        var upgrade = context.Features.Get<IHttpUpgradeFeature>()!;
        var client = await upgrade.UpgradeAsync();
        using var silence = new CancellationTokenSource(idle, time);
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(silence.Token, context.RequestAborted);
        await using (client)
        {
            var toClient = PumpToClientAsync(connection.Input, client, record, silence, idle, stop.Token);
            var toUpstream = PumpToUpstreamAsync(client, connection, record, silence, idle, stop.Token);
            var first = await Task.WhenAny(toClient, toUpstream);
            record.TunnelEnd = silence.IsCancellationRequested ? TunnelEnds.IdleTimeout
                : first == toClient ? (first.IsCompletedSuccessfully ? TunnelEnds.DestinationClosed : TunnelEnds.DestinationReset)
                : first.IsCompletedSuccessfully && !context.RequestAborted.IsCancellationRequested ? TunnelEnds.ClientClosed
                : TunnelEnds.ClientReset;
            if (first == toClient || !first.IsCompletedSuccessfully)
            {
                await client.DisposeAsync();
                stop.Cancel();
            }
            try
            {
                await Task.WhenAll(toClient, toUpstream);
            }
            catch (Exception ex) when (ex is IOException or OperationCanceledException or ObjectDisposedException)
            {
                // One side closed abruptly or the tunnel fell silent; it is over either way.
            }
        }
    }

    private static async Task PumpToClientAsync(PipeReader input, Stream client, RequestRecord record, CancellationTokenSource silence, TimeSpan idle, CancellationToken ct)
    {
        while (true)
        {
            var read = await input.ReadAsync(ct);
            foreach (var segment in read.Buffer)
            {
                await client.WriteAsync(segment, ct);
            }
            await client.FlushAsync(ct);
            record.BytesOut += read.Buffer.Length;
            input.AdvanceTo(read.Buffer.End);
            if (read.IsCompleted)
            {
                return;
            }
            silence.CancelAfter(idle);
        }
    }

    private static async Task PumpToUpstreamAsync(Stream client, UpstreamConnection connection, RequestRecord record, CancellationTokenSource silence, TimeSpan idle, CancellationToken ct)
    {
        var buffer = ArrayPool<byte>.Shared.Rent(16 * 1024);
        try
        {
            int n;
            while ((n = await client.ReadAsync(buffer, ct)) > 0)
            {
                await connection.Output.WriteAsync(buffer.AsMemory(0, n), ct);
                record.BytesIn += n;
                silence.CancelAfter(idle);
            }
            await connection.ShutdownSendAsync();
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }
}
