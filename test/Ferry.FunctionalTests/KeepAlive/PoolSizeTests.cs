using System.Net;
using Ferry.FunctionalTests.Support;
using Ferry.Lab;
using Ferry.Tests.Support;
using Ferry.Upstream;
using Xunit.Abstractions;

namespace Ferry.FunctionalTests.KeepAlive;

// The pool is sized by the recent peak of concurrent requests, not by MaxIdle: a steady closed loop of clients opens
// about one connection per concurrent request and closes none while it runs, even far above MaxIdle. Time is manual,
// so no idle limit retires a connection behind the test's back; what is asserted are counts, not timings.
public sealed class PoolSizeTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(60);
    private const int Clients = 200;
    private const int RequestsPerClient = 25;
    private const int MaxIdle = 8;

    [Fact]
    public async Task SteadyClosedLoop_AboveMaxIdle_OpensAboutOneConnectionPerConcurrentRequest_AndClosesNone()
    {
        var time = new ManualTimeProvider();
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions { Name = "a", TimeProvider = time });
        var settings = ProxyHarness.Settings((upstream.Name, upstream.Uri));
        settings["Clusters:c:KeepAlive:MaxIdle"] = MaxIdle.ToString();
        await using var proxy = await ProxyHarness.StartAsync(settings, time, upstream);
        var pool = proxy.Destination(upstream.Name).Pool;
        var failures = 0;

        async Task ClientLoop()
        {
            for (var i = 0; i < RequestsPerClient; i++)
            {
                using var response = await proxy.Client.GetAsync("/");
                await response.Content.ReadAsByteArrayAsync();
                if (response.StatusCode != HttpStatusCode.OK)
                {
                    Interlocked.Increment(ref failures);
                }
            }
        }

        await Task.WhenAll(Enumerable.Range(0, Clients).Select(_ => Task.Run(ClientLoop))).WaitAsync(Bound);

        var peak = pool.RecentPeakLeases;
        output.WriteLine($"{Clients} clients × {RequestsPerClient} requests, MaxIdle {MaxIdle}: peak concurrent leases {peak}, "
            + $"opened {pool.Opened}, reused {pool.Reused}, idle {pool.Idle}, upstream accepted {upstream.ConnectionsAccepted}, "
            + $"retired {string.Join(", ", Enum.GetValues<RetireReason>().Where(r => pool.Retired(r) > 0).Select(r => $"{r} {pool.Retired(r)}"))}");
        Assert.Equal(0, failures);
        Assert.Equal(Clients * RequestsPerClient, upstream.RequestCount("GET", "/"));
        Assert.InRange(peak, 1, Clients);
        Assert.True(pool.Opened <= peak * 11 / 10, $"opened {pool.Opened} connections for a peak of {peak} concurrent requests");
        Assert.Equal(upstream.ConnectionsAccepted, pool.Opened);
        foreach (var reason in Enum.GetValues<RetireReason>())
        {
            Assert.True(pool.Retired(reason) == 0, $"{pool.Retired(reason)} connections retired for {reason} while the traffic continued");
        }
        Assert.Equal(pool.Opened, pool.Idle);
    }
}
