using System.Net;
using System.Text.Json;
using Ferry.FunctionalTests.Support;
using Ferry.Lab;

namespace Ferry.FunctionalTests.Health;

// Retry:Statuses (nginx's proxy_next_upstream http_503): a listed status moves a replayable request on to another
// destination; the last answer is relayed as it came.
public sealed class RetryStatusTests : IDisposable
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);

    private readonly string _directory = Directory.CreateTempSubdirectory("ferry-retry-status-").FullName;

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    private static LabUpstream Busy(string name) => LabUpstream.Start(new LabUpstreamOptions
    {
        Name = name,
        Script = (exchange, ct) => exchange.WriteResponseAsync(503, $"{name} is busy\n", ct: ct),
    });

    [Fact]
    public async Task ListedStatus_MovesOnToTheNextDestination_AndKeepsTheConnection()
    {
        var log = Path.Combine(_directory, "access.log");
        await using var busy = Busy("busy");
        await using var good = LabUpstream.Start(new LabUpstreamOptions { Name = "good" });
        var settings = ProxyHarness.Settings(("busy", busy.Uri), ("good", good.Uri));
        settings["Clusters:c:Retry:Statuses:0"] = "503";
        settings["AccessLog:Path"] = log;
        string metrics;
        await using (var proxy = await ProxyHarness.StartAsync(settings, null, busy, good))
        {
            for (var i = 0; i < 4; i++)
            {
                using var get = await proxy.Client.GetAsync("/").WaitAsync(Bound);
                Assert.Equal(HttpStatusCode.OK, get.StatusCode);
                Assert.Equal("good", get.Headers.GetValues("X-Upstream").Single());
            }
            Assert.True(busy.RequestsReceived >= 2);
            // The short 503 bodies were read to their end: one connection served every one of them.
            Assert.Equal(1, busy.ConnectionsAccepted);
            // 503 is not in FailureStatuses: the destination answered, it stays in rotation.
            Assert.True(proxy.Destination("busy").IsAvailable);

            // A POST cannot be sent twice: the destination's answer is relayed.
            var statuses = new List<HttpStatusCode>();
            for (var i = 0; i < 2; i++)
            {
                using var post = await proxy.Client.PostAsync("/echo", new StringContent("x")).WaitAsync(Bound);
                statuses.Add(post.StatusCode);
            }
            Assert.Contains(HttpStatusCode.ServiceUnavailable, statuses);

            using var admin = new HttpClient { BaseAddress = proxy.Server.AdminUri };
            metrics = await admin.GetStringAsync("/metrics").WaitAsync(Bound);
        }

        var retried = busy.RequestCount("GET", "/");
        Assert.Contains(
            $"ferry_upstream_retries_total{{ferry_cluster=\"c\",ferry_destination=\"good\",ferry_retry_kind=\"next_destination\"}} {retried}\n",
            metrics);
        var lines = File.ReadAllLines(log).Select(l => JsonDocument.Parse(l).RootElement).ToArray();
        var attempts = lines.Where(l => l.GetProperty("method").GetString() == "GET")
            .Select(l => l.GetProperty("attempts").EnumerateArray()
                .Select(a => (a.GetProperty("destination").GetString(), a.GetProperty("status").GetInt32())).ToArray())
            .Where(a => a.Length > 1)
            .ToArray();
        Assert.Equal(retried, attempts.Length);
        Assert.All(attempts, a => Assert.Equal([("busy", 503), ("good", 200)], a));
    }

    [Fact]
    public async Task TriesUsedUp_TheLastAnswerIsRelayedAsItCame()
    {
        await using var first = Busy("first");
        await using var second = Busy("second");
        await using var third = Busy("third");
        var settings = ProxyHarness.Settings(("first", first.Uri), ("second", second.Uri), ("third", third.Uri));
        settings["Clusters:c:Retry:Statuses:0"] = "503";
        settings["Clusters:c:Retry:Tries"] = "2";
        await using var proxy = await ProxyHarness.StartAsync(settings, null, first, second, third);

        using var get = await proxy.Client.GetAsync("/").WaitAsync(Bound);

        Assert.Equal(HttpStatusCode.ServiceUnavailable, get.StatusCode);
        Assert.False(get.Headers.Contains("Proxy-Status"));
        var body = await get.Content.ReadAsStringAsync().WaitAsync(Bound);
        Assert.Equal($"{get.Headers.GetValues("X-Upstream").Single()} is busy\n", body);
        Assert.Equal(2, first.RequestsReceived + second.RequestsReceived + third.RequestsReceived);
    }

    [Fact]
    public async Task NobodyLeft_TheAnswerIsRelayed()
    {
        await using var only = Busy("only");
        var settings = ProxyHarness.Settings(("only", only.Uri));
        settings["Clusters:c:Retry:Statuses:0"] = "503";
        await using var proxy = await ProxyHarness.StartAsync(settings, null, only);

        using var get = await proxy.Client.GetAsync("/").WaitAsync(Bound);

        Assert.Equal(HttpStatusCode.ServiceUnavailable, get.StatusCode);
        Assert.Equal("only is busy\n", await get.Content.ReadAsStringAsync().WaitAsync(Bound));
        Assert.Equal(1, only.RequestsReceived);
    }

    [Fact]
    public async Task ListedStatus_AlsoInFailureStatuses_CountsAgainstTheDestination()
    {
        await using var busy = Busy("busy");
        await using var good = LabUpstream.Start(new LabUpstreamOptions { Name = "good" });
        var settings = ProxyHarness.Settings(("busy", busy.Uri), ("good", good.Uri));
        settings["Clusters:c:Retry:Statuses:0"] = "503";
        settings["Clusters:c:HealthCheck:Passive:FailureStatuses:0"] = "503";
        await using var proxy = await ProxyHarness.StartAsync(settings, null, busy, good);

        for (var i = 0; i < 4; i++)
        {
            using var get = await proxy.Client.GetAsync("/").WaitAsync(Bound);
            Assert.Equal(HttpStatusCode.OK, get.StatusCode);
        }

        // One 503 ejected it (MaxFailures 1): later requests all went to "good" directly.
        Assert.Equal(1, busy.RequestsReceived);
        Assert.False(proxy.Destination("busy").IsAvailable);
    }
}
