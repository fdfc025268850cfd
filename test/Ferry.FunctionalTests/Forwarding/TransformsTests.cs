using System.Net;
using System.Text;
using Ferry.FunctionalTests.Support;
using Ferry.Lab;
using Ferry.Upstream;

namespace Ferry.FunctionalTests.Forwarding;

// Routes:<id>:Transforms and MaxRequestBodySize, seen from both ends: what the destination received and what the client got.
public sealed class TransformsTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);

    // Answers every request with the request head it received, plus a header the response rules remove.
    private static LabUpstream EchoHead() => LabUpstream.Start(new LabUpstreamOptions
    {
        Name = "a",
        Script = (x, ct) => x.WriteResponseAsync(200, x.RawHead, [new("Server", "lab"), new("X-Kept", "1")], ct),
    });

    [Fact]
    public async Task HeaderPathAndQueryRules_ReachTheDestinationAndTheClient()
    {
        await using var upstream = EchoHead();
        var settings = ProxyHarness.Settings(("a", upstream.Uri));
        settings["Routes:all:Match:PathPrefix"] = null;
        settings["Routes:all:Match:Path"] = "/v1/items/{id}/{**rest}";
        string[][] rules =
        [
            ["RequestHeader", "X-Env", "Set", "prod"],
            ["RequestHeader", "X-A", "Append", "v"],
            ["RequestHeaderRemove", "Cookie"],
            ["RequestHeaderOriginalHost", "true"],
            ["ResponseHeader", "Strict-Transport-Security", "Set", "max-age=60", "When", "Always"],
            ["ResponseHeaderRemove", "Server"],
            ["PathPattern", "/api/things/{id}/{**rest}"],
            ["QueryValueParameter", "k", "Set", "v"],
            ["QueryRemoveParameter", "debug"],
        ];
        for (var i = 0; i < rules.Length; i++)
        {
            for (var j = 0; j < rules[i].Length; j += 2)
            {
                settings[$"Routes:all:Transforms:{i}:{rules[i][j]}"] = rules[i][j + 1];
            }
        }
        await using var proxy = await ProxyHarness.StartAsync(settings, null, upstream);
        await using var client = await RawHttpConnection.ConnectAsync(new IPEndPoint(IPAddress.Loopback, proxy.ProxyUri.Port));

        await client.SendAsync("GET /v1/items/42/a%20b/c?debug=1&k=old&x=1 HTTP/1.1\r\nHost: shop.example\r\nX-Env: test\r\n"
            + "X-A: u\r\nCookie: session=secret\r\nX-Other: kept\r\n\r\n");
        var response = await client.ReadResponseAsync().WaitAsync(Bound);
        var received = response.BodyText;

        Assert.Equal(200, response.Status);
        Assert.StartsWith("GET /api/things/42/a%20b/c?x=1&k=v HTTP/1.1\r\nHost: shop.example\r\n", received);
        Assert.Contains("\r\nX-Env: prod\r\n", received);
        Assert.DoesNotContain("X-Env: test", received);
        Assert.Contains("\r\nX-A: u\r\n", received);
        Assert.Contains("\r\nX-A: v\r\n", received);
        Assert.DoesNotContain("Cookie", received);
        Assert.Contains("\r\nX-Other: kept\r\n", received);
        Assert.Null(response.Header("Server"));
        Assert.Equal("1", response.Header("X-Kept"));
        Assert.Equal("max-age=60", response.Header("Strict-Transport-Security"));
    }

    [Fact]
    public async Task FerrysOwnErrors_GetAlwaysAndFailureRulesOnly()
    {
        var settings = ProxyHarness.Settings(("a", new Uri("http://127.0.0.1:1")));
        settings["Routes:all:Transforms:0:ResponseHeader"] = "X-Always";
        settings["Routes:all:Transforms:0:Set"] = "1";
        settings["Routes:all:Transforms:0:When"] = "Always";
        settings["Routes:all:Transforms:1:ResponseHeader"] = "X-Success";
        settings["Routes:all:Transforms:1:Set"] = "1";
        settings["Routes:all:Transforms:2:ResponseHeader"] = "X-Failure";
        settings["Routes:all:Transforms:2:Set"] = "1";
        settings["Routes:all:Transforms:2:When"] = "Failure";
        await using var proxy = await ProxyHarness.StartAsync(settings, null);

        var response = await proxy.Client.GetAsync("/").WaitAsync(Bound);

        Assert.Equal(HttpStatusCode.BadGateway, response.StatusCode);
        Assert.StartsWith("ferry; error=connection_refused", response.Headers.GetValues("Proxy-Status").Single());
        Assert.Equal("1", response.Headers.GetValues("X-Always").Single());
        Assert.Equal("1", response.Headers.GetValues("X-Failure").Single());
        Assert.False(response.Headers.Contains("X-Success"));
    }

    [Fact]
    public async Task ContentLengthOverTheLimit_Is413BeforeAnythingIsForwarded()
    {
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions { Name = "a" });
        var settings = ProxyHarness.Settings(("a", upstream.Uri));
        settings["Routes:all:MaxRequestBodySize"] = "1k";
        settings["Clusters:c:HealthCheck:Passive:MaxFailures"] = "1";
        await using var proxy = await ProxyHarness.StartAsync(settings, null, upstream);
        await using var client = await RawHttpConnection.ConnectAsync(new IPEndPoint(IPAddress.Loopback, proxy.ProxyUri.Port));

        await client.SendAsync("POST /sink HTTP/1.1\r\nHost: lab\r\nContent-Length: 1025\r\n\r\n");
        var refused = await client.ReadResponseAsync().WaitAsync(Bound);
        var accepted = await proxy.Client.PostAsync("/sink", new ByteArrayContent(new byte[1024])).WaitAsync(Bound);

        Assert.Equal(413, refused.Status);
        Assert.StartsWith("ferry; error=http_request_error", refused.Header("Proxy-Status"));
        Assert.Contains("MaxRequestBodySize (1024 bytes)", refused.Header("Proxy-Status"));
        Assert.Equal(HttpStatusCode.OK, accepted.StatusCode);
        Assert.Equal("received 1024\n", await accepted.Content.ReadAsStringAsync());
        Assert.Equal(1, upstream.RequestsReceived);
        Assert.True(proxy.Destination("a").Health.IsAvailable);
    }

    [Fact]
    public async Task ChunkedBodyGrowingPastTheLimit_AbortsTheAttemptWith413()
    {
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions { Name = "a" });
        var settings = ProxyHarness.Settings(("a", upstream.Uri));
        settings["Routes:all:MaxRequestBodySize"] = "4096";
        settings["Clusters:c:HealthCheck:Passive:MaxFailures"] = "1";
        await using var proxy = await ProxyHarness.StartAsync(settings, null, upstream);
        await using var client = await RawHttpConnection.ConnectAsync(new IPEndPoint(IPAddress.Loopback, proxy.ProxyUri.Port));

        // The first chunk goes through; the second crosses the limit. The last chunk is never sent: the 413 must not
        // wait for the end of a body that may never come.
        await client.SendAsync("POST /sink HTTP/1.1\r\nHost: lab\r\nTransfer-Encoding: chunked\r\n\r\n");
        await client.SendAsync(Chunk(3000));
        await Wait.Until(() => upstream.RequestsReceived == 1, Bound);
        await client.SendAsync(Chunk(3000));
        var refused = await client.ReadResponseAsync().WaitAsync(Bound);

        Assert.Equal(413, refused.Status);
        Assert.StartsWith("ferry; error=http_request_error", refused.Header("Proxy-Status"));
        Assert.Contains("grew past the route's MaxRequestBodySize (4096 bytes)", refused.Header("Proxy-Status"));
        var pool = proxy.Destination("a").Pool;
        await Wait.Until(() => pool.Retired(RetireReason.Error) == 1, Bound);
        Assert.Equal(0, pool.Idle);
        Assert.True(proxy.Destination("a").Health.IsAvailable);
    }

    private static byte[] Chunk(int size) => [.. Encoding.ASCII.GetBytes($"{size:x}\r\n"), .. new byte[size], .. "\r\n"u8];
}
