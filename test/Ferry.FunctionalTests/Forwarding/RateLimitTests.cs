using System.Net;
using System.Text.Json;
using Ferry.FunctionalTests.Support;
using Ferry.Lab;

namespace Ferry.FunctionalTests.Forwarding;

// Routes:<id>:RateLimiterPolicy over loopback. The limiters measure time with their own clock (System.Threading.
// RateLimiting takes no TimeProvider), so every policy here replenishes once an hour: no permit comes back during a
// test, whatever the machine's speed, and every count below is exact.
public sealed class RateLimitTests : IDisposable
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);
    private readonly string _directory = Directory.CreateTempSubdirectory("ferry-ratelimit-").FullName;

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    private static Dictionary<string, string?> Settings(LabUpstream upstream, string policy, string? key = null)
    {
        var settings = ProxyHarness.Settings(("a", upstream.Uri));
        settings["Routes:limited:ClusterId"] = "c";
        settings["Routes:limited:Match:Hosts:0"] = "limited.test";
        settings["Routes:limited:Order"] = "-1"; // before the harness's catch-all route "all", which has a path prefix
        settings["Routes:limited:RateLimiterPolicy"] = "p";
        foreach (var setting in policy.Split(';'))
        {
            var (name, value) = (setting[..setting.IndexOf('=')], setting[(setting.IndexOf('=') + 1)..]);
            settings[$"RateLimiterPolicies:p:{name}"] = value;
        }
        if (key is not null)
        {
            settings["RateLimiterPolicies:p:Key"] = key;
        }
        return settings;
    }

    private const string ThreeAnHour = "Kind=TokenBucket;TokenLimit=3;TokensPerPeriod=1;ReplenishmentPeriod=1h";

    private static async Task<HttpResponseMessage> GetAsync(ProxyHarness proxy, string host, params (string Name, string Value)[] headers)
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, "/");
        request.Headers.Host = host;
        foreach (var (name, value) in headers)
        {
            request.Headers.TryAddWithoutValidation(name, value);
        }
        return await proxy.Client.SendAsync(request).WaitAsync(Bound);
    }

    [Fact]
    public async Task TokenBucket_AnswersItsTokensThen429WithRetryAfter_OtherRoutesUnaffected()
    {
        var log = Path.Combine(_directory, "access.log");
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions { Name = "a" });
        var settings = Settings(upstream, ThreeAnHour);
        settings["AccessLog:Path"] = log;
        var statuses = new List<HttpStatusCode>();
        HttpResponseMessage refused;
        string metrics;
        await using (var proxy = await ProxyHarness.StartAsync(settings, null, upstream))
        {
            for (var i = 0; i < 3; i++)
            {
                statuses.Add((await GetAsync(proxy, "limited.test")).StatusCode);
            }
            refused = await GetAsync(proxy, "limited.test");
            // The route without a policy, from the same client, after the other route's budget is spent.
            for (var i = 0; i < 10; i++)
            {
                statuses.Add((await GetAsync(proxy, "other.test")).StatusCode);
            }
            using var admin = new HttpClient { BaseAddress = proxy.Server.AdminUri };
            metrics = await admin.GetStringAsync("/metrics").WaitAsync(Bound);
        }

        Assert.All(statuses, s => Assert.Equal(HttpStatusCode.OK, s));
        Assert.Equal(13, upstream.RequestsReceived);
        Assert.Equal((HttpStatusCode)429, refused.StatusCode);
        // 3 tokens spent, one comes back per hour.
        Assert.Equal(TimeSpan.FromHours(1), refused.Headers.RetryAfter?.Delta);
        Assert.Equal("ferry; error=http_request_denied; details=\"rate limiter policy 'p' (TokenBucket by ClientIp) has no permit left; retry after 3600 s\"",
            refused.Headers.GetValues("Proxy-Status").Single());
        Assert.Contains("ferry_rate_limited_requests_total{ferry_rate_limiter_policy=\"p\",ferry_route=\"limited\"} 1", metrics);
        Assert.Contains("ferry_rate_limiter_partitions{ferry_rate_limiter_policy=\"p\"} 1", metrics);

        var lines = File.ReadLines(log).Select(l => JsonDocument.Parse(l).RootElement).ToList();
        var line = lines.Single(l => l.GetProperty("status").GetInt32() == 429);
        Assert.Equal("limited", line.GetProperty("route").GetString());
        Assert.Equal("http_request_denied", line.GetProperty("error").GetString());
        Assert.Contains("rate limiter policy 'p'", line.GetProperty("error_details").GetString());
    }

    [Theory]
    [InlineData("127.0.0.0/8", true)]
    [InlineData("10.0.0.0/8", false)]
    public async Task ClientIpKey_EachForwardedClientHasItsBudget_OnlyBehindATrustedProxy(string trusted, bool separate)
    {
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions { Name = "a" });
        var settings = Settings(upstream, "Kind=TokenBucket;TokenLimit=2;TokensPerPeriod=1;ReplenishmentPeriod=1h", "ClientIp");
        settings["Listeners:main:TrustedProxies:0"] = trusted;
        await using var proxy = await ProxyHarness.StartAsync(settings, null, upstream);

        var first = new List<int>();
        var second = new List<int>();
        for (var i = 0; i < 3; i++)
        {
            first.Add((int)(await GetAsync(proxy, "limited.test", ("X-Forwarded-For", "198.51.100.1"))).StatusCode);
        }
        for (var i = 0; i < 3; i++)
        {
            second.Add((int)(await GetAsync(proxy, "limited.test", ("X-Forwarded-For", "203.0.113.7, 198.51.100.2"))).StatusCode);
        }

        Assert.Equal([200, 200, 429], first);
        // Untrusted, X-Forwarded-For says nothing: both are the peer 127.0.0.1, whose two tokens are spent.
        Assert.Equal(separate ? [200, 200, 429] : [429, 429, 429], second);
        Assert.Equal(separate ? 2 : 1, proxy.Server.State.Current.RateLimiters["p"].Partitions);
    }

    [Fact]
    public async Task HeaderKey_EachValueHasItsBudget_RequestsWithoutItShareOne()
    {
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions { Name = "a" });
        var settings = Settings(upstream, "Kind=FixedWindow;PermitLimit=1;Window=1h;Name=X-Api-Key", "Header");
        await using var proxy = await ProxyHarness.StartAsync(settings, null, upstream);
        var longKey = new string('k', 5000);

        var statuses = new List<int>();
        foreach (var headers in new[]
        {
            new[] { ("X-Api-Key", "alice") }, [("X-Api-Key", "alice")],
            [("X-Api-Key", "bob")],
            [], [],
            [("X-Api-Key", longKey)], [("X-Api-Key", longKey)],
        })
        {
            statuses.Add((int)(await GetAsync(proxy, "limited.test", headers)).StatusCode);
        }

        Assert.Equal([200, 429, 200, 200, 429, 200, 429], statuses);
        Assert.Equal(4, proxy.Server.State.Current.RateLimiters["p"].Partitions);
    }

    [Fact]
    public async Task RouteKey_OneBudgetForEveryClient()
    {
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions { Name = "a" });
        var settings = Settings(upstream, "Kind=SlidingWindow;PermitLimit=2;Window=1h;SegmentsPerWindow=4", "Route");
        settings["Listeners:main:TrustedProxies:0"] = "127.0.0.0/8";
        await using var proxy = await ProxyHarness.StartAsync(settings, null, upstream);

        var statuses = new List<int>();
        for (var i = 1; i <= 3; i++)
        {
            statuses.Add((int)(await GetAsync(proxy, "limited.test", ("X-Forwarded-For", $"198.51.100.{i}"))).StatusCode);
        }

        Assert.Equal([200, 200, 429], statuses);
    }

    [Fact]
    public async Task ConcurrencyQueue_IsBounded_AndAClientLeavingTheQueueFreesItsPlace()
    {
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions
        {
            Name = "a",
            Script = async (x, ct) =>
            {
                if (x.Path == "/hold")
                {
                    await release.Task.WaitAsync(ct);
                }
                await x.WriteResponseAsync(200, "done\n", ct: ct);
            },
        });
        var settings = Settings(upstream, "Kind=Concurrency;PermitLimit=1;QueueLimit=1", "Route");
        await using var proxy = await ProxyHarness.StartAsync(settings, null, upstream);
        var endPoint = new IPEndPoint(IPAddress.Loopback, proxy.ProxyUri.Port);
        var partition = proxy.Server.State.Current.RateLimiters["p"].Partition("limited");
        const string hold = "GET /hold HTTP/1.1\r\nHost: limited.test\r\n\r\n";

        // A holds the only permit; B waits in the queue, then goes away.
        await using var a = await RawHttpConnection.ConnectAsync(endPoint);
        await a.SendAsync(hold);
        await Wait.Until(() => upstream.RequestsReceived == 1, Bound);
        var b = await RawHttpConnection.ConnectAsync(endPoint);
        await b.SendAsync(hold);
        await Wait.Until(() => partition.GetStatistics()!.CurrentQueuedCount == 1, Bound);
        await b.DisposeAsync();
        await Wait.Until(() => partition.GetStatistics()!.CurrentQueuedCount == 0, Bound);

        // B's place is free again: C takes it, and D finds the queue full at once.
        await using var c = await RawHttpConnection.ConnectAsync(endPoint);
        await c.SendAsync(hold);
        await Wait.Until(() => partition.GetStatistics()!.CurrentQueuedCount == 1, Bound);
        await using var d = await RawHttpConnection.ConnectAsync(endPoint);
        await d.SendAsync("GET / HTTP/1.1\r\nHost: limited.test\r\n\r\n");
        var refused = await d.ReadResponseAsync().WaitAsync(Bound);

        release.SetResult();
        var first = await a.ReadResponseAsync().WaitAsync(Bound);
        var queued = await c.ReadResponseAsync().WaitAsync(Bound);

        Assert.Equal(429, refused.Status);
        Assert.Null(refused.Header("Retry-After")); // a concurrency limit cannot say when a permit comes back
        Assert.Equal("ferry; error=http_request_denied; details=\"rate limiter policy 'p' (Concurrency by Route) has no permit left and its queue is full\"",
            refused.Header("Proxy-Status"));
        Assert.Equal(200, first.Status);
        Assert.Equal(200, queued.Status);
        Assert.Equal(2, upstream.RequestsReceived); // A and C; B left before it had a permit, D was refused
        Assert.Equal(1, partition.GetStatistics()!.CurrentAvailablePermits);
    }
}
