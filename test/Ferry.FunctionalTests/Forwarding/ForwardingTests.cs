using System.Net;
using System.Net.Http.Headers;
using System.Text;
using Ferry.FunctionalTests.Support;
using Ferry.Lab;
using Ferry.Upstream;

namespace Ferry.FunctionalTests.Forwarding;

public sealed class ForwardingTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task Get_IsAnsweredByTheUpstreamOverHttp11()
    {
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions { Name = "a" });
        await using var proxy = await ProxyHarness.StartAsync(upstream);

        var response = await proxy.Client.GetAsync("/").WaitAsync(Bound);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("hello from a\n", await response.Content.ReadAsStringAsync());
        Assert.Equal("a", response.Headers.GetValues("X-Upstream").Single());
        Assert.False(response.Headers.Contains("Proxy-Status"));
    }

    [Fact]
    public async Task RoundRobin_AlternatesBetweenDestinations()
    {
        await using var a = LabUpstream.Start(new LabUpstreamOptions { Name = "a" });
        await using var b = LabUpstream.Start(new LabUpstreamOptions { Name = "b" });
        await using var proxy = await ProxyHarness.StartAsync(a, b);

        var seen = new List<string>();
        for (var i = 0; i < 6; i++)
        {
            var response = await proxy.Client.GetAsync("/").WaitAsync(Bound);
            seen.Add(response.Headers.GetValues("X-Upstream").Single());
        }

        Assert.Equal(["a", "b", "a", "b", "a", "b"], seen);
    }

    [Fact]
    public async Task Backup_ServesOnlyWhenThePrimaryIsDown()
    {
        await using var backup = LabUpstream.Start(new LabUpstreamOptions { Name = "backup" });
        await using var primary = LabUpstream.Start(new LabUpstreamOptions { Name = "primary" });
        var settings = ProxyHarness.Settings(("primary", primary.Uri), ("backup", backup.Uri));
        settings["Clusters:c:Destinations:backup:Backup"] = "true";
        await using var proxy = await ProxyHarness.StartAsync(settings, null, primary, backup);

        for (var i = 0; i < 3; i++)
        {
            var response = await proxy.Client.GetAsync("/").WaitAsync(Bound);
            Assert.Equal("primary", response.Headers.GetValues("X-Upstream").Single());
        }
        await primary.DisposeAsync();
        for (var i = 0; i < 3; i++)
        {
            var response = await proxy.Client.GetAsync("/").WaitAsync(Bound);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            Assert.Equal("backup", response.Headers.GetValues("X-Upstream").Single());
        }
    }

    [Fact]
    public async Task Head_HasHeadersAndNoBody()
    {
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions { Name = "a" });
        await using var proxy = await ProxyHarness.StartAsync(upstream);

        var response = await proxy.Client.SendAsync(new HttpRequestMessage(HttpMethod.Head, "/bytes/1000")).WaitAsync(Bound);
        var second = await proxy.Client.GetAsync("/").WaitAsync(Bound);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(1000, response.Content.Headers.ContentLength);
        Assert.Empty(await response.Content.ReadAsByteArrayAsync());
        Assert.Equal("hello from a\n", await second.Content.ReadAsStringAsync());
        Assert.Equal(1, upstream.ConnectionsAccepted);
    }

    [Theory]
    [InlineData("POST", true)]
    [InlineData("POST", false)]
    [InlineData("PUT", true)]
    [InlineData("PUT", false)]
    public async Task RequestBodies_AreForwardedWithLengthOrChunked(string method, bool withLength)
    {
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions { Name = "a" });
        await using var proxy = await ProxyHarness.StartAsync(upstream);
        var payload = Encoding.ASCII.GetBytes(string.Concat(Enumerable.Repeat("0123456789", 5000)));

        HttpContent content = withLength ? new ByteArrayContent(payload) : new StreamContent(new UnknownLengthStream(payload));
        var response = await proxy.Client.SendAsync(new HttpRequestMessage(new HttpMethod(method), "/echo") { Content = content }).WaitAsync(Bound);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(payload, await response.Content.ReadAsByteArrayAsync());
    }

    [Fact]
    public async Task EarlyResponseToAnUpload_FinishesTheUpload_AndKeepsBothConnections()
    {
        // The upstream answers before reading the body (as nginx's `return` does) and keeps the connection.
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions { Name = "a" });
        await using var proxy = await ProxyHarness.StartAsync(upstream);
        using var client = new HttpClient(new SocketsHttpHandler { MaxConnectionsPerServer = 1, UseProxy = false }) { BaseAddress = proxy.ProxyUri };
        var body = new byte[1024 * 1024];

        for (var i = 0; i < 3; i++)
        {
            using var response = await client.PostAsync("/status/201", new ByteArrayContent(body)).WaitAsync(Bound);
            Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        }

        Assert.Equal(1, upstream.ConnectionsAccepted);
        Assert.Equal(3, upstream.RequestCount("POST", "/status/201"));
    }

    [Fact]
    public async Task ChunkedResponse_IsDecodedAndReframed()
    {
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions { Name = "a" });
        await using var proxy = await ProxyHarness.StartAsync(upstream);

        var response = await proxy.Client.GetAsync("/chunked/100000").WaitAsync(Bound);
        var body = await response.Content.ReadAsByteArrayAsync();
        var again = await proxy.Client.GetAsync("/").WaitAsync(Bound);

        Assert.Equal(100000, body.Length);
        Assert.Equal(HttpStatusCode.OK, again.StatusCode);
        Assert.Equal(1, upstream.ConnectionsAccepted);
    }

    [Fact]
    public async Task InformationalResponses_AreConsumedAndExpectContinueWorks()
    {
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions { Name = "a" });
        await using var proxy = await ProxyHarness.StartAsync(upstream);

        var hints = await proxy.Client.GetAsync("/early-hints").WaitAsync(Bound);
        var request = new HttpRequestMessage(HttpMethod.Post, "/echo") { Content = new StringContent("continue me") };
        request.Headers.ExpectContinue = true;
        var echoed = await proxy.Client.SendAsync(request).WaitAsync(Bound);

        Assert.Equal(HttpStatusCode.OK, hints.StatusCode);
        Assert.Equal(HttpStatusCode.OK, echoed.StatusCode);
        Assert.Equal("continue me", await echoed.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task HopByHopHeaders_NeverCrossAndForwardedHeadersAreReplaced()
    {
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions { Name = "a" });
        await using var proxy = await ProxyHarness.StartAsync(upstream);

        var request = new HttpRequestMessage(HttpMethod.Get, "/headers");
        request.Headers.Connection.Add("X-Private");
        request.Headers.Add("X-Private", "secret");
        request.Headers.Add("Keep-Alive", "timeout=5");
        request.Headers.Add("Proxy-Connection", "keep-alive");
        request.Headers.Add("X-Forwarded-For", "203.0.113.7");
        request.Headers.Add("X-Kept", "yes");
        request.Headers.Host = "app.example";
        var text = await (await proxy.Client.SendAsync(request).WaitAsync(Bound)).Content.ReadAsStringAsync();

        Assert.StartsWith("GET /headers HTTP/1.1\r\n", text);
        Assert.Contains("Host: app.example\r\n", text);
        Assert.Contains("X-Kept: yes\r\n", text);
        Assert.Contains("X-Forwarded-For: 127.0.0.1\r\n", text);
        Assert.Contains("X-Forwarded-Proto: http\r\n", text);
        Assert.Contains("X-Forwarded-Host: app.example\r\n", text);
        Assert.DoesNotContain("X-Private", text, StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotContain("Keep-Alive", text, StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotContain("Proxy-Connection", text, StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotContain("Connection:", text, StringComparison.OrdinalIgnoreCase);
    }

    [Fact]
    public async Task ResponseHopByHopHeaders_AreRemoved()
    {
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions
        {
            Name = "a",
            Script = (x, ct) => x.WriteRawAsync(Encoding.ASCII.GetBytes(
                "HTTP/1.1 200 OK\r\nConnection: X-Secret\r\nX-Secret: 1\r\nKeep-Alive: timeout=30\r\nX-Public: 2\r\nContent-Length: 2\r\n\r\nok"), ct),
        });
        await using var proxy = await ProxyHarness.StartAsync(upstream);

        var response = await proxy.Client.GetAsync("/").WaitAsync(Bound);

        Assert.Equal("ok", await response.Content.ReadAsStringAsync());
        Assert.Equal("2", response.Headers.GetValues("X-Public").Single());
        Assert.False(response.Headers.Contains("X-Secret"));
        Assert.False(response.Headers.Contains("Keep-Alive"));
    }

    [Fact]
    public async Task PathPrefix_IsRemovedAndRawTargetKept()
    {
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions { Name = "a" });
        var settings = ProxyHarness.Settings(("a", upstream.Uri));
        settings["Routes:all:Match:PathPrefix"] = "/api";
        settings["Routes:all:PathRemovePrefix"] = "/api";
        await using var proxy = await ProxyHarness.StartAsync(settings, null, upstream);

        var stripped = await (await proxy.Client.GetAsync("/api/headers?q=a%20b").WaitAsync(Bound)).Content.ReadAsStringAsync();
        var other = await proxy.Client.GetAsync("/apix/headers").WaitAsync(Bound);

        Assert.StartsWith("GET /headers?q=a%20b HTTP/1.1\r\n", stripped);
        Assert.Equal(HttpStatusCode.NotFound, other.StatusCode);
        Assert.StartsWith("ferry; error=destination_not_found", other.Headers.GetValues("Proxy-Status").Single());
    }

    [Fact]
    public async Task Http10Client_IsAnsweredAndTheUpstreamConnectionIsKeptAlive()
    {
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions { Name = "a" });
        await using var proxy = await ProxyHarness.StartAsync(upstream);

        for (var i = 1; i <= 3; i++)
        {
            var text = await RawRequest.SendAsync(proxy.ProxyUri, "GET / HTTP/1.0\r\nHost: x\r\n\r\n");
            Assert.StartsWith("HTTP/1.1 200", text);
            Assert.Contains($"X-Connection-Request: {i}", text);
            Assert.EndsWith("hello from a\n", text);
        }
        Assert.Equal(1, upstream.ConnectionsAccepted);
    }

    [Fact]
    public async Task Http2Client_IsForwardedAsHttp11_WithBodiesReframed()
    {
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions { Name = "a" });
        var settings = ProxyHarness.Settings(("a", upstream.Uri));
        settings["Listeners:main:Protocols"] = "Http2";
        await using var proxy = await ProxyHarness.StartAsync(settings, null, upstream);
        using var h2 = new HttpClient(new SocketsHttpHandler { UseProxy = false })
        {
            BaseAddress = proxy.ProxyUri,
            DefaultRequestVersion = HttpVersion.Version20,
            DefaultVersionPolicy = HttpVersionPolicy.RequestVersionExact,
        };

        var head = await h2.GetAsync("/headers").WaitAsync(Bound);
        var echo = await h2.PostAsync("/echo", new StreamContent(new UnknownLengthStream(Encoding.ASCII.GetBytes("over h2")))).WaitAsync(Bound);

        Assert.Equal(HttpVersion.Version20, head.Version);
        Assert.StartsWith("GET /headers HTTP/1.1\r\n", await head.Content.ReadAsStringAsync());
        Assert.Equal("over h2", await echo.Content.ReadAsStringAsync());
        Assert.Equal(1, upstream.ConnectionsAccepted);
    }

    [Fact]
    public async Task TenThousandSequentialRequests_UseOneUpstreamConnection()
    {
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions { Name = "a" });
        await using var proxy = await ProxyHarness.StartAsync(upstream);
        using var client = new HttpClient(new SocketsHttpHandler { MaxConnectionsPerServer = 1, UseProxy = false }) { BaseAddress = proxy.ProxyUri };

        for (var i = 0; i < 10_000; i++)
        {
            using var response = await client.GetAsync("/").WaitAsync(Bound);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            await response.Content.ReadAsByteArrayAsync();
        }

        Assert.Equal(1, upstream.ConnectionsAccepted);
        var pool = proxy.Destination("a").Pool;
        Assert.Equal(1, pool.Opened);
        Assert.Equal(9_999, pool.Reused);
    }

    [Fact]
    public async Task WebSocket_IsTunnelled()
    {
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions { Name = "a" });
        await using var proxy = await ProxyHarness.StartAsync(upstream);
        using var ws = new System.Net.WebSockets.ClientWebSocket();
        using var cts = new CancellationTokenSource(Bound);

        await ws.ConnectAsync(new Uri($"ws://{proxy.ProxyUri.Authority}/ws"), cts.Token);
        var messages = new List<string>();
        foreach (var text in new[] { "hello", new string('x', 70_000) })
        {
            await ws.SendAsync(Encoding.UTF8.GetBytes(text), System.Net.WebSockets.WebSocketMessageType.Text, true, cts.Token);
            var buffer = new byte[100_000];
            var received = 0;
            System.Net.WebSockets.WebSocketReceiveResult result;
            do
            {
                result = await ws.ReceiveAsync(new ArraySegment<byte>(buffer, received, buffer.Length - received), cts.Token);
                received += result.Count;
            } while (!result.EndOfMessage);
            messages.Add(Encoding.UTF8.GetString(buffer, 0, received));
        }
        await ws.CloseAsync(System.Net.WebSockets.WebSocketCloseStatus.NormalClosure, "bye", cts.Token);

        Assert.Equal("hello", messages[0]);
        Assert.Equal(70_000, messages[1].Length);
        Assert.Equal(System.Net.WebSockets.WebSocketState.Closed, ws.State);
    }

    [Fact]
    public async Task ClientAbort_ClosesTheUpstreamConnectionInsteadOfPoolingIt()
    {
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions { Name = "a" });
        await using var proxy = await ProxyHarness.StartAsync(upstream);

        using (var cts = new CancellationTokenSource())
        {
            var pending = proxy.Client.GetAsync("/delay/60000", cts.Token);
            await Wait.Until(() => upstream.RequestsReceived == 1);
            cts.Cancel();
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => pending);
        }

        var pool = proxy.Destination("a").Pool;
        await Wait.Until(() => pool.Retired(RetireReason.Error) == 1);
        Assert.Equal(0, pool.Idle);
        Assert.Equal(0, pool.Active);
    }

    // A body whose length HttpClient cannot know, so that it is sent chunked.
    private sealed class UnknownLengthStream(byte[] data) : MemoryStream(data)
    {
        public override bool CanSeek => false;
    }
}
