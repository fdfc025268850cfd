using System.Diagnostics;
using System.Net;
using Ferry.FunctionalTests.Support;
using Ferry.Lab;
using Xunit.Abstractions;

namespace Ferry.FunctionalTests.Health;

// The seed incident of issue 4 on loopback: two healthy backends with a tiny listen backlog and a slow single-threaded
// handler, hit by a burst far larger than they can accept at once. nginx (max_fails=1) marks both failed and answers
// "no live upstreams" to everyone; Ferry must not.
public sealed class BacklogBurstTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(60);
    private const int Clients = 300;

    private static LabUpstream Backend(string name) => LabUpstream.Start(new LabUpstreamOptions
    {
        Name = name,
        Backlog = 8,
        MaxConcurrentRequests = 1,
        HandlerDelay = TimeSpan.FromMilliseconds(2),
    });

    [Fact]
    public async Task DefaultSettings_NeverFailEveryone()
    {
        await using var a = Backend("a");
        await using var b = Backend("b");
        await using var proxy = await ProxyHarness.StartAsync(ProxyHarness.Settings(("a", a.Uri), ("b", b.Uri)), null, a, b);

        var results = await BurstAsync(proxy);

        Report("defaults", results);
        Assert.Contains(results, r => r.Status == HttpStatusCode.OK);
        // Whatever failed was named, and never for want of a live destination.
        Assert.All(results.Where(r => (int)r.Status >= 500), r => Assert.NotNull(r.ProxyStatus));
        Assert.DoesNotContain(results, r => r.ProxyStatus?.Contains("destination_unavailable", StringComparison.Ordinal) == true);
    }

    [Fact]
    public async Task ConnectionLimitAtCapacity_QueuesInFerry_NoFailures()
    {
        await using var a = Backend("a");
        await using var b = Backend("b");
        var settings = ProxyHarness.Settings(("a", a.Uri), ("b", b.Uri));
        settings["Clusters:c:MaxConnections"] = "1";
        settings["Clusters:c:Queue:Size"] = "1000";
        settings["Clusters:c:Queue:Timeout"] = "30s";
        await using var proxy = await ProxyHarness.StartAsync(settings, null, a, b);

        var results = await BurstAsync(proxy);

        Report("MaxConnections 1", results);
        Assert.All(results, r => Assert.Equal(HttpStatusCode.OK, r.Status));
        // Never more connections than the limit: the backends' backlogs never overflowed.
        Assert.Equal(1, a.ConnectionsAccepted);
        Assert.Equal(1, b.ConnectionsAccepted);
        Assert.Equal(Clients, a.RequestsReceived + b.RequestsReceived);
    }

    private sealed record Result(HttpStatusCode Status, string? ProxyStatus, TimeSpan Latency);

    private static async Task<Result[]> BurstAsync(ProxyHarness proxy)
    {
        using var start = new SemaphoreSlim(0);
        var tasks = Enumerable.Range(0, Clients).Select(async _ =>
        {
            await start.WaitAsync();
            var watch = Stopwatch.StartNew();
            using var response = await proxy.Client.GetAsync("/");
            await response.Content.ReadAsByteArrayAsync();
            return new Result(response.StatusCode,
                response.Headers.TryGetValues("Proxy-Status", out var values) ? values.Single() : null, watch.Elapsed);
        }).ToArray();
        start.Release(Clients);
        return await Task.WhenAll(tasks).WaitAsync(Bound);
    }

    private void Report(string label, Result[] results)
    {
        var latencies = results.Select(r => r.Latency.TotalMilliseconds).Order().ToArray();
        var statuses = string.Join(", ", results.GroupBy(r => r.ProxyStatus is null ? $"{(int)r.Status}" : $"{(int)r.Status} {r.ProxyStatus}")
            .Select(g => $"{g.Key} × {g.Count()}"));
        output.WriteLine($"{label}: {statuses}; p50 {latencies[latencies.Length / 2]:0} ms, p99 {latencies[latencies.Length * 99 / 100]:0} ms");
    }
}
