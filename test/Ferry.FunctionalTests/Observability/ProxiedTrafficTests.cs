using System.Text.Json;
using Ferry.FunctionalTests.Support;
using Ferry.Lab;

namespace Ferry.FunctionalTests.Observability;

// Real requests through a FerryServer, checked at its own admin listener and in its access log file.
public sealed class ProxiedTrafficTests : IDisposable
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);
    private readonly string _directory = Directory.CreateTempSubdirectory("ferry-traffic-").FullName;

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    [Fact]
    public async Task Requests_AppearInMetricsStatsAndTheAccessLog()
    {
        var path = Path.Combine(_directory, "access.log");
        await using var a = LabUpstream.Start(new LabUpstreamOptions { Name = "a" });
        // A destination that refuses connections: its port was bound and released.
        var refused = LabUpstream.Start(new LabUpstreamOptions { Name = "down" });
        var refusedUri = refused.Uri;
        await refused.DisposeAsync();
        var settings = ProxyHarness.Settings(("a", a.Uri));
        settings["AccessLog:Path"] = path;
        settings["Routes:down:ClusterId"] = "down";
        settings["Routes:down:Match:PathPrefix"] = "/down";
        settings["Clusters:down:Destinations:x:Address"] = refusedUri.ToString();
        await using (var proxy = await ProxyHarness.StartAsync(settings, null, a))
        {
            for (var i = 0; i < 3; i++)
            {
                (await proxy.Client.GetAsync("/").WaitAsync(Bound)).EnsureSuccessStatusCode();
            }
            var failed = await proxy.Client.GetAsync("/down").WaitAsync(Bound);
            Assert.Equal(502, (int)failed.StatusCode);
            using var admin = new HttpClient { BaseAddress = proxy.Server.AdminUri };

            var metrics = await admin.GetStringAsync("/metrics").WaitAsync(Bound);
            using var stats = JsonDocument.Parse(await admin.GetStringAsync("/stats?seconds=60").WaitAsync(Bound));

            Assert.Contains("ferry_requests_total{ferry_cluster=\"c\",ferry_route=\"all\",ferry_status_class=\"2xx\"} 3\n", metrics);
            Assert.Contains("ferry_requests_total{error_type=\"connection_refused\",ferry_cluster=\"down\",ferry_route=\"down\",ferry_status_class=\"5xx\"} 1\n", metrics);
            Assert.Contains("ferry_upstream_connections_reused_total{ferry_cluster=\"c\",ferry_destination=\"a\"} 2\n", metrics);
            Assert.Contains("ferry_upstream_head_duration_seconds_count{ferry_cluster=\"c\",ferry_destination=\"a\"} 3\n", metrics);
            Assert.Equal(4, stats.RootElement.GetProperty("requests").EnumerateArray().Sum(e => e.GetInt32()));
            Assert.Equal(1, stats.RootElement.GetProperty("errors").GetProperty("connection_refused").EnumerateArray().Sum(e => e.GetInt32()));
        }

        // Disposing the server drained the access log.
        var lines = File.ReadAllLines(path).Select(l => JsonDocument.Parse(l).RootElement).ToArray();
        Assert.Equal(4, lines.Length);
        Assert.Equal([false, true, true], lines.Take(3).Select(l => l.GetProperty("attempts")[0].GetProperty("reused").GetBoolean()));
        Assert.Equal("connection_refused", lines[3].GetProperty("error").GetString());
        Assert.Equal(502, lines[3].GetProperty("status").GetInt32());
    }
}
