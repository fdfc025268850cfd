using System.Net;
using System.Net.Sockets;
using Ferry.Http1;
using Ferry.Probe;

namespace Ferry.Incidents;

/// <summary>The shape of the load: how many keep-alive connections, how many requests each sends per burst, and
/// the pause between bursts (jittered by ±<see cref="Jitter"/> of it).</summary>
internal sealed record LoadShape(int Connections, int BurstRequests, TimeSpan Pause, double Jitter);

/// <summary>What the clients saw.</summary>
internal sealed record LoadResult(int Requests, int Ok, int ServerErrors, int OtherStatus, int Errors, TimeSpan Elapsed);

/// <summary>
/// A bounded load on loopback: keep-alive connections, each sending bursts of requests separated by jittered pauses,
/// until the request budget or the duration is used up. A connection that fails is counted as an error and replaced.
/// </summary>
internal sealed class LoadGenerator(IPEndPoint target, LoadShape shape, int maxRequests, TimeSpan duration, TimeProvider time, int seed = 1)
{
    /// <summary>A response slower than this counts as an error: nginx's proxy_connect_timeout (60 s) would otherwise
    /// hold a run far past its duration.</summary>
    public static readonly TimeSpan ResponseTimeout = TimeSpan.FromSeconds(15);

    private int _started;       // requests begun, bounded by maxRequests
    private int _ok;            // 2xx
    private int _serverErrors;  // 5xx
    private int _otherStatus;   // 1xx (final), 3xx, 4xx
    private int _errors;        // no complete response: connect failure, reset, close, timeout, malformed

    public async Task<LoadResult> RunAsync(CancellationToken ct)
    {
        long started = time.GetTimestamp();
        using var end = new CancellationTokenSource(duration, time);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(ct, end.Token);
        await Task.WhenAll(Enumerable.Range(0, shape.Connections).Select(i => WorkerAsync(new Random(seed + i), linked.Token)));
        ct.ThrowIfCancellationRequested();
        return new LoadResult(_ok + _serverErrors + _otherStatus + _errors, _ok, _serverErrors, _otherStatus, _errors, time.GetElapsedTime(started));
    }

    private async Task WorkerAsync(Random random, CancellationToken stop)
    {
        ProbeConnection? connection = null;
        try
        {
            while (!stop.IsCancellationRequested)
            {
                for (int i = 0; i < shape.BurstRequests; i++)
                {
                    if (stop.IsCancellationRequested || Interlocked.Increment(ref _started) > maxRequests)
                    {
                        return;
                    }
                    connection = await SendOneAsync(connection);
                }
                var pause = shape.Pause * (1 - shape.Jitter + (2 * shape.Jitter * random.NextDouble()));
                try
                {
                    await Task.Delay(pause, time, stop);
                }
                catch (OperationCanceledException)
                {
                    return;
                }
            }
        }
        finally
        {
            connection?.Dispose();
        }
    }

    // A request that has begun is always finished (or timed out), even when the duration ends meanwhile, so that
    // every request sent is counted once, and counted the same way as the upstream counts it.
    private async Task<ProbeConnection?> SendOneAsync(ProbeConnection? connection)
    {
        using var timeout = new CancellationTokenSource(ResponseTimeout, time);
        try
        {
            connection ??= await ProbeConnection.ConnectAsync(target, time, timeout.Token);
            await connection.SendAsync("GET", "/", target.ToString(), 1, timeout.Token);
            var response = await connection.ReadResponseAsync(headRequest: false, timeout.Token);
            if (response is null)
            {
                Interlocked.Increment(ref _errors);
                connection.Dispose();
                return null;
            }
            if (response.StatusCode is >= 200 and < 300)
            {
                Interlocked.Increment(ref _ok);
            }
            else if (response.StatusCode >= 500)
            {
                Interlocked.Increment(ref _serverErrors);
            }
            else
            {
                Interlocked.Increment(ref _otherStatus);
            }
            if (!response.KeepAlivePermitted)
            {
                connection.Dispose();
                return null;
            }
            return connection;
        }
        catch (Exception e) when (e is SocketException or IOException or Http1Exception or OperationCanceledException)
        {
            Interlocked.Increment(ref _errors);
            connection?.Dispose();
            return null;
        }
    }
}
