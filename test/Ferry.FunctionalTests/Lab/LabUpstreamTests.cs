using Ferry.FunctionalTests.Support;
using System.Net.Sockets;
using System.Text;
using Ferry.Lab;
using Ferry.Tests.Support;

namespace Ferry.FunctionalTests.Lab;

public sealed class LabUpstreamTests
{
    private static readonly TimeSpan Timeout = RawHttpConnection.Timeout;

    [Fact]
    public async Task Root_answers_hello_with_the_upstream_name()
    {
        await using var lab = LabUpstream.Start(new LabUpstreamOptions { Name = "alpha" });
        await using var client = await RawHttpConnection.ConnectAsync(lab.EndPoint);

        var response = await client.GetAsync("/");

        Assert.Equal(200, response.Status);
        Assert.Equal("hello from alpha\n", response.BodyText);
        Assert.Equal("alpha", response.Header("X-Upstream"));
        Assert.Equal("1", response.Header("X-Connection-Request"));
        Assert.StartsWith("text/plain", response.Header("Content-Type"));
        Assert.Equal($"http://127.0.0.1:{lab.EndPoint.Port}/", lab.Uri.ToString());
        Assert.NotEqual(0, lab.EndPoint.Port);
    }

    [Fact]
    public async Task Keep_alive_serves_two_requests_on_one_connection()
    {
        await using var lab = LabUpstream.Start(new LabUpstreamOptions());
        await using var client = await RawHttpConnection.ConnectAsync(lab.EndPoint);

        var first = await client.GetAsync("/");
        var second = await client.GetAsync("/status/201");

        Assert.Equal("1", first.Header("X-Connection-Request"));
        Assert.Equal("2", second.Header("X-Connection-Request"));
        Assert.Equal(201, second.Status);
        Assert.Null(second.Header("Connection"));
        Assert.Equal(1, lab.ConnectionsAccepted);
        Assert.Equal(2, lab.RequestsReceived);
        Assert.Equal(1, lab.OpenConnections);
    }

    [Theory]
    [InlineData(false, ConnectionEnd.Fin)]
    [InlineData(true, ConnectionEnd.Reset)]
    public async Task Idle_timeout_closes_after_the_timeout_and_not_before(bool reset, ConnectionEnd expected)
    {
        var time = new ManualTimeProvider();
        var idle = TimeSpan.FromSeconds(5);
        await using var lab = LabUpstream.Start(new LabUpstreamOptions
        {
            TimeProvider = time, IdleTimeout = idle, ResetOnIdleTimeout = reset,
        });
        await using var client = await RawHttpConnection.ConnectAsync(lab.EndPoint);
        await client.GetAsync("/");

        await time.WaitForTimersAsync(1).WaitAsync(Timeout);
        time.Advance(idle - TimeSpan.FromMilliseconds(1));
        var second = await client.GetAsync("/");
        Assert.Equal("2", second.Header("X-Connection-Request"));

        await time.WaitForTimersAsync(1).WaitAsync(Timeout);
        time.Advance(idle);
        await client.AssertEndsWithoutBytesAsync(expected);
    }

    [Fact]
    public async Task Event_loop_closes_idle_connections_when_it_wakes_between_the_timeout_and_one_interval_later()
    {
        var time = new ManualTimeProvider();
        await using var lab = LabUpstream.Start(new LabUpstreamOptions
        {
            TimeProvider = time, IdleTimeout = TimeSpan.FromSeconds(2), IdleCheckInterval = TimeSpan.FromSeconds(1), IdleCheckOnTraffic = true,
        });
        await using var a = await RawHttpConnection.ConnectAsync(lab.EndPoint);
        await a.GetAsync("/");
        await Wait.Until(() => lab.IdleConnections == 1);

        time.Advance(TimeSpan.FromSeconds(1.5));
        // Traffic on another connection wakes the loop at 1.5 s: its next wake-up is at 2.5 s.
        await using var b = await RawHttpConnection.ConnectAsync(lab.EndPoint);
        await b.GetAsync("/");
        await Wait.Until(() => lab.IdleConnections == 2);
        time.Advance(TimeSpan.FromSeconds(0.7));
        Assert.Equal(2, lab.IdleConnections); // idle 2.2 s, past the timeout, but the loop sleeps
        time.Advance(TimeSpan.FromSeconds(0.3));
        await a.AssertEndsWithoutBytesAsync(ConnectionEnd.Fin);

        // Quiet now: the loop wakes every second and closes b exactly at its timeout (3.5 s).
        time.Advance(TimeSpan.FromSeconds(0.9));
        Assert.Equal(1, lab.IdleConnections);
        time.Advance(TimeSpan.FromSeconds(0.1));
        await b.AssertEndsWithoutBytesAsync(ConnectionEnd.Fin);
    }

