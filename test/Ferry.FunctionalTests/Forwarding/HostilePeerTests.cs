using System.Net;
using System.Text;
using Ferry.FunctionalTests.Support;
using Ferry.Lab;
using Ferry.Tests.Support;
using static Ferry.FunctionalTests.Support.ProxyAssert;

namespace Ferry.FunctionalTests.Forwarding;

// What a client or a destination sends on purpose to break Ferry: each ends in one classified answer, leaves the
// destination's health alone when it is not at fault, and leaves no connection or port counted that is not open.
public sealed class HostilePeerTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task UpstreamThatStopsReadingAnUpload_LeavesExactAccounting()
    {
        // The destination answers before reading the upload and then reads nothing: the body Ferry was sending is
        // still buffered when the connection is closed.
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions
        {
            Name = "deaf",
            Script = async (x, ct) =>
            {
                await x.WriteRawAsync(Encoding.ASCII.GetBytes("HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"), ct);
                await x.StallAsync(ct);
            },
        });
        await using var proxy = await ProxyHarness.StartAsync(upstream);
        using var content = new ByteArrayContent(new byte[32 * 1024 * 1024]);

        // The 413 is relayed. Kestrel then drains what the client still sends, but a client that is still writing when
        // the client connection closes may see the close before it reads the answer (a broken pipe): what this test
        // checks is that Ferry's side ends cleanly, whichever the client saw.
        try
        {
            var response = await proxy.Client.PostAsync("/upload", content).WaitAsync(Bound);
            Assert.Equal(HttpStatusCode.RequestEntityTooLarge, response.StatusCode);
        }
        catch (HttpRequestException ex) when (ex.InnerException is IOException)
        {
            Assert.Equal(1, upstream.RequestsReceived);
        }
        await AssertNoConnectionCounted(proxy, "deaf");
        Assert.DoesNotContain(proxy.Logs.Lines, l => l.Contains("Unhandled exception", StringComparison.OrdinalIgnoreCase));
    }

    [Fact]
    public async Task ConnectRequest_Is501AndEjectsNobody()
    {
        // One CONNECT used to throw in the head writer once a connection was taken, count as the destination resetting
        // a new connection and, with panic disabled, leave every client a 503.
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions { Name = "innocent" });
        var settings = ProxyHarness.Settings(("innocent", upstream.Uri));
        settings["Clusters:c:Panic:Enabled"] = "false";
        await using var proxy = await ProxyHarness.StartAsync(settings, null, upstream);
        await using var client = await RawHttpConnection.ConnectAsync(new IPEndPoint(IPAddress.Loopback, proxy.ProxyUri.Port));

        await client.SendAsync("CONNECT 127.0.0.1:443 HTTP/1.1\r\nHost: 127.0.0.1:443\r\n\r\n");
        var refused = await client.ReadResponseAsync().WaitAsync(Bound);
        var next = await proxy.Client.GetAsync("/").WaitAsync(Bound);

        Assert.Equal(501, refused.Status);
        Assert.StartsWith("ferry; error=http_request_error", refused.Header("Proxy-Status"));
        Assert.Equal(HttpStatusCode.OK, next.StatusCode);
        Assert.True(proxy.Destination("innocent").IsAvailable);
        Assert.Equal(1, upstream.RequestsReceived);
        Assert.Equal(1, proxy.Destination("innocent").Pool.Opened);
        Assert.Contains(proxy.Logs.Lines, l => l.Contains("http_request_error", StringComparison.Ordinal) && l.Contains("CONNECT", StringComparison.Ordinal));
    }

    [Fact]
    public async Task UpstreamTrailers_AreFilteredForHttp2Clients()
    {
        // RFC 9110 §6.5.1: framing, routing, authentication, response control and content fields never come as
        // trailers; passed on, an HTTP/2 client fails the stream (curl does).
        const string response = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n"
            + "X-Checksum: abc\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\nSet-Cookie: s=1\r\nContent-Type: text/html\r\n"
            + "Content-Encoding: gzip\r\nHost: evil\r\nAuthorization: x\r\nCache-Control: no-store\r\nLocation: /x\r\nConnection: close\r\n"
            + "Trailer: X-Checksum\r\nServer-Timing: db;dur=5\r\n\r\n";
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions
        {
            Name = "t",
            Script = (x, ct) => x.WriteRawAsync(Encoding.ASCII.GetBytes(response), ct),
        });
        var settings = ProxyHarness.Settings(("t", upstream.Uri));
        settings["Listeners:main:Protocols"] = "Http2";
        await using var proxy = await ProxyHarness.StartAsync(settings, null, upstream);
        using var h2 = new HttpClient(new SocketsHttpHandler { UseProxy = false })
        {
            BaseAddress = proxy.ProxyUri,
            DefaultRequestVersion = HttpVersion.Version20,
            DefaultVersionPolicy = HttpVersionPolicy.RequestVersionExact,
        };

        var answer = await h2.GetAsync("/").WaitAsync(Bound);
        var body = await answer.Content.ReadAsStringAsync().WaitAsync(Bound);

        Assert.Equal(HttpStatusCode.OK, answer.StatusCode);
        Assert.Equal("hello", body);
        var trailers = answer.TrailingHeaders.Select(h => h.Key.ToLowerInvariant()).Order().ToArray();
        Assert.Equal(["server-timing", "x-checksum"], trailers);
    }

    [Fact]
    public async Task NonHttpBytesThenFin_IsAProtocolError()
    {
        // An SSH or TLS server on the HTTP port: its greeting is not the start of a response, whatever follows.
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions { Name = "ssh", Script = LabScripts.NonHttpResponse });
        await using var proxy = await ProxyHarness.StartAsync(upstream);

        var response = await proxy.Client.GetAsync("/").WaitAsync(Bound);

        await AssertFailure(response, HttpStatusCode.BadGateway, "http_protocol_error");
        Assert.Equal(0, proxy.Destination("ssh").Replays);
        await AssertNoConnectionCounted(proxy, "ssh");
    }

    [Fact]
    public async Task OversizedTrailerSection_BeforeAnyBodyByte_Is502WithProxyStatus()
    {
        var trailers = string.Concat(Enumerable.Range(0, 200).Select(i => $"X-T-{i}: {new string('v', 500)}\r\n"));
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions
        {
            Name = "trailers",
            Script = (x, ct) => x.WriteRawAsync(Encoding.ASCII.GetBytes(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n" + trailers + "\r\n"), ct),
        });
        await using var proxy = await ProxyHarness.StartAsync(upstream);

        var response = await proxy.Client.GetAsync("/").WaitAsync(Bound);

        await AssertFailure(response, HttpStatusCode.BadGateway, "http_response_trailer_section_size");
        await AssertNoConnectionCounted(proxy, "trailers");
    }

    [Fact]
    public async Task H2cUpgrade_IsNotTunnelled_AndTheNextRequestIsRouted()
    {
        // After a tunnelled 101, every request on the connection would bypass the routes and the access log.
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions { Name = "u" });
        await using var proxy = await ProxyHarness.StartAsync(upstream);
        await using var client = await RawHttpConnection.ConnectAsync(new IPEndPoint(IPAddress.Loopback, proxy.ProxyUri.Port));

        await client.SendAsync("GET /headers HTTP/1.1\r\nHost: u\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
            + "HTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n");
        var first = await client.ReadResponseAsync().WaitAsync(Bound);
        var second = await client.GetAsync("/headers").WaitAsync(Bound);

        Assert.Equal(200, first.Status);
        Assert.DoesNotContain("upgrade", first.BodyText, StringComparison.OrdinalIgnoreCase);
        Assert.Equal(200, second.Status);
        Assert.Equal(2, upstream.RequestsReceived);
    }

    [Fact]
    public async Task WebSocketTunnel_EndsAfterTunnelIdle_WithAnAccessLogLine()
    {
        var time = new ManualTimeProvider();
        var log = Path.Combine(Path.GetTempPath(), $"ferry-tunnel-{Guid.NewGuid():N}.log");
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions { Name = "ws" });
        var settings = ProxyHarness.Settings(("ws", upstream.Uri));
        settings["Clusters:c:Timeouts:TunnelIdle"] = "30s";
        settings["AccessLog:Path"] = log;
        try
        {
            await using (var proxy = await ProxyHarness.StartAsync(settings, time, upstream))
            {
                await using var client = await RawHttpConnection.ConnectAsync(new IPEndPoint(IPAddress.Loopback, proxy.ProxyUri.Port));
                await client.SendAsync("GET /ws HTTP/1.1\r\nHost: ws\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
                var upgrade = await client.ReadResponseAsync().WaitAsync(Bound);
                Assert.Equal(101, upgrade.Status);
                await client.SendAsync(WebSocketFrames.Masked(0x1, "hello"u8.ToArray()));
                Assert.Equal([0x81, 5, .. "hello"u8.ToArray()], await client.ReadExactlyAsync(7).WaitAsync(Bound));

                var ended = client.ReadToEndAsync();
                for (var i = 0; i < 300 && !ended.IsCompleted; i++)
                {
                    time.Advance(TimeSpan.FromSeconds(5));
                    await Task.WhenAny(ended, Task.Delay(20));
                }
                await ended.WaitAsync(Bound);
                await AssertNoConnectionCounted(proxy, "ws");
            }

            using var line = System.Text.Json.JsonDocument.Parse(File.ReadAllLines(log).Single());
            Assert.Equal(101, line.RootElement.GetProperty("status").GetInt32());
            Assert.Equal("idle_timeout", line.RootElement.GetProperty("tunnel").GetString());
            Assert.Equal(11, line.RootElement.GetProperty("bytes_in").GetInt64());
            Assert.Equal(7, line.RootElement.GetProperty("bytes_out").GetInt64());
        }
        finally
        {
            File.Delete(log);
        }
    }

    [Theory]
    [InlineData("Connection: X-Api-Key, close\r\n")]
    [InlineData("Connection: keep-alive, X-Api-Key\r\n")]
    [InlineData("Connection: X-Api-Key\r\nConnection: close\r\n")]
    [InlineData("Connection: close\r\nConnection: X-Api-Key\r\n")]
    [InlineData("Connection: X-Api-Key, x-other\r\n")]
    public async Task FieldsNamedByConnection_AreRemovedWhateverElseItSays(string connection)
    {
        // Kestrel shortens "X-Api-Key, close" to "close" before the application sees it.
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions { Name = "u" });
        await using var proxy = await ProxyHarness.StartAsync(upstream);
        await using var client = await RawHttpConnection.ConnectAsync(new IPEndPoint(IPAddress.Loopback, proxy.ProxyUri.Port));

        await client.SendAsync($"GET /headers HTTP/1.1\r\nHost: u\r\n{connection}X-Api-Key: secret\r\nX-Kept: 1\r\n\r\n");
        var response = await client.ReadResponseAsync().WaitAsync(Bound);

        Assert.Equal(200, response.Status);
        Assert.Contains("X-Kept: 1", response.BodyText);
        Assert.DoesNotContain("secret", response.BodyText);
        if (!connection.Contains("close", StringComparison.Ordinal))
        {
            // The next request on the connection names nothing: its fields all pass.
            await client.SendAsync("GET /headers HTTP/1.1\r\nHost: u\r\nConnection: keep-alive\r\nX-Api-Key: again\r\n\r\n");
            var next = await client.ReadResponseAsync().WaitAsync(Bound);
            Assert.Contains("X-Api-Key: again", next.BodyText);
        }
    }

    [Fact]
    public async Task Http2Connect_Is501BeforeAnyConnection()
    {
        // A WebSocket over HTTP/2 is an extended CONNECT (RFC 8441): it has no :path Ferry could send as HTTP/1.1.
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions { Name = "u" });
        var settings = ProxyHarness.Settings(("u", upstream.Uri));
        settings["Listeners:main:Protocols"] = "Http2";
        settings["Clusters:c:Panic:Enabled"] = "false";
        await using var proxy = await ProxyHarness.StartAsync(settings, null, upstream);
        using var socket = new System.Net.WebSockets.ClientWebSocket();
        socket.Options.HttpVersion = HttpVersion.Version20;
        socket.Options.HttpVersionPolicy = HttpVersionPolicy.RequestVersionExact;
        socket.Options.CollectHttpResponseDetails = true;
        using var invoker = new HttpMessageInvoker(new SocketsHttpHandler { UseProxy = false });

        var uri = new UriBuilder(proxy.ProxyUri) { Scheme = "ws", Path = "/ws" }.Uri;
        await Assert.ThrowsAnyAsync<Exception>(() => socket.ConnectAsync(uri, invoker, CancellationToken.None).WaitAsync(Bound));

        Assert.Equal(HttpStatusCode.NotImplemented, socket.HttpStatusCode);
        Assert.Equal(0, upstream.RequestsReceived);
        Assert.Equal(0, proxy.Destination("u").Pool.Opened);
        Assert.True(proxy.Destination("u").IsAvailable);
    }

    private static async Task AssertNoConnectionCounted(ProxyHarness proxy, string destination)
    {
        var pool = proxy.Destination(destination).Pool;
        await Wait.Until(() => pool.Active == 0);
        Assert.Equal(0, pool.Idle);
        Assert.Equal(0, pool.Ports.Busiest().Open);
    }
}
