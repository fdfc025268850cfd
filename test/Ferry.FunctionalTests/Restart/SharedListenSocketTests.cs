using System.Net;
using System.Net.Sockets;
using System.Text;
using Ferry.Configuration;
using Ferry.FunctionalTests.Support;
using Ferry.Hosting;
using Ferry.Lab;
using Microsoft.Extensions.Configuration;

namespace Ferry.FunctionalTests.Restart;

// What the handover rests on, checked on real sockets: descriptors passed over a Unix socket refer to the same
// listening socket; the process giving up its descriptors must not reset or reconfigure that socket.
public sealed class SharedListenSocketTests
{
    // The trap the owned transport exists for: .NET closes a socket with an accept pending abortively, setting
    // SO_LINGER 0 on the socket itself, which a second descriptor then shares and accepted connections inherit.
    // Should .NET stop doing this, this test fails and docs/decisions/2026-12-02-zero-drop-restarts.md can say so.
    [Fact]
    public async Task DotNet_DisposingASocketWithAnAcceptPending_SetsLingerZeroOnTheSharedSocket()
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen();
        var (sender, receiver) = SocketPair();
        using (sender)
        using (receiver)
        {
            Unix.SendWithDescriptors(sender, "x"u8, [listener]);
            Assert.True(receiver.Poll(TimeSpan.FromSeconds(10), SelectMode.SelectRead));
            var (_, received) = Unix.ReceiveWithDescriptors(receiver, 16);
            using var shared = Assert.Single(received);

            var pending = listener.AcceptAsync();
            await Task.Delay(50);
            listener.Dispose();
            await Assert.ThrowsAnyAsync<Exception>(() => pending);

            Assert.True(shared.LingerState!.Enabled);
            Assert.Equal(0, shared.LingerState.LingerTime);
        }
    }

    [Fact]
    public async Task AServerHandingItsSocketsOver_StopsAccepting_AndTheSuccessorServesTheSameSocket_WithoutLinger()
    {
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions { Name = "u" });
        var config = Config(upstream, port: 0);
        var first = await FerryServer.StartAsync(config, Options([]));
        var endPoint = new IPEndPoint(IPAddress.Loopback, first.ListenerUris[0].Port);
        FerryServer? second = null;
        var firstDisposed = false;
        try
        {
            // Connections queued before the handover and never accepted by the first server.
            var (sender, receiver) = SocketPair();
            List<Socket> received;
            using (sender)
            using (receiver)
            {
                Unix.SendWithDescriptors(sender, "sockets"u8, first.ListeningSockets);
                Assert.True(receiver.Poll(TimeSpan.FromSeconds(10), SelectMode.SelectRead));
                (_, received) = Unix.ReceiveWithDescriptors(receiver, 64);
            }
            Assert.Equal(2, received.Count); // the proxied listener and the admin listener

            second = await FerryServer.StartAsync(Config(upstream, endPoint.Port) with { Admin = config.Admin with { EndPoint = new IPEndPoint(IPAddress.Loopback, first.AdminUri!.Port) } },
                Options(received));
            Assert.Equal(first.ListenerUris, second.ListenerUris);

            await first.StopAcceptingAsync();
            await first.DrainAsync();
            await first.DisposeAsync();
            firstDisposed = true;

            // The first server's Kestrel had an accept pending on the socket when it stopped: nothing of that
            // reached the socket the second one serves.
            var shared = second.ListeningSockets[0];
            Assert.False(shared.LingerState!.Enabled);
            for (var i = 0; i < 20; i++)
            {
                Assert.Equal("HTTP/1.1 200", await GetStatusAsync(endPoint));
            }
            Assert.Equal("HTTP/1.1 200", await GetStatusAsync(new IPEndPoint(IPAddress.Loopback, second.AdminUri!.Port), "/healthz"));
        }
        finally
        {
            if (!firstDisposed)
            {
                await first.DisposeAsync();
            }
            if (second is not null)
            {
                await second.DisposeAsync();
            }
        }
    }

    [Fact]
    public async Task AServerStoppingWithoutASuccessor_ClosesItsListener_SoNewConnectionsAreRefused()
    {
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions { Name = "u" });
        await using var server = await FerryServer.StartAsync(Config(upstream, port: 0), Options([]));
        var endPoint = new IPEndPoint(IPAddress.Loopback, server.ListenerUris[0].Port);
        Assert.Equal("HTTP/1.1 200", await GetStatusAsync(endPoint));

        await server.DrainAsync();

        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        var refused = await Assert.ThrowsAsync<SocketException>(() => client.ConnectAsync(endPoint));
        Assert.Equal(SocketError.ConnectionRefused, refused.SocketErrorCode);
    }

    private static FerryConfig Config(LabUpstream upstream, int port)
    {
        var result = FerryConfigLoader.Load(new ConfigurationBuilder().AddInMemoryCollection(TestEngine.Apply(new Dictionary<string, string?>
        {
            ["Listeners:main:Address"] = $"127.0.0.1:{port}",
            ["Admin:Address"] = "127.0.0.1:0",
            ["AccessLog:Enabled"] = "false",
            ["Routes:all:ClusterId"] = "c",
            ["Clusters:c:Destinations:1:Address"] = upstream.Uri.ToString(),
        })).Build());
        Assert.True(result.IsValid, string.Join("\n", result.Errors));
        return result.Config!;
    }

    private static FerryServerOptions Options(IReadOnlyList<Socket> inherited) => new()
    {
        ShutdownTimeout = TimeSpan.FromSeconds(5),
        DrainGrace = TimeSpan.Zero,
        InheritedSockets = inherited,
        ConfigureLogging = _ => { },
        Admin = Ferry.Admin.AdminEndpoints.Handler,
    };

    private static (Socket, Socket) SocketPair()
    {
        var path = Path.Combine(Path.GetTempPath(), $"ferry-pair-{Guid.NewGuid():N}.sock");
        using var listener = Handover.NewSocket();
        listener.Bind(new UnixDomainSocketEndPoint(path));
        listener.Listen(1);
        var client = Handover.NewSocket();
        client.Connect(new UnixDomainSocketEndPoint(path));
        var server = listener.Accept();
        File.Delete(path);
        return (client, server);
    }

    private static async Task<string> GetStatusAsync(IPEndPoint endPoint, string path = "/")
    {
        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        await client.ConnectAsync(endPoint, timeout.Token);
        await client.SendAsync(Encoding.ASCII.GetBytes($"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"), timeout.Token);
        var buffer = new byte[12];
        var filled = 0;
        while (filled < buffer.Length)
        {
            var read = await client.ReceiveAsync(buffer.AsMemory(filled), timeout.Token);
            Assert.True(read > 0, "closed before a status line");
            filled += read;
        }
        return Encoding.ASCII.GetString(buffer);
    }
}