    [Fact]
    public async Task Announced_idle_timeout_can_be_shorter_than_the_enforced_one_as_Node_does()
    {
        var time = new ManualTimeProvider();
        await using var lab = LabUpstream.Start(new LabUpstreamOptions
        {
            TimeProvider = time, AnnounceKeepAlive = true,
            IdleTimeout = TimeSpan.FromSeconds(6), AnnouncedIdleTimeout = TimeSpan.FromSeconds(5),
        });
        await using var client = await RawHttpConnection.ConnectAsync(lab.EndPoint);

        Assert.Equal("timeout=5", (await client.GetAsync("/")).Header("Keep-Alive"));
        await time.WaitForTimersAsync(1).WaitAsync(Timeout);
        time.Advance(TimeSpan.FromSeconds(5.9));
        Assert.Equal("2", (await client.GetAsync("/")).Header("X-Connection-Request"));
        await time.WaitForTimersAsync(1).WaitAsync(Timeout);
        time.Advance(TimeSpan.FromSeconds(6));
        await client.AssertEndsWithoutBytesAsync(ConnectionEnd.Fin);
    }

    [Fact]
    public async Task Keep_alive_announcement_gives_timeout_and_remaining_requests()
    {
        await using var lab = LabUpstream.Start(new LabUpstreamOptions
        {
            AnnounceKeepAlive = true, IdleTimeout = TimeSpan.FromSeconds(5), MaxRequestsPerConnection = 100,
        });
        await using var client = await RawHttpConnection.ConnectAsync(lab.EndPoint);

        Assert.Equal("timeout=5, max=99", (await client.GetAsync("/")).Header("Keep-Alive"));
        Assert.Equal("timeout=5, max=98", (await client.GetAsync("/")).Header("Keep-Alive"));
    }

    [Fact]
    public async Task Max_requests_announced_closes_with_connection_close_then_fin()
    {
        await using var lab = LabUpstream.Start(new LabUpstreamOptions { MaxRequestsPerConnection = 2 });
        await using var client = await RawHttpConnection.ConnectAsync(lab.EndPoint);

        Assert.Null((await client.GetAsync("/")).Header("Connection"));
        Assert.Equal("close", (await client.GetAsync("/")).Header("Connection"));
        await client.AssertEndsWithoutBytesAsync(ConnectionEnd.Fin);
    }

    [Fact]
    public async Task Max_requests_unannounced_closes_silently_after_the_last_response()
    {
        await using var lab = LabUpstream.Start(new LabUpstreamOptions
        {
            MaxRequestsPerConnection = 2, AnnounceLastRequest = false, AnnounceKeepAlive = true, IdleTimeout = TimeSpan.FromSeconds(60),
        });
        await using var client = await RawHttpConnection.ConnectAsync(lab.EndPoint);

        await client.GetAsync("/");
        var last = await client.GetAsync("/");

        Assert.Null(last.Header("Connection"));
        Assert.Equal("timeout=60", last.Header("Keep-Alive"));
        await client.AssertEndsWithoutBytesAsync(ConnectionEnd.Fin);
    }

    [Fact]
    public async Task Keep_alive_off_closes_after_every_response()
    {
        await using var lab = LabUpstream.Start(new LabUpstreamOptions { KeepAlive = false });
        await using var client = await RawHttpConnection.ConnectAsync(lab.EndPoint);

        Assert.Equal("close", (await client.GetAsync("/")).Header("Connection"));
        await client.AssertEndsWithoutBytesAsync(ConnectionEnd.Fin);
    }

