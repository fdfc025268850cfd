using System.Text.Json;
using Ferry.Cli;
using Ferry.Incidents;

namespace Ferry.FunctionalTests.Incidents;

// `ferry lab` through Ferry only (nginx may be absent): the table's figures must agree with the Lab upstream's own
// counters, which the result carries.
public sealed class LabCommandTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(60);

    [Fact]
    public async Task MaxRequests_FiguresAgreeWithTheUpstreamCounters()
    {
        var output = new StringWriter();

        int exit = await LabCommand.RunAsync([Incident.Find("max-requests")!], requests: 300, duration: TimeSpan.FromSeconds(20), latency: null,
            nginx: null, nginxSkipped: "test", json: true, showProgress: false, output, TimeProvider.System, CancellationToken.None).WaitAsync(Bound);

        Assert.Equal(0, exit);
        using var document = JsonDocument.Parse(output.ToString());
        var result = document.RootElement.GetProperty("results").EnumerateArray().Single();
        Assert.Equal("max-requests", result.GetProperty("incident").GetString());
        Assert.Equal("ferry", result.GetProperty("proxy").GetString());
        int sent = result.GetProperty("requests").GetInt32();
        int ok = result.GetProperty("ok").GetInt32();
        Assert.Equal(300, sent);
        Assert.Equal(sent, ok + result.GetProperty("serverErrors").GetInt32() + result.GetProperty("otherStatus").GetInt32()
                           + result.GetProperty("errors").GetInt32());
        // Every 2xx was answered by the upstream, once; a request lost to the silent close is never parsed there.
        Assert.Equal(ok, result.GetProperty("upstreamRequests").GetInt32());
        // 100 requests per upstream connection: at least ok / 100 connections were needed.
        Assert.True(result.GetProperty("upstreamConnections").GetInt32() >= ok / 100);
        Assert.Equal("test", document.RootElement.GetProperty("nginxSkipped").GetString());
    }

    [Fact]
    public async Task KeepAliveRace_ThroughTheRelay_FiguresAgreeWithTheUpstream_AndNoPostIsProcessedTwice()
    {
        var output = new StringWriter();

        // Three waves: at 0 s, then near 2 s and 4 s, when the upstream closes the connections idle since the last one.
        int exit = await LabCommand.RunAsync([Incident.Find("keepalive-race")!], requests: 10_000, duration: TimeSpan.FromSeconds(5),
            latency: TimeSpan.FromMilliseconds(1), nginx: null, nginxSkipped: "test", json: true, showProgress: false, output,
            TimeProvider.System, CancellationToken.None).WaitAsync(Bound);

        Assert.Equal(0, exit);
        using var document = JsonDocument.Parse(output.ToString());
        var result = document.RootElement.GetProperty("results").EnumerateArray().Single();
        Assert.Equal("keepalive-race", result.GetProperty("incident").GetString());
        Assert.Equal(1.0, result.GetProperty("latencyMs").GetDouble());
        var get = result.GetProperty("get");
        var post = result.GetProperty("post");
        int Sum(JsonElement m, string name) => m.GetProperty(name).GetInt32();
        foreach (var name in new[] { "requests", "ok", "serverErrors", "otherStatus", "errors" })
        {
            Assert.Equal(result.GetProperty(name).GetInt32(), Sum(get, name) + Sum(post, name));
        }
        // A mix, and more than the first wave: reuses happened near the upstream's idle close.
        Assert.True(Sum(get, "requests") > 0 && Sum(post, "requests") > 0);
        Assert.True(result.GetProperty("requests").GetInt32() > 32 * 4, "only the first wave ran");
        // Every POST answered 2xx was processed once, and no POST was processed without a 2xx answer.
        Assert.Equal(result.GetProperty("postsOk").GetInt32(), result.GetProperty("upstreamPosts").GetInt32());
        Assert.Equal(Sum(post, "ok"), result.GetProperty("postsOk").GetInt32());
        Assert.True(result.GetProperty("upstreamRequests").GetInt32() >= result.GetProperty("ok").GetInt32());
    }

    [Fact]
    public async Task Backlog_RunsFerryWithAndWithoutTheAdaptiveLimit_WithResponseTimes()
    {
        var output = new StringWriter();

        int exit = await LabCommand.RunAsync([Incident.Find("backlog")!], requests: 100, duration: TimeSpan.FromSeconds(10), latency: null,
            nginx: null, nginxSkipped: "test", json: true, showProgress: false, output, TimeProvider.System, CancellationToken.None).WaitAsync(Bound);

        Assert.Equal(0, exit);
        using var document = JsonDocument.Parse(output.ToString());
        var results = document.RootElement.GetProperty("results").EnumerateArray().ToArray();
        Assert.Equal(["ferry", IncidentRunner.FerryWithoutAdaptiveLimit], results.Select(r => r.GetProperty("proxy").GetString()));
        foreach (var result in results)
        {
            int ok = result.GetProperty("ok").GetInt32();
            Assert.Equal(result.GetProperty("requests").GetInt32(), ok + result.GetProperty("serverErrors").GetInt32()
                + result.GetProperty("otherStatus").GetInt32() + result.GetProperty("errors").GetInt32());
            // No keep-alive: one upstream connection per request the upstream answered.
            Assert.Equal(result.GetProperty("upstreamRequests").GetInt32(), result.GetProperty("upstreamConnections").GetInt32());
            Assert.True(ok > 0);
            Assert.True(result.GetProperty("p50Ms").GetDouble() <= result.GetProperty("p99Ms").GetDouble());
        }
    }

    [Fact]
    public async Task Table_ShowsOneRowPerIncidentAndProxy()
    {
        var output = new StringWriter();

        await LabCommand.RunAsync([Incident.Find("max-requests")!], requests: 120, duration: TimeSpan.FromSeconds(20), latency: null,
            nginx: null, nginxSkipped: "nginx is not on PATH", json: false, showProgress: false, output, TimeProvider.System,
            CancellationToken.None).WaitAsync(Bound);

        string table = output.ToString();
        Assert.Contains("max-requests", table, StringComparison.Ordinal);
        Assert.Contains("│ ferry │", table, StringComparison.Ordinal);
        Assert.Contains("upstream reqs", table, StringComparison.Ordinal);
        Assert.Contains("5xx POST", table, StringComparison.Ordinal);
        Assert.Contains("POSTs processed", table, StringComparison.Ordinal);
        Assert.Contains("p99 ms", table, StringComparison.Ordinal);
        Assert.Contains("nginx column skipped: nginx is not on PATH", table, StringComparison.Ordinal);
        Assert.DoesNotContain("\u001b[", table, StringComparison.Ordinal);
    }
}
