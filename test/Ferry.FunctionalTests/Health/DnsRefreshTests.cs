using System.Net;
using System.Net.Sockets;
using Ferry.Configuration;
using Ferry.FunctionalTests.Support;
using Ferry.Lab;
using Ferry.Model;
using Ferry.Tests.Support;
using Ferry.Upstream;

namespace Ferry.FunctionalTests.Health;

// Destinations given by host name are resolved again every Dns:RefreshInterval: new addresses get connections,
// vanished ones drain, and connections to addresses that remain are untouched.
public sealed class DnsRefreshTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);
    private static readonly TimeSpan Refresh = TimeSpan.FromSeconds(5);
    private static readonly IPAddress First = IPAddress.Parse("127.0.0.1");
    private static readonly IPAddress Second = IPAddress.Parse("127.0.0.2");

    [Fact]
    public async Task ChangedAnswers_MoveNewConnections_AndRetireIdleOnesToVanishedAddresses()
    {
        var (a, b) = TwoUpstreamsOnOnePort();
        await using var _ = a;
        await using var __ = b;
        var time = new ManualTimeProvider();
        var answer = new[] { First };
        var fail = false;
        DestinationResolver.Resolve resolve = (host, _) =>
        {
            Assert.Equal("backend.test", host);
            return Volatile.Read(ref fail) ? Task.FromException<IPAddress[]>(new SocketException((int)SocketError.HostNotFound)) : Task.FromResult(Volatile.Read(ref answer));
        };
        var port = a.EndPoint.Port;
        var config = ClusterConfig.WithDefaults("c", [new DestinationConfig("d", new Uri($"http://backend.test:{port}/"), "backend.test", port, 1, false)])
            with
        {
            Dns = new DnsConfig(Refresh),
            // The test holds several leases at once without sending requests: nothing for the adaptive limit to measure.
            ConnectionLimit = ConnectionLimitConfig.Default with { Adaptive = AdaptiveLimitConfig.Default with { Enabled = false } },
        };
        await using var cluster = new ClusterState(config, d => new ConnectionPool(d, config.KeepAlive, config.Timeouts.Connect, time), time, resolve);
        var destination = cluster.Destinations.Single();
        var pool = destination.Pool;

        await Wait.Until(() => destination.Resolver!.EndPoints.Count == 1);
        await ConnectAsync(cluster, destination, 1);
        // The handshake completes before the upstream's accept loop counts the connection.
        await Wait.Until(() => a.ConnectionsAccepted == 1);
        Assert.Equal(0, b.ConnectionsAccepted);

        // A second address: new connections take both in turn, the pooled one stays.
        Volatile.Write(ref answer, [First, Second]);
        time.Advance(Refresh);
        await Wait.Until(() => destination.Resolver!.EndPoints.Count == 2);
        await ConnectAsync(cluster, destination, 2);
        await Wait.Until(() => a.ConnectionsAccepted + b.ConnectionsAccepted == 3);
        Assert.Equal((2, 1), (a.ConnectionsAccepted, b.ConnectionsAccepted));
        Assert.Equal(3, pool.Idle);

        // A failed refresh keeps the last answer.
        Volatile.Write(ref fail, true);
        var before = destination.Resolver!.Resolutions;
        time.Advance(Refresh);
        await Wait.Until(() => destination.Resolver.Resolutions > before);
        Assert.Equal(2, destination.Resolver.EndPoints.Count);
        Assert.NotNull(destination.Resolver.Error);
        Assert.Equal(3, pool.Idle);

        // The first address vanishes: its idle connections are retired, the one to the second address stays, and new
        // connections all go to the second.
        Volatile.Write(ref fail, false);
        Volatile.Write(ref answer, [Second]);
        time.Advance(Refresh);
        await Wait.Until(() => pool.Retired(RetireReason.AddressGone) == 2);
        Assert.Null(destination.Resolver.Error);
        Assert.Equal(1, pool.Idle);
        await Wait.Until(() => a.OpenConnections == 0);
        Assert.Equal(1, b.OpenConnections);
        await ConnectAsync(cluster, destination, 3);
        await Wait.Until(() => b.ConnectionsAccepted == 4);
        Assert.Equal(2, a.ConnectionsAccepted);
    }

    [Fact]
    public async Task AHostName_IsServedEndToEnd()
    {
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions { Name = "named" });
        await using var proxy = await ProxyHarness.StartAsync(
            ProxyHarness.Settings(("named", new Uri($"http://localhost:{upstream.EndPoint.Port}/"))), null, upstream);

        for (var i = 0; i < 3; i++)
        {
            using var get = await proxy.Client.GetAsync("/").WaitAsync(Bound);
            Assert.Equal(HttpStatusCode.OK, get.StatusCode);
        }
        // localhost may also resolve to ::1, where nothing listens: those connects fell back to 127.0.0.1.
        Assert.Contains(proxy.Destination("named").Resolver!.EndPoints, e => e.Address.Equals(IPAddress.Loopback));
        Assert.True(proxy.Destination("named").IsAvailable);
    }

    // New connections held at once (so none is reused), then all returned to the pool.
    private static async Task ConnectAsync(ClusterState cluster, DestinationState destination, int count)
    {
        var leases = new List<Lease>();
        for (var i = 0; i < count; i++)
        {
            leases.Add(await destination.Pool.AcquireAsync(cluster.Limits, onlySafeIdle: false, forceNew: true, CancellationToken.None).AsTask().WaitAsync(Bound));
        }
        foreach (var lease in leases)
        {
            destination.Pool.Release(lease.Connection, null);
        }
    }

    // One upstream on 127.0.0.1 and one on 127.0.0.2, on the same port: one host name, two addresses.
    private static (LabUpstream A, LabUpstream B) TwoUpstreamsOnOnePort()
    {
        for (var attempt = 0; ; attempt++)
        {
            var a = LabUpstream.Start(new LabUpstreamOptions { Name = "a", EndPoint = new IPEndPoint(First, 0) });
            try
            {
                return (a, LabUpstream.Start(new LabUpstreamOptions { Name = "b", EndPoint = new IPEndPoint(Second, a.EndPoint.Port) }));
            }
            catch (SocketException) when (attempt < 10)
            {
                // That port is taken on 127.0.0.2: try another.
                a.DisposeAsync().AsTask().Wait(Bound);
            }
        }
    }
}
