using Ferry.FunctionalTests.Support;
using Ferry.Upstream;
using Xunit.Abstractions;
using static Ferry.FunctionalTests.RealServers.RealServerRun;

namespace Ferry.FunctionalTests.RealServers;

// The no-502 promise behind the real servers whose keep-alive habits cause the classic upstream 502s, with Ferry's
// default settings: synchronized waves of GETs and POSTs, pausing about each server's idle timeout, so that requests
// meet connections the server is closing. Each server records every request id it processed: a POST must be processed
// exactly once, whatever Ferry did behind the scenes. One class per server, so that their waits run in parallel.
public sealed class GunicornTests(ITestOutputHelper output)
{
    [RealServerFact(RealServer.Gunicorn)]
    public async Task GthreadKeepAlive2_WavesAtItsIdleTimeout_No5xx_NoDrop_EachPostOnce()
    {
        await using var gunicorn = await RealServer.StartGunicornAsync();

        var run = await RunAsync(output, "gunicorn", [gunicorn], waves: 12, _ => (8, 8), Around(TimeSpan.FromSeconds(2), 1));

        run.AssertNoFailure();
        run.AssertConnectionsWereClosedAndReplaced();
    }
}

public sealed class TomcatDefaultsTests(ITestOutputHelper output)
{
    [RealServerFact(RealServer.Tomcat)]
    public async Task RequestLimit100_AndIdleTimeout20s_No5xx_NoDrop_EachPostOnce()
    {
        await using var tomcat = await RealServer.StartTomcatAsync("tomcat-defaults", "");

        // Short pauses until every connection has passed Tomcat's 100-request limit, then two pauses around its 20 s
        // keep-alive timeout (connectionTimeout in the stock server.xml).
        const int Fast = 150;
        var idle = Around(TimeSpan.FromSeconds(20), 2);
        var run = await RunAsync(output, "tomcat-defaults", [tomcat], waves: Fast + 3, _ => (4, 4),
            wave => wave < Fast ? TimeSpan.FromMilliseconds(10) : idle(wave));

        run.AssertNoFailure();
        Assert.True(run.Pools.Sum(p => p.Retired(RetireReason.AnnouncedLimit)) > 0, "Tomcat never announced its 100-request limit");
    }
}

public sealed class TomcatKeepAliveTimeoutTests(ITestOutputHelper output)
{
    [RealServerFact(RealServer.Tomcat)]
    public async Task KeepAliveTimeout2000_WavesAtItsIdleTimeout_No5xx_NoDrop_EachPostOnce()
    {
        await using var tomcat = await RealServer.StartTomcatAsync("tomcat-keepalive2s", "keepAliveTimeout=\"2000\"");

        var run = await RunAsync(output, "tomcat-keepalive2s", [tomcat], waves: 10, _ => (8, 8), Around(TimeSpan.FromSeconds(2), 3));

        run.AssertNoFailure();
        run.AssertConnectionsWereClosedAndReplaced();
    }
}

public sealed class NodeTests(ITestOutputHelper output)
{
    [RealServerFact(RealServer.Node)]
    public async Task HttpServerDefaults_WavesAtItsAnnouncedTimeout_No5xx_NoDrop_EachPostOnce()
    {
        await using var node = await RealServer.StartNodeAsync();

        var run = await RunAsync(output, "node", [node], waves: 6, _ => (8, 8), Around(TimeSpan.FromSeconds(5), 4));

        run.AssertNoFailure();
        run.AssertConnectionsWereClosedAndReplaced();
    }
}

