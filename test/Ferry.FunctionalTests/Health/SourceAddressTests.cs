using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Ferry.FunctionalTests.Support;
using static Ferry.FunctionalTests.Support.ProxyAssert;

namespace Ferry.FunctionalTests.Health;

// Clusters:<id>:SourceAddresses: new connections bind to each address in turn (127.0.0.1 and 127.0.0.2 are both
// loopback on Linux), and the port space guard counts them per source.
public sealed class SourceAddressTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task NewConnections_TakeTheSourceAddressesInTurn()
    {
        await using var upstream = new PeerRecordingUpstream();
        var settings = ProxyHarness.Settings(("d", upstream.Uri));
        settings["Clusters:c:SourceAddresses:0"] = "127.0.0.1";
        settings["Clusters:c:SourceAddresses:1"] = "127.0.0.2";
        await using var proxy = await ProxyHarness.StartAsync(settings, null);

        for (var i = 0; i < 4; i++)
        {
            using var get = await proxy.Client.GetAsync("/").WaitAsync(Bound);
            Assert.Equal(HttpStatusCode.OK, get.StatusCode);
        }

        // Every response closed its connection, so each request connected anew, alternating between the sources.
        Assert.Equal(["127.0.0.1", "127.0.0.1", "127.0.0.2", "127.0.0.2"], upstream.Peers.Select(p => p.ToString()).Order());
        var pool = proxy.Destination("d").Pool;
        // The last connection is released just after its response reached the client.
        await Wait.Until(() => pool.Active == 0);
        var ports = pool.Ports.Busiest();
        Assert.Equal((0, 2), (ports.Open, ports.RecentlyClosed));
        Assert.Contains(ports.Key!.Value.Source!.ToString(), new[] { "127.0.0.1", "127.0.0.2" });
        Assert.Equal(upstream.Uri.Port, ports.Key!.Value.Remote.Port);
    }

    [Fact]
    public async Task ASourceAddressThatIsNotLocal_IsFerrysProblem_NotTheDestinations()
    {
        await using var upstream = new PeerRecordingUpstream();
        var settings = ProxyHarness.Settings(("d", upstream.Uri));
        // TEST-NET-1 (RFC 5737): never an address of this host, so bind() fails with EADDRNOTAVAIL.
        settings["Clusters:c:SourceAddresses:0"] = "192.0.2.1";
        await using var proxy = await ProxyHarness.StartAsync(settings, null);

        using var get = await proxy.Client.GetAsync("/").WaitAsync(Bound);

        await AssertFailure(get, HttpStatusCode.BadGateway, "proxy_internal_error");
        Assert.True(proxy.Destination("d").IsAvailable);
        Assert.Empty(upstream.Peers);
    }

    // Answers every request with 200 and Connection: close, noting the address each connection came from.
    private sealed class PeerRecordingUpstream : IAsyncDisposable
    {
        private readonly Socket _listener = new(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        private readonly CancellationTokenSource _stop = new();
        private readonly Task _accepting;

        public PeerRecordingUpstream()
        {
            _listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
            _listener.Listen(16);
            Uri = new Uri($"http://127.0.0.1:{((IPEndPoint)_listener.LocalEndPoint!).Port}/");
            _accepting = AcceptAsync();
        }

        public Uri Uri { get; }
        public ConcurrentQueue<IPAddress> Peers { get; } = new();

        private async Task AcceptAsync()
        {
            while (!_stop.IsCancellationRequested)
            {
                Socket socket;
                try
                {
                    socket = await _listener.AcceptAsync(_stop.Token);
                }
                catch (Exception ex) when (ex is OperationCanceledException or SocketException or ObjectDisposedException)
                {
                    return;
                }
                using (socket)
                {
                    Peers.Enqueue(((IPEndPoint)socket.RemoteEndPoint!).Address);
                    await AnswerAsync(socket);
                }
            }
        }

        private async Task AnswerAsync(Socket socket)
        {
            var head = new StringBuilder();
            var buffer = new byte[4096];
            try
            {
                while (!head.ToString().Contains("\r\n\r\n", StringComparison.Ordinal))
                {
                    var n = await socket.ReceiveAsync(buffer, _stop.Token).AsTask().WaitAsync(Bound);
                    if (n == 0)
                    {
                        return;
                    }
                    head.Append(Encoding.ASCII.GetString(buffer, 0, n));
                }
                await socket.SendAsync("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"u8.ToArray(), _stop.Token);
                socket.Shutdown(SocketShutdown.Send);
            }
            catch (Exception ex) when (ex is OperationCanceledException or SocketException or TimeoutException)
            {
                // The test is over or the proxy went away; nothing to answer.
            }
        }

        public async ValueTask DisposeAsync()
        {
            await _stop.CancelAsync();
            _listener.Dispose();
            await _accepting.WaitAsync(Bound);
            _stop.Dispose();
        }
    }
}
