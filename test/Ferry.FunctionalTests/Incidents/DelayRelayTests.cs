using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Ferry.Lab;

namespace Ferry.FunctionalTests.Incidents;

// The relay between a client socket and a plain listening socket standing for the upstream: what one side does, the
// other sees, in order, no earlier than the delay, with FIN as FIN and RST as RST.
public sealed class DelayRelayTests : IAsyncLifetime
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(10);
    private static readonly TimeSpan Delay = TimeSpan.FromMilliseconds(50);

    private readonly Socket _listener = new(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
    private DelayRelay _relay = null!;
    private Socket _client = null!;
    private Socket _server = null!;

    public async Task InitializeAsync()
    {
        _listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        _listener.Listen(8);
        _relay = DelayRelay.Start((IPEndPoint)_listener.LocalEndPoint!, Delay, TimeProvider.System);
        _client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        await _client.ConnectAsync(_relay.EndPoint).WaitAsync(Bound);
        _server = await _listener.AcceptAsync().WaitAsync(Bound);
    }

    public async Task DisposeAsync()
    {
        _client.Dispose();
        _server.Dispose();
        await _relay.DisposeAsync().AsTask().WaitAsync(Bound);
        _listener.Dispose();
    }

    [Fact]
    public async Task ForwardsDataBothWays_NoEarlierThanTheDelay()
    {
        var toServer = Stopwatch.StartNew();
        await _client.SendAsync(Encoding.ASCII.GetBytes("ping")).WaitAsync(Bound);
        Assert.Equal("ping", await ReceiveTextAsync(_server, 4));
        var upstreamward = toServer.Elapsed;

        var toClient = Stopwatch.StartNew();
        await _server.SendAsync(Encoding.ASCII.GetBytes("pong!")).WaitAsync(Bound);
        Assert.Equal("pong!", await ReceiveTextAsync(_client, 5));
        var clientward = toClient.Elapsed;

        Assert.True(upstreamward >= Delay, $"client → upstream took {upstreamward.TotalMilliseconds} ms");
        Assert.True(clientward >= Delay, $"upstream → client took {clientward.TotalMilliseconds} ms");
        Assert.Equal(1, _relay.ConnectionsAccepted);
        Assert.Equal(4, _relay.BytesToUpstream);
        Assert.Equal(5, _relay.BytesToClient);
    }

    [Fact]
    public async Task KeepsOrder_AcrossManySends()
    {
        var sent = Enumerable.Range(0, 200_000).Select(i => (byte)(i % 251)).ToArray();
        var sending = Task.Run(async () =>
        {
            for (int offset = 0; offset < sent.Length; offset += 1000)
            {
                await _client.SendAsync(sent.AsMemory(offset, Math.Min(1000, sent.Length - offset)));
            }
        });

        var received = new byte[sent.Length];
        for (int total = 0; total < received.Length;)
        {
            int count = await _server.ReceiveAsync(received.AsMemory(total)).AsTask().WaitAsync(Bound);
            Assert.NotEqual(0, count);
            total += count;
        }
        await sending.WaitAsync(Bound);

        Assert.Equal(sent, received);
    }

    [Fact]
    public async Task UpstreamFin_ArrivesAsFin_AfterTheDelay_AndTheOtherDirectionStaysOpen()
    {
        var clock = Stopwatch.StartNew();
        _server.Shutdown(SocketShutdown.Send);

        int count = await _client.ReceiveAsync(new byte[16]).WaitAsync(Bound);

        Assert.Equal(0, count);
        Assert.True(clock.Elapsed >= Delay, $"the FIN arrived after {clock.Elapsed.TotalMilliseconds} ms");
        // Half-closed, as TCP allows: the client can still send and the upstream still reads.
        await _client.SendAsync(Encoding.ASCII.GetBytes("late")).WaitAsync(Bound);
        Assert.Equal("late", await ReceiveTextAsync(_server, 4));
        Assert.Equal(1, _relay.FinsForwarded);
    }

    [Fact]
    public async Task ClientFin_ArrivesAsFin()
    {
        _client.Shutdown(SocketShutdown.Send);

        int count = await _server.ReceiveAsync(new byte[16]).WaitAsync(Bound);

        Assert.Equal(0, count);
    }

    [Fact]
    public async Task UpstreamReset_ArrivesAsReset()
    {
        _server.LingerState = new LingerOption(true, 0);
        _server.Close();

        var error = await Assert.ThrowsAsync<SocketException>(() => _client.ReceiveAsync(new byte[16]).WaitAsync(Bound));

        Assert.Equal(SocketError.ConnectionReset, error.SocketErrorCode);
    }

    [Fact]
    public async Task ClientReset_ArrivesAsReset()
    {
        _client.LingerState = new LingerOption(true, 0);
        _client.Close();

        var error = await Assert.ThrowsAsync<SocketException>(() => _server.ReceiveAsync(new byte[16]).WaitAsync(Bound));

        Assert.Equal(SocketError.ConnectionReset, error.SocketErrorCode);
    }

    private static async Task<string> ReceiveTextAsync(Socket socket, int length)
    {
        var buffer = new byte[length];
        for (int total = 0; total < length;)
        {
            int count = await socket.ReceiveAsync(buffer.AsMemory(total)).AsTask().WaitAsync(Bound);
            Assert.NotEqual(0, count);
            total += count;
        }
        return Encoding.ASCII.GetString(buffer);
    }
}
