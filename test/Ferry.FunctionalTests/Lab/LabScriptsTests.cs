using Ferry.FunctionalTests.Support;
using System.Text;
using Ferry.Lab;

namespace Ferry.FunctionalTests.Lab;

public sealed class LabScriptsTests
{
    private const string Get = "GET /anything HTTP/1.1\r\nHost: lab\r\n\r\n";

    public static TheoryData<string> ScriptsThatWriteThenFin => new()
    {
        nameof(LabScripts.GarbageHead), nameof(LabScripts.NonHttpResponse), nameof(LabScripts.ContentLengthAndChunked),
        nameof(LabScripts.BadChunk), nameof(LabScripts.OversizedHead), nameof(LabScripts.PartialBodyThenClose),
        nameof(LabScripts.TruncatedChunkedThenClose),
    };

    private static readonly Dictionary<string, (Func<LabExchange, CancellationToken, Task> Script, string Expected)> Written = new()
    {
        [nameof(LabScripts.GarbageHead)] = (LabScripts.GarbageHead, "HTTP/1.1 abc\r\nContent-Length: 0\r\n\r\n"),
        [nameof(LabScripts.NonHttpResponse)] = (LabScripts.NonHttpResponse, "SSH-2.0-OpenSSH_9.6\r\n"),
        [nameof(LabScripts.ContentLengthAndChunked)] = (LabScripts.ContentLengthAndChunked,
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        [nameof(LabScripts.BadChunk)] = (LabScripts.BadChunk, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nxyz\r\n\r\n"),
        [nameof(LabScripts.OversizedHead)] = (LabScripts.OversizedHead,
            "HTTP/1.1 200 OK\r\nX-Big: " + new string('a', 64 * 1024) + "\r\nContent-Length: 0\r\n\r\n"),
        [nameof(LabScripts.PartialBodyThenClose)] = (LabScripts.PartialBodyThenClose, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789"),
        [nameof(LabScripts.TruncatedChunkedThenClose)] = (LabScripts.TruncatedChunkedThenClose,
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"),
    };

    [Theory]
    [MemberData(nameof(ScriptsThatWriteThenFin))]
    public async Task Script_writes_its_bytes_then_fin(string name)
    {
        var (script, expected) = Written[name];
        await using var lab = LabUpstream.Start(new LabUpstreamOptions { Script = script });
        await using var client = await RawHttpConnection.ConnectAsync(lab.EndPoint);

        await client.SendAsync(Get);
        var (bytes, end) = await client.ReadToEndAsync();

        Assert.Equal(expected, Encoding.Latin1.GetString(bytes));
        Assert.Equal(ConnectionEnd.Fin, end);
    }

    [Fact]
    public async Task Reset_before_head_sends_rst_and_nothing_else()
    {
        await using var lab = LabUpstream.Start(new LabUpstreamOptions { Script = LabScripts.ResetBeforeHead });
        await using var client = await RawHttpConnection.ConnectAsync(lab.EndPoint);

        await client.SendAsync(Get);

        await client.AssertEndsWithoutBytesAsync(ConnectionEnd.Reset);
        Assert.Equal(1, lab.RequestCount("GET", "/anything"));
    }

    [Fact]
    public async Task Close_before_head_sends_fin_and_nothing_else()
    {
        await using var lab = LabUpstream.Start(new LabUpstreamOptions { Script = LabScripts.CloseBeforeHead });
        await using var client = await RawHttpConnection.ConnectAsync(lab.EndPoint);

        await client.SendAsync(Get);

        await client.AssertEndsWithoutBytesAsync(ConnectionEnd.Fin);
    }

    [Fact]
    public async Task Partial_body_then_reset_ends_with_rst()
    {
        await using var lab = LabUpstream.Start(new LabUpstreamOptions { Script = LabScripts.PartialBodyThenReset });
        await using var client = await RawHttpConnection.ConnectAsync(lab.EndPoint);

        await client.SendAsync(Get);

        // Linux drops unread received data when the RST arrives, so only the reset itself is certain.
        Assert.Equal(ConnectionEnd.Reset, (await client.ReadToEndAsync()).End);
    }

    [Fact]
    public async Task Read_body_then_reset_receives_the_whole_body_and_never_answers()
    {
        await using var lab = LabUpstream.Start(new LabUpstreamOptions { Script = LabScripts.ReadBodyThenReset });
        await using var client = await RawHttpConnection.ConnectAsync(lab.EndPoint);
        byte[] body = new byte[256 * 1024];

        await client.SendAsync("POST /orders HTTP/1.1\r\nContent-Length: " + body.Length + "\r\n\r\n");
        await client.SendAsync(body);

        await client.AssertEndsWithoutBytesAsync(ConnectionEnd.Reset);
        Assert.Equal(1, lab.RequestCount("POST", "/orders"));
    }

    [Fact]
    public async Task Read_body_then_close_sends_fin_after_a_chunked_body()
    {
        await using var lab = LabUpstream.Start(new LabUpstreamOptions { Script = LabScripts.ReadBodyThenClose });
        await using var client = await RawHttpConnection.ConnectAsync(lab.EndPoint);

        await client.SendAsync("POST /orders HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n");

        await client.AssertEndsWithoutBytesAsync(ConnectionEnd.Fin);
    }

    [Fact]
    public async Task Stall_never_answers_until_disposed()
    {
        var lab = LabUpstream.Start(new LabUpstreamOptions { Script = LabScripts.Stall });
        await using var client = await RawHttpConnection.ConnectAsync(lab.EndPoint);

        await client.SendAsync(Get);
        await Wait.Until(() => lab.RequestsReceived == 1);
        Assert.Equal(0, client.Socket.Available);
        await lab.DisposeAsync();

        Assert.Empty((await client.ReadToEndAsync()).Bytes);
    }

    [Fact]
    public async Task Stall_mid_body_sends_the_head_and_part_of_the_body()
    {
        var lab = LabUpstream.Start(new LabUpstreamOptions { Script = LabScripts.StallMidBody });
        await using var client = await RawHttpConnection.ConnectAsync(lab.EndPoint);

        await client.SendAsync(Get);
        string expected = "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789";
        Assert.Equal(expected, Encoding.Latin1.GetString(await client.ReadExactlyAsync(expected.Length)));
        await lab.DisposeAsync();

        Assert.Empty((await client.ReadToEndAsync()).Bytes);
    }

    [Fact]
    public async Task On_reused_connection_misbehaves_from_the_second_request()
    {
        await using var lab = LabUpstream.Start(new LabUpstreamOptions { Script = LabScripts.OnReusedConnection(LabScripts.CloseBeforeHead) });
        await using var client = await RawHttpConnection.ConnectAsync(lab.EndPoint);

        Assert.Equal(200, (await client.GetAsync("/")).Status);
        await client.SendAsync(Get);

        await client.AssertEndsWithoutBytesAsync(ConnectionEnd.Fin);
        Assert.Equal(1, lab.ConnectionsAccepted);
    }

    [Fact]
    public async Task First_requests_misbehave_then_the_upstream_recovers()
    {
        await using var lab = LabUpstream.Start(new LabUpstreamOptions { Script = LabScripts.FirstRequests(1, LabScripts.ResetBeforeHead) });
        await using (var first = await RawHttpConnection.ConnectAsync(lab.EndPoint))
        {
            await first.SendAsync(Get);
            await first.AssertEndsWithoutBytesAsync(ConnectionEnd.Reset);
        }
        await using var second = await RawHttpConnection.ConnectAsync(lab.EndPoint);

        Assert.Equal(200, (await second.GetAsync("/")).Status);
    }

    [Fact]
    public async Task A_script_that_answers_keeps_the_connection_serving()
    {
        await using var lab = LabUpstream.Start(new LabUpstreamOptions
        {
            Script = async (exchange, ct) =>
            {
                if (exchange.Path == "/count")
                {
                    using var reader = new StreamReader(exchange.Body);
                    string text = await reader.ReadToEndAsync(ct);
                    await exchange.WriteResponseAsync(200, $"{text.Length} on {exchange.ConnectionRequestIndex}", ct: ct);
                    return;
                }
                await LabRoutes.HandleAsync(exchange, ct);
            },
        });
        await using var client = await RawHttpConnection.ConnectAsync(lab.EndPoint);

        await client.SendAsync("POST /count HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc");
        var counted = await client.ReadResponseAsync();
        var routed = await client.GetAsync("/");

        Assert.Equal("3 on 1", counted.BodyText);
        Assert.Equal("hello from upstream\n", routed.BodyText);
        Assert.Equal("2", routed.Header("X-Connection-Request"));
    }

    [Fact]
    public async Task A_failing_script_is_reported_and_its_connection_closed()
    {
        await using var lab = LabUpstream.Start(new LabUpstreamOptions
        {
            Script = (_, _) => throw new InvalidOperationException("script bug"),
        });
        await using var client = await RawHttpConnection.ConnectAsync(lab.EndPoint);

        await client.SendAsync(Get);

        await client.AssertEndsWithoutBytesAsync(ConnectionEnd.Fin);
        Assert.Equal("script bug", Assert.Single(lab.Errors).Message);
    }
}
