using System.Net;
using Ferry.FunctionalTests.Support;
using Ferry.Lab;
using static Ferry.FunctionalTests.Support.ProxyAssert;

namespace Ferry.FunctionalTests.Health;

// Passive health counts only the destination's own failures; active checks eject and re-admit with rise/fall; panic,
// retry to the next destination and the connection limit's queue behave as configured.
public sealed class HealthTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task KeepAliveRaces_DoNotCountAgainstHealth()
    {
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions
        {
            Name = "racy",
            Script = LabScripts.OnReusedConnection(LabScripts.ResetBeforeHead),
        });
        // One failure would be enough to eject it (nginx's max_fails=1, Ferry's default).
        await using var proxy = await ProxyHarness.StartAsync(upstream);
        var destination = proxy.Destination("racy");

        for (var i = 0; i < 5; i++)
        {
            using var get = await proxy.Client.GetAsync("/").WaitAsync(Bound);
            Assert.Equal(HttpStatusCode.OK, get.StatusCode);
        }
        // A POST cannot be replayed: it fails with 502, and still says nothing about the destination's health.
        using var post = await proxy.Client.PostAsync("/echo", new StringContent("x")).WaitAsync(Bound);
        await AssertFailure(post, HttpStatusCode.BadGateway, "connection_terminated");

        Assert.True(destination.Replays >= 4);
        Assert.True(destination.IsAvailable, destination.HealthReason);
    }

    [Fact]
    public async Task ClientAborts_DoNotCountAgainstHealth()
    {
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions { Name = "slow", Script = LabScripts.Stall });
        await using var proxy = await ProxyHarness.StartAsync(upstream);

        var destination = proxy.Destination("slow");

        using var cts = new CancellationTokenSource();
        var request = proxy.Client.GetAsync("/", cts.Token);
        await Wait.Until(() => upstream.RequestsReceived == 1);
        await cts.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => request).WaitAsync(Bound);
        // Ferry is done with the attempt once it no longer counts it in flight.
        await Wait.Until(() => destination.InFlight == 0);

        Assert.True(destination.IsAvailable, destination.HealthReason);
    }

    [Fact]
    public async Task FailureBeforeTheHead_MovesOnToTheNextDestination_ForReplayableRequestsOnly()
    {
        await using var bad = LabUpstream.Start(new LabUpstreamOptions { Name = "bad", Script = LabScripts.CloseBeforeHead });
        await using var good = LabUpstream.Start(new LabUpstreamOptions { Name = "good" });
        var settings = ProxyHarness.Settings(("bad", bad.Uri), ("good", good.Uri));
        // Keep "bad" in rotation, so that every other request is first sent to it.
        settings["Clusters:c:HealthCheck:Passive:MaxFailures"] = "1000";
        await using var proxy = await ProxyHarness.StartAsync(settings, null, bad, good);

        for (var i = 0; i < 4; i++)
        {
            using var get = await proxy.Client.GetAsync("/").WaitAsync(Bound);
            Assert.Equal(HttpStatusCode.OK, get.StatusCode);
            Assert.Equal("good", get.Headers.GetValues("X-Upstream").Single());
        }
        Assert.True(bad.RequestsReceived >= 2);

        // The POST that reaches "bad" may have been processed there: it is not sent anywhere else.
        var statuses = new List<HttpStatusCode>();
        for (var i = 0; i < 2; i++)
        {
            using var post = await proxy.Client.PostAsync("/echo", new StringContent("x")).WaitAsync(Bound);
            statuses.Add(post.StatusCode);
        }
        Assert.Contains(HttpStatusCode.BadGateway, statuses);
        Assert.Contains(HttpStatusCode.OK, statuses);
    }

    [Fact]
    public async Task PanicDisabled_AllDown_Is503DestinationUnavailable()
    {
        using var dead = Loopback.RefusingPort();
        var settings = ProxyHarness.Settings(("dead", dead.Uri));
        settings["Clusters:c:Panic:Enabled"] = "false";
        await using var proxy = await ProxyHarness.StartAsync(settings, null);

        using var first = await proxy.Client.GetAsync("/").WaitAsync(Bound);
        await AssertFailure(first, HttpStatusCode.BadGateway, "connection_refused");
        using var second = await proxy.Client.GetAsync("/").WaitAsync(Bound);
        await AssertFailure(second, HttpStatusCode.ServiceUnavailable, "destination_unavailable");
        Assert.Contains(proxy.Logs.Lines, l => l.Contains("panic", StringComparison.Ordinal));
    }

    [Fact]
    public async Task PanicEnabled_AllDown_StillTriesThem()
    {
        using var dead = Loopback.RefusingPort();
        var settings = ProxyHarness.Settings(("dead", dead.Uri));
        await using var proxy = await ProxyHarness.StartAsync(settings, null);

        using var first = await proxy.Client.GetAsync("/").WaitAsync(Bound);
        using var second = await proxy.Client.GetAsync("/").WaitAsync(Bound);

        await AssertFailure(second, HttpStatusCode.BadGateway, "connection_refused");
        Assert.True(proxy.Server.State.Current.Clusters["c"].Panicking);
        Assert.Contains(proxy.Logs.Lines, l => l.Contains("routing to them anyway", StringComparison.Ordinal));
    }

    [Fact]
    public async Task ConnectionLimit_QueueFullOrTimedOut_Is503ConnectionLimitReached()
    {
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions { Name = "slow", Script = LabScripts.Stall });
        var settings = ProxyHarness.Settings(("slow", upstream.Uri));
        settings["Clusters:c:MaxConnections"] = "1";
        // MaxConnections alone: its queue refuses by length (the adaptive limit's sheds on its wait, tested below).
        settings["Clusters:c:AdaptiveLimit:Enabled"] = "false";
        settings["Clusters:c:Queue:Size"] = "1";
        settings["Clusters:c:Queue:Timeout"] = "300ms";
        await using var proxy = await ProxyHarness.StartAsync(settings, null, upstream);
        var pool = proxy.Destination("slow").Pool;
        using var cts = new CancellationTokenSource();

        var holding = proxy.Client.GetAsync("/", cts.Token);
        await Wait.Until(() => upstream.RequestsReceived == 1);
        var queued = proxy.Client.GetAsync("/");
        await Wait.Until(() => pool.Queued == 1);

        using var rejected = await proxy.Client.GetAsync("/").WaitAsync(Bound);
        await AssertFailure(rejected, HttpStatusCode.ServiceUnavailable, "connection_limit_reached");
        using var timedOut = await queued.WaitAsync(Bound);
        await AssertFailure(timedOut, HttpStatusCode.ServiceUnavailable, "connection_limit_reached");
        Assert.Contains("waited 300 ms", ProxyStatus(timedOut));

        await cts.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => holding).WaitAsync(Bound);
        Assert.True(proxy.Destination("slow").IsAvailable);
        Assert.Equal(1, upstream.ConnectionsAccepted);
    }
}