public sealed class TornadoTests(ITestOutputHelper output)
{
    [RealServerFact(RealServer.Tornado)]
    public async Task Backlog8_BlockingHandler_TwoProcesses_Bursts_EveryRequestAnswered_NeverAllDown()
    {
        await using var a = await RealServer.StartTornadoAsync("tornado-a");
        await using var b = await RealServer.StartTornadoAsync("tornado-b");

        // Growing bursts: each needs more connections than the previous one left in the pool, so every burst opens new
        // connections faster than a blocked event loop accepts them, and the backlog of 8 overflows.
        int[] sizes = [12, 24, 48, 96, 128];
        var run = await RunAsync(output, "tornado", [a, b], waves: sizes.Length, wave => (sizes[wave], sizes[wave]), _ => TimeSpan.FromSeconds(1));

        foreach (var counts in run.Methods)
        {
            Assert.True(counts.DroppedCount == 0, $"{counts.Method}: {counts.DroppedCount} requests without an answer ({counts.TimedOut} client timeouts)\n{run.Details}");
            Assert.True(counts.Unavailable == 0, $"{counts.Method}: {counts.Unavailable} answered 503 destination_unavailable (every destination down)\n{run.Details}");
        }
        Assert.True(run.PostsProcessedTwice.Count == 0, $"POSTs processed twice: {string.Join(", ", run.PostsProcessedTwice)}\n{run.Details}");
    }

    // The backlog incident itself, with Ferry's defaults (the adaptive limit on): 200 clients with 100 ms of think time
    // against two processes that serve about 100 requests/s together. The requests wait in Ferry's queue, not in
    // the listen backlogs: every one is answered 200 and processed once, within the client's 15 s.
    [RealServerFact(RealServer.Tornado)]
    public async Task BacklogIncident_ThinkingClients_AdaptiveLimitByDefault_EveryRequestAnswered()
    {
        const int clients = 200;
        const int requests = 3;
        await using var a = await RealServer.StartTornadoAsync("tornado-a");
        await using var b = await RealServer.StartTornadoAsync("tornado-b");
        var seenBefore = a.Seen().Values.Sum() + b.Seen().Values.Sum();
        var settings = ProxyHarness.Settings(("a", a.Uri), ("b", b.Uri));
        await using var proxy = await ProxyHarness.StartAsync(settings, null);
        Assert.NotNull(proxy.Destination("a").Pool.Adaptive);

        var watch = System.Diagnostics.Stopwatch.StartNew();
        var tasks = Enumerable.Range(0, clients).Select(async _ =>
        {
            var results = new List<(int Status, TimeSpan Latency)>();
            for (var i = 0; i < requests; i++)
            {
                var started = System.Diagnostics.Stopwatch.StartNew();
                using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(15));
                try
                {
                    using var response = await proxy.Client.GetAsync("/", timeout.Token);
                    await response.Content.ReadAsByteArrayAsync(timeout.Token);
                    results.Add(((int)response.StatusCode, started.Elapsed));
                }
                catch (OperationCanceledException) when (timeout.IsCancellationRequested)
                {
                    results.Add((0, started.Elapsed));
                }
                await Task.Delay(100);
            }
            return results;
        }).ToArray();
        var all = (await Task.WhenAll(tasks).WaitAsync(TimeSpan.FromSeconds(120))).SelectMany(r => r).ToArray();
        var elapsed = watch.Elapsed;

        var pools = new[] { proxy.Destination("a").Pool, proxy.Destination("b").Pool };
        var latencies = all.Select(r => r.Latency.TotalMilliseconds).Order().ToArray();
        var seen = await WaitForSeenAsync(a, b, seenBefore + all.Length);
        output.WriteLine($"{all.Length} requests in {elapsed.TotalSeconds:0.0} s: {string.Join(", ", all.GroupBy(r => r.Status).Select(g => $"{(g.Key == 0 ? "client timeout" : g.Key)} × {g.Count()}"))}; "
            + $"p50 {latencies[latencies.Length / 2]:0} ms, p99 {latencies[latencies.Length * 99 / 100]:0} ms; "
            + $"{pools.Sum(p => p.Opened)} connections opened, {pools.Sum(p => p.SlowConnects)} connects >= 1 s, "
            + $"limits at the end {pools[0].CurrentLimit}/{pools[1].CurrentLimit}; processed {seen - seenBefore}");
        Assert.All(all, r => Assert.Equal(200, r.Status));
        Assert.Equal(all.Length, seen - seenBefore);
    }

    // The servers write their record after answering: wait (bounded) for it to catch up.
    private static async Task<int> WaitForSeenAsync(RealServer a, RealServer b, int expected)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(5);
        int seen;
        while ((seen = a.Seen().Values.Sum() + b.Seen().Values.Sum()) < expected && DateTime.UtcNow < deadline)
        {
            await Task.Delay(50);
        }
        return seen;
    }
}
