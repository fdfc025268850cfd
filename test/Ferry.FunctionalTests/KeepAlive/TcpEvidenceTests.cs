using System.Net;
using System.Net.Sockets;
using Ferry.FunctionalTests.Support;
using Ferry.Upstream;

namespace Ferry.FunctionalTests.KeepAlive;

// The evidence of docs/replay.md checked on this kernel: after the peer's FIN, a request the peer never received leaves
// tcpi_bytes_acked where it was; a request the peer received before closing moves it.
public sealed class TcpEvidenceTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(10);

    [Fact]
    public async Task RequestSentAfterThePeersClose_IsNeverAcknowledged()
    {
        var (client, server) = await ConnectedPairAsync();
        using var _ = client;
        await ExchangeAsync(client, server);

        server.Dispose(); // a plain close(): FIN, then RST for anything that arrives
        await Wait.Until(() => client.Poll(0, SelectMode.SelectRead), Bound);
        var before = TcpInfo.BytesAcked(client);
        client.Send("POST /order HTTP/1.1\r\n\r\n"u8);
        var failure = await ReadToEndAsync(client);
        var after = TcpInfo.BytesAcked(client);

        Assert.True(before > 0);
        Assert.Equal(before, after);
        Assert.True(failure is null or SocketError.Shutdown, $"read ended with {failure}");
    }

    [Fact]
    public async Task RequestReadBeforeThePeersClose_IsAcknowledged()
    {
        var (client, server) = await ConnectedPairAsync();
        using var _ = client;
        await ExchangeAsync(client, server);

        var before = TcpInfo.BytesAcked(client);
        client.Send("POST /order HTTP/1.1\r\n\r\n"u8);
        var buffer = new byte[64];
        Assert.True(await server.ReceiveAsync(buffer.AsMemory()).AsTask().WaitAsync(Bound) > 0);
        server.Dispose();
        await ReadToEndAsync(client);
        var after = TcpInfo.BytesAcked(client);

        Assert.True(after > before);
    }

    private static async Task<(Socket Client, Socket Server)> ConnectedPairAsync()
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(1);
        var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await client.ConnectAsync(listener.LocalEndPoint!).WaitAsync(Bound);
        var server = await listener.AcceptAsync().WaitAsync(Bound);
        return (client, server);
    }

    // One request and response first, as on a pooled keep-alive connection.
    private static async Task ExchangeAsync(Socket client, Socket server)
    {
        var buffer = new byte[64];
        client.Send("GET / HTTP/1.1\r\n\r\n"u8);
        Assert.True(await server.ReceiveAsync(buffer.AsMemory()).AsTask().WaitAsync(Bound) > 0);
        server.Send("HTTP/1.1 204 No Content\r\n\r\n"u8);
        Assert.True(await client.ReceiveAsync(buffer.AsMemory()).AsTask().WaitAsync(Bound) > 0);
    }

    // Reads until EOF (null) or an error (its code).
    private static async Task<SocketError?> ReadToEndAsync(Socket socket)
    {
        var buffer = new byte[64];
        try
        {
            while (await socket.ReceiveAsync(buffer.AsMemory()).AsTask().WaitAsync(Bound) > 0)
            {
            }
            return null;
        }
        catch (SocketException ex)
        {
            return ex.SocketErrorCode;
        }
    }
}