    [Fact]
    public async Task Http10_closes_unless_keep_alive_is_asked_for()
    {
        await using var lab = LabUpstream.Start(new LabUpstreamOptions());
        await using (var keepAlive = await RawHttpConnection.ConnectAsync(lab.EndPoint))
        {
            await keepAlive.SendAsync("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
            Assert.Equal("keep-alive", (await keepAlive.ReadResponseAsync()).Header("Connection"));
            await keepAlive.SendAsync("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
            Assert.Equal("2", (await keepAlive.ReadResponseAsync()).Header("X-Connection-Request"));
        }
        await using var plain = await RawHttpConnection.ConnectAsync(lab.EndPoint);
        await plain.SendAsync("GET /chunked/100 HTTP/1.0\r\n\r\n");
        var response = await plain.ReadResponseAsync();

        Assert.Equal("close", response.Header("Connection"));
        Assert.Null(response.Header("Transfer-Encoding"));
        Assert.Equal(100, response.Body.Length);
    }

    [Fact]
    public async Task Bytes_and_chunked_routes_send_the_pattern()
    {
        await using var lab = LabUpstream.Start(new LabUpstreamOptions());
        await using var client = await RawHttpConnection.ConnectAsync(lab.EndPoint);

        var fixedLength = await client.GetAsync("/bytes/100000");
        var chunked = await client.GetAsync("/chunked/100000");
        var smallChunked = await client.GetAsync("/chunked/10");

        byte[] expected = Enumerable.Range(0, 100000).Select(i => LabRoutes.PatternByte(i)).ToArray();
        Assert.Equal("100000", fixedLength.Header("Content-Length"));
        Assert.Equal(expected, fixedLength.Body);
        Assert.Equal("chunked", chunked.Header("Transfer-Encoding"));
        Assert.Equal(expected, chunked.Body);
        Assert.True(chunked.ChunkCount > 1);
        Assert.Equal("abcdefghij", smallChunked.BodyText);
        Assert.True(smallChunked.ChunkCount > 1);
    }

    [Fact]
    public async Task Echo_streams_one_megabyte_back_with_content_length()
    {
        await using var lab = LabUpstream.Start(new LabUpstreamOptions());
        await using var client = await RawHttpConnection.ConnectAsync(lab.EndPoint);
        byte[] body = new byte[1024 * 1024];
        new Random(42).NextBytes(body);

        var sending = Task.Run(async () =>
        {
            await client.SendAsync($"POST /echo HTTP/1.1\r\nHost: lab\r\nContent-Length: {body.Length}\r\n\r\n");
            await client.SendAsync(body);
        });
        var response = await client.ReadResponseAsync();
        await sending.WaitAsync(Timeout);

        Assert.Equal(body.Length.ToString(), response.Header("Content-Length"));
        Assert.Equal(body, response.Body);
        Assert.Equal("2", (await client.GetAsync("/")).Header("X-Connection-Request"));
    }

    [Fact]
    public async Task Echo_answers_a_chunked_request_chunked_and_sink_counts()
    {
        await using var lab = LabUpstream.Start(new LabUpstreamOptions());
        await using var client = await RawHttpConnection.ConnectAsync(lab.EndPoint);

        await client.SendAsync("POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n");
        var echo = await client.ReadResponseAsync();
        await client.SendAsync("POST /sink HTTP/1.1\r\nContent-Length: 7\r\n\r\n1234567");
        var sink = await client.ReadResponseAsync();

        Assert.Equal("chunked", echo.Header("Transfer-Encoding"));
        Assert.Equal("hello world", echo.BodyText);
        Assert.Equal("received 7\n", sink.BodyText);
        Assert.Equal(2, lab.RequestCount("POST", "/echo") + lab.RequestCount("POST", "/sink"));
    }

    [Fact]
    public async Task Unread_request_body_is_drained_before_the_next_request()
    {
        await using var lab = LabUpstream.Start(new LabUpstreamOptions());
        await using var client = await RawHttpConnection.ConnectAsync(lab.EndPoint);

        await client.SendAsync("POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nGET /x");
        Assert.Equal(200, (await client.ReadResponseAsync()).Status);
        var next = await client.GetAsync("/status/202");

        Assert.Equal(202, next.Status);
        Assert.Equal(0, lab.RequestCount("GET", "/x"));
    }

    [Fact]
    public async Task Expect_continue_gets_100_before_the_body_is_sent()
    {
        await using var lab = LabUpstream.Start(new LabUpstreamOptions());
        await using var client = await RawHttpConnection.ConnectAsync(lab.EndPoint);

        await client.SendAsync("POST /echo HTTP/1.1\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n");
        var interim = await client.ReadResponseAsync();
        await client.SendAsync("ping");
        var final = await client.ReadResponseAsync();

        Assert.Equal(100, interim.Status);
        Assert.Equal("ping", final.BodyText);
        Assert.Null(final.Header("Connection"));
    }

    [Fact]
    public async Task Expect_continue_unanswered_closes_the_connection()
    {
        await using var lab = LabUpstream.Start(new LabUpstreamOptions());
        await using var client = await RawHttpConnection.ConnectAsync(lab.EndPoint);

        await client.SendAsync("POST / HTTP/1.1\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n");
        var response = await client.ReadResponseAsync();

        Assert.Equal(200, response.Status);
        Assert.Equal("close", response.Header("Connection"));
        await client.AssertEndsWithoutBytesAsync(ConnectionEnd.Fin);
    }

    [Fact]
    public async Task Head_has_the_headers_of_get_and_no_body()
    {
        await using var lab = LabUpstream.Start(new LabUpstreamOptions());
        await using var client = await RawHttpConnection.ConnectAsync(lab.EndPoint);

        var head = await client.GetAsync("/bytes/50", "HEAD");
        var headChunked = await client.GetAsync("/chunked/50", "HEAD");
        var next = await client.GetAsync("/");

        Assert.Equal("50", head.Header("Content-Length"));
        Assert.Equal("chunked", headChunked.Header("Transfer-Encoding"));
        Assert.Equal("hello from upstream\n", next.BodyText);
        Assert.Equal("3", next.Header("X-Connection-Request"));
    }

    [Fact]
    public async Task Delay_waits_on_the_time_provider()
    {
        var time = new ManualTimeProvider();
        await using var lab = LabUpstream.Start(new LabUpstreamOptions { TimeProvider = time });
        await using var client = await RawHttpConnection.ConnectAsync(lab.EndPoint);

        await client.SendAsync("GET /delay/1500 HTTP/1.1\r\n\r\n");
        await time.WaitForTimersAsync(1).WaitAsync(Timeout);
        Assert.Equal(0, client.Socket.Available);
        time.Advance(TimeSpan.FromMilliseconds(1500));

        Assert.Equal("delayed 1500 ms\n", (await client.ReadResponseAsync()).BodyText);
    }

    [Fact]
    public async Task Headers_route_echoes_the_request_head()
    {
        await using var lab = LabUpstream.Start(new LabUpstreamOptions());
        await using var client = await RawHttpConnection.ConnectAsync(lab.EndPoint);
        const string request = "GET /headers?q=1 HTTP/1.1\r\nHost: example.test\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n";

        await client.SendAsync(request);

        Assert.Equal(request, (await client.ReadResponseAsync()).BodyText);
        Assert.Equal(1, lab.RequestCount("GET", "/headers"));
    }

    [Fact]
    public async Task Early_hints_sends_103_then_200()
    {
        await using var lab = LabUpstream.Start(new LabUpstreamOptions());
        await using var client = await RawHttpConnection.ConnectAsync(lab.EndPoint);

        await client.SendAsync("GET /early-hints HTTP/1.1\r\n\r\n");
        var hints = await client.ReadResponseAsync();
        var final = await client.ReadResponseAsync();

        Assert.Equal(103, hints.Status);
        Assert.Contains("rel=preload", hints.Header("Link"));
        Assert.Equal(200, final.Status);
    }

    [Theory]
    [InlineData("GET /\r\n\r\n", 400)]
    [InlineData("GET / HTTP/1.1\r\nBad Header: x\r\n\r\n", 400)]
    [InlineData("GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400)]
    [InlineData("GET / HTTP/1.1\r\nContent-Length: abc\r\n\r\n", 400)]
    [InlineData("GET / HTTP/2.0\r\n\r\n", 505)]
    [InlineData("GET / HTTP/1.1\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\n", 400)]
    public async Task Malformed_requests_get_an_error_and_a_close(string request, int status)
    {
        await using var lab = LabUpstream.Start(new LabUpstreamOptions());
        await using var client = await RawHttpConnection.ConnectAsync(lab.EndPoint);

        await client.SendAsync(request);
        var response = await client.ReadResponseAsync();

        Assert.Equal(status, response.Status);
        Assert.Equal("close", response.Header("Connection"));
        await client.AssertEndsWithoutBytesAsync(ConnectionEnd.Fin);
    }

    [Fact]
    public async Task Oversized_request_head_gets_431()
    {
        await using var lab = LabUpstream.Start(new LabUpstreamOptions());
        await using var client = await RawHttpConnection.ConnectAsync(lab.EndPoint);

        await client.SendAsync("GET / HTTP/1.1\r\nX-Big: " + new string('a', LabRequestHead.MaxHeadBytes) + "\r\n\r\n");

        Assert.Equal(431, (await client.ReadResponseAsync()).Status);
    }

    [Fact]
    public async Task Single_request_slot_stops_accepting_while_busy()
    {
        var time = new ManualTimeProvider();
        await using var lab = LabUpstream.Start(new LabUpstreamOptions
        {
            TimeProvider = time, MaxConcurrentRequests = 1, HandlerDelay = TimeSpan.FromSeconds(1), Backlog = 4,
        });
        await using var first = await RawHttpConnection.ConnectAsync(lab.EndPoint);
        await first.SendAsync("GET / HTTP/1.1\r\n\r\n");
        await time.WaitForTimersAsync(1).WaitAsync(Timeout);

        // The kernel completes the handshake into the backlog; the Lab does not accept while its slot is busy.
        await using var second = await RawHttpConnection.ConnectAsync(lab.EndPoint);
        await second.SendAsync("GET / HTTP/1.1\r\n\r\n");
        Assert.Equal(1, lab.ConnectionsAccepted);

        time.Advance(TimeSpan.FromSeconds(1));
        Assert.Equal(200, (await first.ReadResponseAsync()).Status);
        await time.WaitForTimersAsync(1).WaitAsync(Timeout);
        time.Advance(TimeSpan.FromSeconds(1));
        Assert.Equal(200, (await second.ReadResponseAsync()).Status);
        Assert.Equal(2, lab.ConnectionsAccepted);
    }

    [Fact]
    public async Task Tiny_backlog_with_a_busy_handler_drops_new_connections()
    {
        var time = new ManualTimeProvider();
        await using var lab = LabUpstream.Start(new LabUpstreamOptions
        {
            TimeProvider = time, MaxConcurrentRequests = 1, HandlerDelay = TimeSpan.FromSeconds(1), Backlog = 1,
        });
        await using var busy = await RawHttpConnection.ConnectAsync(lab.EndPoint);
        await busy.SendAsync("GET / HTTP/1.1\r\n\r\n");
        await time.WaitForTimersAsync(1).WaitAsync(Timeout);

        var sockets = Enumerable.Range(0, 3).Select(_ => new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp)).ToList();
        try
        {
            // Linux queues backlog + 1 established connections, then drops SYNs; the client's first SYN
            // retransmission comes after 1 s (RFC 6298 initial RTO), far beyond this wait.
            await sockets[0].ConnectAsync(lab.EndPoint).WaitAsync(Timeout);
            await sockets[1].ConnectAsync(lab.EndPoint).WaitAsync(Timeout);
            await Assert.ThrowsAsync<TimeoutException>(() => sockets[2].ConnectAsync(lab.EndPoint).WaitAsync(TimeSpan.FromMilliseconds(300)));
            Assert.Equal(1, lab.ConnectionsAccepted);
        }
        finally
        {
            sockets.ForEach(s => s.Dispose());
        }
    }

    [Fact]
    public async Task Dispose_closes_connections_and_stops_listening()
    {
        var lab = LabUpstream.Start(new LabUpstreamOptions { Script = LabScripts.Stall });
        await using var idle = await RawHttpConnection.ConnectAsync(lab.EndPoint);
        await using var stalled = await RawHttpConnection.ConnectAsync(lab.EndPoint);
        await stalled.SendAsync("GET / HTTP/1.1\r\n\r\n");
        await Wait.Until(() => lab.RequestsReceived == 1 && lab.OpenConnections == 2);

        await lab.DisposeAsync().AsTask().WaitAsync(Timeout);

        Assert.Equal(0, lab.OpenConnections);
        Assert.Equal("", Encoding.Latin1.GetString((await idle.ReadToEndAsync()).Bytes));
        Assert.Equal("", Encoding.Latin1.GetString((await stalled.ReadToEndAsync()).Bytes));
        var refused = await Assert.ThrowsAsync<SocketException>(() => RawHttpConnection.ConnectAsync(lab.EndPoint));
        Assert.Equal(SocketError.ConnectionRefused, refused.SocketErrorCode);
    }
}
