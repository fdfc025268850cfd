using System.Net;
using System.Text.Json;
using Ferry.FunctionalTests.Support;
using Ferry.Lab;

namespace Ferry.FunctionalTests.Forwarding;

public sealed class AdminTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task Healthz_AndStatus_DescribeClustersDestinationsAndPools()
    {
        await using var a = LabUpstream.Start(new LabUpstreamOptions { Name = "a" });
        await using var b = LabUpstream.Start(new LabUpstreamOptions { Name = "b" });
        await using var proxy = await ProxyHarness.StartAsync(a, b);
        for (var i = 0; i < 4; i++)
        {
            (await proxy.Client.GetAsync("/").WaitAsync(Bound)).EnsureSuccessStatusCode();
        }
        using var admin = new HttpClient { BaseAddress = proxy.Server.AdminUri };

        var healthz = await admin.GetStringAsync("/healthz").WaitAsync(Bound);
        using var status = JsonDocument.Parse(await admin.GetStringAsync("/status").WaitAsync(Bound));

        Assert.Equal("ok\n", healthz);
        Assert.NotEqual(proxy.ProxyUri.Port, proxy.Server.AdminUri!.Port);
        var cluster = status.RootElement.GetProperty("clusters").EnumerateArray().Single();
        Assert.Equal("c", cluster.GetProperty("id").GetString());
        var destinations = cluster.GetProperty("destinations").EnumerateArray().ToArray();
        Assert.Equal(["a", "b"], destinations.Select(d => d.GetProperty("id").GetString()));
        foreach (var d in destinations)
        {
            Assert.Equal("available", d.GetProperty("health").GetString());
            var pool = d.GetProperty("pool");
            Assert.Equal(1, pool.GetProperty("opened").GetInt64());
            Assert.Equal(1, pool.GetProperty("reused").GetInt64());
            Assert.Equal(1, pool.GetProperty("idle").GetInt32());
            Assert.Equal(0, pool.GetProperty("active").GetInt32());
        }
    }

    [Fact]
    public async Task AdminListener_DoesNotProxy()
    {
        await using var a = LabUpstream.Start(new LabUpstreamOptions { Name = "a" });
        await using var proxy = await ProxyHarness.StartAsync(a);
        using var admin = new HttpClient { BaseAddress = proxy.Server.AdminUri };

        var response = await admin.GetAsync("/anything").WaitAsync(Bound);

        Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
        Assert.Equal(0, a.RequestsReceived);
    }

    [Theory]
    [InlineData("rebound.example", null, HttpStatusCode.MisdirectedRequest)]
    [InlineData("rebound.example:9901", null, HttpStatusCode.MisdirectedRequest)]
    [InlineData("localhost:9901", null, HttpStatusCode.OK)]
    [InlineData("127.0.0.1", null, HttpStatusCode.OK)]
    [InlineData("[::1]:9901", null, HttpStatusCode.OK)]
    [InlineData("Ferry.Internal:9901", "ferry.internal", HttpStatusCode.OK)]
    [InlineData("other.internal", "ferry.internal", HttpStatusCode.MisdirectedRequest)]
    public async Task AdminListener_AnswersOnlyForLoopbackAndAllowedHostNames(string host, string? allowed, HttpStatusCode expected)
    {
        // With no token (the default), a page whose name is rebound to 127.0.0.1 could otherwise read /status.
        await using var a = LabUpstream.Start(new LabUpstreamOptions { Name = "a" });
        var settings = ProxyHarness.Settings(("a", a.Uri));
        if (allowed is not null)
        {
            settings["Admin:AllowedHosts:0"] = allowed;
        }
        await using var proxy = await ProxyHarness.StartAsync(settings, null, a);
        using var admin = new HttpClient { BaseAddress = proxy.Server.AdminUri };
        using var request = new HttpRequestMessage(HttpMethod.Get, "/status");
        request.Headers.Host = host;

        var response = await admin.SendAsync(request).WaitAsync(Bound);

        Assert.Equal(expected, response.StatusCode);
        if (expected != HttpStatusCode.OK)
        {
            Assert.DoesNotContain("clusters", await response.Content.ReadAsStringAsync());
        }
    }
}
