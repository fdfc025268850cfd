using System.Net;
using Ferry.FunctionalTests.Support;
using Ferry.Lab;
using Ferry.Tests.Support;

namespace Ferry.FunctionalTests.Health;

// Active checks on their own connections, on a virtual clock: a destination failing its checks leaves the rotation
// after Fall of them, comes back after Rise, and then slow-starts.
public sealed class ActiveHealthCheckTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task FailingChecks_Eject_PassingChecks_Readmit()
    {
        var time = new ManualTimeProvider();
        var healthy = true;
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions
        {
            Name = "a",
            Script = async (exchange, ct) =>
            {
                if (exchange.Path == "/health")
                {
                    await exchange.WriteHeadAsync(Volatile.Read(ref healthy) ? 200 : 503, null, 0, ct);
                    await exchange.CompleteResponseAsync(ct);
                    return;
                }
                await LabRoutes.HandleAsync(exchange, ct);
            },
        });
        await using var other = LabUpstream.Start(new LabUpstreamOptions
        {
            Name = "b",
            Script = (exchange, ct) => exchange.Path == "/health" ? Ok(exchange, ct) : LabRoutes.HandleAsync(exchange, ct),
        });
        var settings = ProxyHarness.Settings(("a", upstream.Uri), ("b", other.Uri));
        settings["Clusters:c:HealthCheck:Active:Enabled"] = "true";
        settings["Clusters:c:HealthCheck:Active:Interval"] = "5s";
        settings["Clusters:c:HealthCheck:Active:Path"] = "/health";
        settings["Clusters:c:HealthCheck:Active:Rise"] = "2";
        settings["Clusters:c:HealthCheck:Active:Fall"] = "2";
        settings["Clusters:c:SlowStart"] = "60s";
        await using var proxy = await ProxyHarness.StartAsync(settings, time, upstream, other);
        var a = proxy.Destination("a");
        var checker = proxy.Server.State.Current.Clusters["c"].HealthChecker!;

        // Every destination is checked once in the first interval.
        await CheckRoundAsync(time, checker, 2);
        Assert.True(a.IsAvailable);
        Assert.Equal(2, upstream.RequestCount("GET", "/health") + other.RequestCount("GET", "/health"));

        Volatile.Write(ref healthy, false);
        await CheckRoundAsync(time, checker, 4);
        Assert.True(a.IsAvailable, a.HealthReason);
        await CheckRoundAsync(time, checker, 6);
        Assert.False(a.IsAvailable);
        Assert.Contains("status 503", a.HealthReason);
        for (var i = 0; i < 4; i++)
        {
            using var response = await proxy.Client.GetAsync("/").WaitAsync(Bound);
            Assert.Equal("b", response.Headers.GetValues("X-Upstream").Single());
        }

        Volatile.Write(ref healthy, true);
        await CheckRoundAsync(time, checker, 8);
        Assert.False(a.IsAvailable);
        await CheckRoundAsync(time, checker, 10);
        Assert.True(a.IsAvailable);
        Assert.True(a.Health.SlowStartFactor() < 0.5);
        Assert.True(a.EffectiveWeight < proxy.Destination("b").EffectiveWeight);
        using var back = await proxy.Client.GetAsync("/").WaitAsync(Bound);
        Assert.Equal(HttpStatusCode.OK, back.StatusCode);
    }

    private static async Task Ok(LabExchange exchange, CancellationToken ct)
    {
        await exchange.WriteHeadAsync(200, null, 0, ct);
        await exchange.CompleteResponseAsync(ct);
    }

    // Moves the clock past the longest jittered interval and waits for the checks it starts to complete.
    private static async Task CheckRoundAsync(ManualTimeProvider time, Ferry.Health.ActiveHealthChecker checker, long expectedChecks)
    {
        time.Advance(TimeSpan.FromSeconds(6.1));
        await Wait.Until(() => checker.Checks >= expectedChecks);
        Assert.Equal(expectedChecks, checker.Checks);
    }
}
