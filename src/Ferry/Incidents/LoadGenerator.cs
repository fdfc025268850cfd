using System.Net;
using System.Net.Sockets;
using System.Text;
using Ferry.Http1;
using Ferry.Probe;

namespace Ferry.Incidents;

/// <summary>The shape of the load: how many keep-alive connections, how many requests each sends per burst, the
/// pause between bursts (jittered by ±<see cref="Jitter"/> of it), and the share of requests that are POSTs with a
/// small form body (the others are GETs). With <see cref="Waves"/>, bursts follow a common clock instead: burst k of
/// every connection starts at k × Pause from the start, offset by the jitter, so the connections' bursts stay together
/// rather than drifting apart, and so do the proxy's upstream connections that serve them.</summary>
internal sealed record LoadShape(int Connections, int BurstRequests, TimeSpan Pause, double Jitter, double PostShare = 0, bool Waves = false);

/// <summary>What the clients saw for one method.</summary>
internal sealed record MethodResult(int Requests, int Ok, int ServerErrors, int OtherStatus, int Errors);

/// <summary>What the clients saw, in all and per method.</summary>
internal sealed record LoadResult(MethodResult Get, MethodResult Post, TimeSpan Elapsed)
{
    /// <summary>Response times of the complete responses (any status), in milliseconds; null without any.</summary>
    public double? P50Ms { get; init; }
    public double? P99Ms { get; init; }

    public int Requests => Get.Requests + Post.Requests;
    public int Ok => Get.Ok + Post.Ok;
    public int ServerErrors => Get.ServerErrors + Post.ServerErrors;
    public int OtherStatus => Get.OtherStatus + Post.OtherStatus;
    public int Errors => Get.Errors + Post.Errors;
}

/// <summary>
/// A bounded load on loopback: keep-alive connections, each sending bursts of requests separated by jittered pauses,
/// until the request budget or the duration is used up. A connection that fails is counted as an error and replaced.
/// GETs ask for <c>/</c>, POSTs send <see cref="PostBody"/> to <c>/sink</c>, so the upstream's per-route counts tell
/// how many of each it processed.
/// </summary>
internal sealed class LoadGenerator(IPEndPoint target, LoadShape shape, int maxRequests, TimeSpan duration, TimeProvider time, int seed = 1)
{
    /// <summary>A response slower than this counts as an error: nginx's proxy_connect_timeout (60 s) would otherwise
    /// hold a run far past its duration.</summary>
    public static readonly TimeSpan ResponseTimeout = TimeSpan.FromSeconds(15);

    public const string GetPath = "/";
    public const string PostPath = "/sink";

    /// <summary>A small form, well under any proxy's replay buffer: whether it is replayed is the proxy's policy, not its size.</summary>
    public static readonly ReadOnlyMemory<byte> PostBody = Encoding.ASCII.GetBytes("order=1042&quantity=3&note=keep-alive+race");

    private int _started;                         // requests begun, bounded by maxRequests
    private readonly Counts _get = new();
    private readonly Counts _post = new();
    private readonly List<double> _latencies = []; // ms, of complete responses; guarded by itself

    public async Task<LoadResult> RunAsync(CancellationToken ct)
    {
        long started = time.GetTimestamp();
        using var end = new CancellationTokenSource(duration, time);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(ct, end.Token);
        await Task.WhenAll(Enumerable.Range(0, shape.Connections).Select(i => WorkerAsync(new Random(seed + i), started, linked.Token)));
        ct.ThrowIfCancellationRequested();
        double[] sorted;
        lock (_latencies)
        {
            sorted = [.. _latencies.Order()];
        }
        return new LoadResult(_get.Result(), _post.Result(), time.GetElapsedTime(started))
        {
            P50Ms = sorted.Length == 0 ? null : sorted[sorted.Length / 2],
            P99Ms = sorted.Length == 0 ? null : sorted[sorted.Length * 99 / 100],
        };
    }

    private async Task WorkerAsync(Random random, long started, CancellationToken stop)
    {
        ProbeConnection? connection = null;
        try
        {
            for (int burst = 1; !stop.IsCancellationRequested; burst++)
            {
                for (int i = 0; i < shape.BurstRequests; i++)
                {
                    if (stop.IsCancellationRequested || Interlocked.Increment(ref _started) > maxRequests)
                    {
                        return;
                    }
                    connection = await SendOneAsync(connection, post: random.NextDouble() < shape.PostShare);
                }
                double jitter = shape.Jitter * ((2 * random.NextDouble()) - 1);
                var pause = shape.Waves
                    ? (shape.Pause * (burst + jitter)) - time.GetElapsedTime(started)
                    : shape.Pause * (1 + jitter);
                try
                {
                    if (pause > TimeSpan.Zero)
                    {
                        await Task.Delay(pause, time, stop);
                    }
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
    private async Task<ProbeConnection?> SendOneAsync(ProbeConnection? connection, bool post)
    {
        var counts = post ? _post : _get;
        Interlocked.Increment(ref counts.Requests);
        using var timeout = new CancellationTokenSource(ResponseTimeout, time);
        var begun = time.GetTimestamp();
        try
        {
            connection ??= await ProbeConnection.ConnectAsync(target, time, timeout.Token);
            if (post)
            {
                await connection.SendAsync("POST", PostPath, target.ToString(), minorVersion: 1, timeout.Token, PostBody);
            }
            else
            {
                await connection.SendAsync("GET", GetPath, target.ToString(), minorVersion: 1, timeout.Token);
            }
            if (await connection.ReadResponseAsync(headRequest: false, timeout.Token) is not { StatusCode: var status, KeepAlivePermitted: var keepAlive })
            {
                Interlocked.Increment(ref counts.Errors);
                connection.Dispose();
                return null;
            }
            lock (_latencies)
            {
                _latencies.Add(time.GetElapsedTime(begun).TotalMilliseconds);
            }
            if (status is >= 200 and < 300)
            {
                Interlocked.Increment(ref counts.Ok);
            }
            else if (status >= 500)
            {
                Interlocked.Increment(ref counts.ServerErrors);
            }
            else
            {
                Interlocked.Increment(ref counts.OtherStatus);
            }
            if (!keepAlive)
            {
                connection.Dispose();
                return null;
            }
            return connection;
        }
        catch (Exception e) when (e is SocketException or IOException or Http1Exception or OperationCanceledException)
        {
            Interlocked.Increment(ref counts.Errors);
            connection?.Dispose();
            return null;
        }
    }

    private sealed class Counts
    {
        public int Requests;      // begun
        public int Ok;            // 2xx
        public int ServerErrors;  // 5xx
        public int OtherStatus;   // 1xx (final), 3xx, 4xx
        public int Errors;        // no complete response: connect failure, reset, close, timeout, malformed

        public MethodResult Result() => new(Volatile.Read(ref Requests), Volatile.Read(ref Ok), Volatile.Read(ref ServerErrors),
            Volatile.Read(ref OtherStatus), Volatile.Read(ref Errors));
    }
}
