using Ferry.FunctionalTests.Support;
using Ferry.Lab;

namespace Ferry.FunctionalTests.Lab;

public sealed class LabWebSocketTests
{
    private const string Handshake =
        "GET /ws HTTP/1.1\r\nHost: lab\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

    [Fact]
    public async Task Handshake_then_echoes_frames_answers_ping_and_close()
    {
        await using var lab = LabUpstream.Start(new LabUpstreamOptions());
        await using var client = await RawHttpConnection.ConnectAsync(lab.EndPoint);

        await client.SendAsync(Handshake);
        var upgrade = await client.ReadResponseAsync();
        Assert.Equal(101, upgrade.Status);
        // The example of RFC 6455 §1.3.
        Assert.Equal("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", upgrade.Header("Sec-WebSocket-Accept"));
        Assert.Equal("websocket", upgrade.Header("Upgrade"));

        await client.SendAsync(WebSocketFrames.Masked(0x1, "hello"u8.ToArray()));
        Assert.Equal([0x81, 5, .. "hello"u8.ToArray()], await client.ReadExactlyAsync(7));

        byte[] large = Enumerable.Range(0, 300).Select(i => (byte)i).ToArray();
        await client.SendAsync(WebSocketFrames.Masked(0x2, large));
        Assert.Equal([0x82, 126, 0x01, 0x2C, .. large], await client.ReadExactlyAsync(4 + large.Length));

        await client.SendAsync(WebSocketFrames.Masked(0x9, "p"u8.ToArray()));
        Assert.Equal([0x8A, 1, (byte)'p'], await client.ReadExactlyAsync(3));

        await client.SendAsync(WebSocketFrames.Masked(0x8, [0x03, 0xE8]));
        Assert.Equal([0x88, 2, 0x03, 0xE8], await client.ReadExactlyAsync(4));
        await client.AssertEndsWithoutBytesAsync(ConnectionEnd.Fin);
    }

    [Fact]
    public async Task Unmasked_client_frame_is_a_protocol_error()
    {
        await using var lab = LabUpstream.Start(new LabUpstreamOptions());
        await using var client = await RawHttpConnection.ConnectAsync(lab.EndPoint);
        await client.SendAsync(Handshake);
        Assert.Equal(101, (await client.ReadResponseAsync()).Status);

        await client.SendAsync([0x81, 2, (byte)'h', (byte)'i']);

        // 1002 = protocol error (RFC 6455 §7.4.1).
        Assert.Equal([0x88, 2, 0x03, 0xEA], await client.ReadExactlyAsync(4));
    }

    [Fact]
    public async Task Ws_without_upgrade_gets_426()
    {
        await using var lab = LabUpstream.Start(new LabUpstreamOptions());
        await using var client = await RawHttpConnection.ConnectAsync(lab.EndPoint);

        var response = await client.GetAsync("/ws");

        Assert.Equal(426, response.Status);
        Assert.Equal("websocket", response.Header("Upgrade"));
    }

    [Fact]
    public void Accept_key_follows_rfc6455()
    {
        Assert.Equal("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", LabWebSocket.ComputeAccept("dGhlIHNhbXBsZSBub25jZQ=="));
    }
}
