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
}
