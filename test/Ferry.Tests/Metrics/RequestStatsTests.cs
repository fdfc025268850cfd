using System.Text;
using System.Text.Json;
using Ferry.Errors;
using Ferry.Metrics;
using Ferry.Tests.Support;

namespace Ferry.Tests.Metrics;

public sealed class RequestStatsTests : IAsyncLifetime
{
    private readonly TestRecords _records = new();

    public Task InitializeAsync() => Task.CompletedTask;

    public Task DisposeAsync() => _records.DisposeAsync().AsTask();

    private static string Json(RequestStats stats, int seconds)
    {
        using var stream = new MemoryStream();
        using (var json = new Utf8JsonWriter(stream))
        {
            stats.WriteJson(json, seconds);
        }
        return Encoding.UTF8.GetString(stream.ToArray());
    }

    [Fact]
    public void Requests_AreBucketedBySecond_And5xxByCause()
    {
        var clock = _records.Clock;
        var stats = new RequestStats(clock);
        var end = clock.GetUtcNow().ToUnixTimeSeconds() + 2;

        stats.Record(_records.Reused());
        stats.Record(_records.BadGateway());
        clock.Advance(TimeSpan.FromMilliseconds(999)); // still the same second: 07.089 + 0.999 = 08.088
        clock.Advance(TimeSpan.FromMilliseconds(1));
        stats.Record(_records.Replayed());
        clock.Advance(TimeSpan.FromSeconds(1));
        var upstream5xx = _records.Reused();
        upstream5xx.Status = 503;
        stats.Record(upstream5xx);
        var terminated = _records.BadGateway();
        terminated.Error = ProxyError.ConnectionTerminated;
        stats.Record(terminated);

        Assert.Equal(
            $$$"""{"end":{{{end}}},"requests":[0,2,1,2],"errors":{"connection_refused":[0,1,0,0],"connection_terminated":[0,0,0,1],"destination_5xx":[0,0,0,1]}}""",
            Json(stats, 4));
    }

    [Fact]
    public void OldSeconds_LeaveTheWindow_AndTheirSlotsAreReused()
    {
        var clock = _records.Clock;
        var stats = new RequestStats(clock);
        stats.Record(_records.BadGateway());
        clock.Advance(TimeSpan.FromSeconds(RequestStats.WindowSeconds));
        stats.Record(_records.Reused());

        using var doc = JsonDocument.Parse(Json(stats, RequestStats.WindowSeconds));

        var requests = doc.RootElement.GetProperty("requests").EnumerateArray().Select(e => e.GetInt32()).ToArray();
        Assert.Equal(RequestStats.WindowSeconds, requests.Length);
        Assert.Equal(1, requests.Sum());
        Assert.Equal(1, requests[^1]);
        Assert.Empty(doc.RootElement.GetProperty("errors").EnumerateObject());
    }

    [Fact]
    public void ConcurrentRecording_FromManyThreads_CountsEveryRequest()
    {
        const int Threads = 8;
        const int PerThread = 10_000;
        var clock = _records.Clock;
        var stats = new RequestStats(clock);
        var ok = _records.Reused();
        var failed = _records.BadGateway();
        // A request of the last window, in the slot the requests below count in: it must be neither read nor added to.
        stats.Record(ok);
        clock.Advance(TimeSpan.FromSeconds(RequestStats.WindowSeconds));

        using var start = new Barrier(Threads);
        var workers = Enumerable.Range(0, Threads).Select(t => new Thread(() =>
        {
            start.SignalAndWait();
            for (var i = 0; i < PerThread; i++)
            {
                stats.Record(i % 100 == 0 ? failed : ok);
            }
        })).ToArray();
        foreach (var worker in workers)
        {
            worker.Start();
        }
        foreach (var worker in workers)
        {
            Assert.True(worker.Join(TimeSpan.FromSeconds(30)));
        }
        stats.Record(ok);

        var end = clock.GetUtcNow().ToUnixTimeSeconds();
        Assert.Equal(
            $$$"""{"end":{{{end}}},"requests":[0,{{{Threads * PerThread + 1}}}],"errors":{"connection_refused":[0,{{{Threads * PerThread / 100}}}]}}""",
            Json(stats, 2));
    }

    [Fact]
    public void Seconds_AreClampedToTheWindow()
    {
        var stats = new RequestStats(_records.Clock);

        using var doc = JsonDocument.Parse(Json(stats, 100_000));

        Assert.Equal(RequestStats.WindowSeconds, doc.RootElement.GetProperty("requests").GetArrayLength());
    }
}
