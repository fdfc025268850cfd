using System.Buffers;
using System.Net;
using System.Net.Sockets;
using Ferry.Configuration;
using Ferry.FunctionalTests.Support;
using Ferry.Hosting;
using Ferry.Loops;
using Ferry.Model;
using Ferry.Tests.Support;
using Ferry.Upstream;
using Microsoft.Extensions.Configuration;

namespace Ferry.FunctionalTests.KeepAlive;

// The pool on the event loops (Engine: Loops): one idle stack per loop, each changed on its loop's thread. Two real
// loops, a loopback destination that accepts and keeps its ends of the connections, manual time for the limits.
public sealed class LoopPoolTests : IAsyncLifetime
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(10);

    private readonly ManualTimeProvider _time = new();
    private readonly EventLoops _loops = new(2);
    private readonly Socket _listener = new(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
    private static readonly byte[] Response = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"u8.ToArray();

    private readonly List<Socket> _peers = []; // the destination's ends, in the order the pool connected
    private readonly Dictionary<UpstreamConnection, Socket> _peerOf = [];
    private ProxyState? _state;
    private ClusterState _cluster = null!;
    private ConnectionPool _pool = null!;

    private EventLoop Loop0 => _loops.All[0];
    private EventLoop Loop1 => _loops.All[1];

    // `cluster`: settings of the cluster, by their path under it.
    private void Start(params (string Key, string Value)[] cluster)
    {
        _listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        _listener.Listen(16);
        var settings = new Dictionary<string, string?>
        {
            ["Listeners:main:Address"] = "127.0.0.1:0",
            ["Routes:r:ClusterId"] = "c",
            ["Clusters:c:Destinations:p:Address"] = $"http://127.0.0.1:{((IPEndPoint)_listener.LocalEndPoint!).Port}",
            // Leases overlap here; the adaptive limit would queue all but its first.
            ["Clusters:c:AdaptiveLimit:Enabled"] = "false",
        };
        foreach (var (key, value) in cluster)
        {
            settings[$"Clusters:c:{key}"] = value;
        }
        var config = FerryConfigLoader.Load(new ConfigurationBuilder().AddInMemoryCollection(settings).Build()).Config!;
        _state = ProxyState.Build(config, FerryServer.PoolFactory(_time), _time);
        _cluster = _state.Clusters["c"];
        _pool = _cluster.Destinations[0].Pool;
    }

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        if (_state is not null)
        {
            await _state.DisposeAsync();
        }
        _loops.Dispose();
        _listener.Dispose();
        _peers.ForEach(p => p.Dispose());
    }

    // A lease for a request served by `loop`, made from the test's thread (off every loop).
    private async Task<UpstreamConnection> LeaseAsync(EventLoop loop, bool reused)
    {
        var lease = await _pool.AcquireAsync(_cluster.Limits, onlySafeIdle: false, forceNew: false, CancellationToken.None, loop: loop)
            .AsTask().WaitAsync(Bound);
        Assert.Equal(reused, lease.Reused);
        var connection = lease.Connection;
        if (!reused)
        {
            var peer = await _listener.AcceptAsync().WaitAsync(Bound);
            _peers.Add(peer);
            _peerOf[connection] = peer;
        }
        Assert.Same(loop, connection.Loop);
        connection.RequestCount++;
        if (reused)
        {
            // What the exchange does with a reused connection: its first read continues the idle watch's.
            var read = connection.ReadAsync(connection.BeginExchange(_time));
            _peerOf[connection].Send(Response);
            var result = await read.AsTask().WaitAsync(Bound);
            Assert.Equal(Response, result.Buffer.ToArray());
            connection.Input.AdvanceTo(result.Buffer.End);
            connection.EndExchange();
        }
        return connection;
    }

    private Task ReleaseOnLoopAsync(UpstreamConnection connection) =>
        connection.Loop!.InvokeAsync(() => _pool.Release(connection, null)).WaitAsync(Bound);

    // Every upstream descriptor on the loops belongs to a connection the pool holds (idle, leased or the sentinel).
    private Task AssertDescriptorsAsync() =>
        Wait.Until(() => _loops.All.Sum(l => l.Registered) == _pool.Idle + _pool.Active + (_pool.HasSentinel ? 1 : 0), Bound);

    private long RetiredTotal => Enum.GetValues<RetireReason>().Sum(_pool.Retired);

    [Fact]
    public async Task LeasesOnEachLoop_AreServedFromThatLoopsStack()
    {
        Start();
        var first = await LeaseAsync(Loop0, reused: false);
        var second = await LeaseAsync(Loop1, reused: false);
        await ReleaseOnLoopAsync(first);
        await ReleaseOnLoopAsync(second);
        Assert.Equal(1, _pool.IdleOn(Loop0));
        Assert.Equal(1, _pool.IdleOn(Loop1));

        for (var i = 0; i < 5; i++)
        {
            Assert.Same(first, await LeaseAsync(Loop0, reused: true));
            Assert.Same(second, await LeaseAsync(Loop1, reused: true));
            await ReleaseOnLoopAsync(first);
            await ReleaseOnLoopAsync(second);
        }
        Assert.Equal(2, _pool.Opened);
        Assert.Equal(10, _pool.Reused);
        Assert.Equal(0, _pool.CrossLoopLeases);
        Assert.Equal(2, _pool.Idle);
        Assert.All(_loops.All, l => Assert.Equal(1, l.Registered));
    }

    // An exchange that ended on the thread pool returns its connection through a post to the connection's loop.
    [Fact]
    public async Task AReleaseOffTheLoop_ReturnsTheConnectionToItsLoopsStack()
    {
        Start();
        var connection = await LeaseAsync(Loop1, reused: false);
        _pool.Release(connection, null);
        await Wait.Until(() => _pool.IdleOn(Loop1) == 1, Bound);
        Assert.Equal(0, _pool.IdleOn(Loop0));
        Assert.Equal(0, _pool.Active);
        Assert.Same(connection, await LeaseAsync(Loop1, reused: true));
        Assert.Equal(0, _pool.IdleOn(Loop1));
        _pool.Release(connection, null);
        await Wait.Until(() => _pool.IdleOn(Loop1) == 1, Bound);
        await AssertDescriptorsAsync();
    }

    // A loop without idle connections takes one that another loop hands over, rather than connect: under
    // MaxConnections 1 the destination sees one connection, whichever loops its requests come from.
    [Fact]
    public async Task ALoopWithoutIdleConnections_IsHandedOneByAnotherLoop()
    {
        Start(("MaxConnections", "1"));
        var first = await LeaseAsync(Loop0, reused: false);
        await ReleaseOnLoopAsync(first);
        Assert.Same(first, await LeaseAsync(Loop1, reused: true));
        Assert.Same(Loop1, first.Loop);
        Assert.Equal(0, _pool.IdleOn(Loop0));
        Assert.Equal(1, _pool.CrossLoopLeases);
        await ReleaseOnLoopAsync(first);
        Assert.Equal(1, _pool.IdleOn(Loop1));
        Assert.Equal(1, _pool.Opened);
        Assert.Equal(0, Loop0.Registered);
        Assert.Equal(1, Loop1.Registered);
    }

    [Fact]
    public async Task TheIdleTimeout_RetiresTheIdleConnectionsOfEveryLoop()
    {
        Start(("KeepAlive:IdleTimeout", "10s"));
        var first = await LeaseAsync(Loop0, reused: false);
        var second = await LeaseAsync(Loop1, reused: false);
        await ReleaseOnLoopAsync(first);
        await ReleaseOnLoopAsync(second);
        _time.Advance(TimeSpan.FromSeconds(9));
        await Task.WhenAll(_loops.All.Select(l => l.InvokeAsync(() => { }))).WaitAsync(Bound); // the scavenger's posts ran
        Assert.Equal(2, _pool.Idle);
        _time.Advance(TimeSpan.FromSeconds(1));
        await Wait.Until(() => _pool.Idle == 0 && _pool.Retired(RetireReason.IdleTimeout) == 2, Bound);
        await Wait.Until(() => _loops.All.Sum(l => l.Registered) == 0, Bound);
    }

    // MaxIdle is the destination's floor, not each loop's: of three idle connections on two loops, two are surplus.
    [Fact]
    public async Task Surplus_IsRetiredDownToMaxIdle_CountedOverAllLoops()
    {
        Start(("KeepAlive:IdleTimeout", "5m"), ("KeepAlive:MaxIdle", "1"));
        var a = await LeaseAsync(Loop0, reused: false);
        var b = await LeaseAsync(Loop0, reused: false);
        var c = await LeaseAsync(Loop1, reused: false);
        await ReleaseOnLoopAsync(a);
        await ReleaseOnLoopAsync(b);
        await ReleaseOnLoopAsync(c);
        Assert.Equal(3, _pool.Idle);
        _time.Advance(LeaseDemand.Window);
        await Wait.Until(() => _pool.Idle == 1 && _pool.Retired(RetireReason.Surplus) == 2, Bound);
        await Task.WhenAll(_loops.All.Select(l => l.InvokeAsync(() => { }))).WaitAsync(Bound);
        Assert.Equal(1, _pool.Idle);
        await AssertDescriptorsAsync();
    }

    // A close after 2 s idle teaches the idle timeout; at the learned limit one idle connection retires and the other
    // stays as the sentinel, which the destination's close then retires.
    [Fact]
    public async Task ALearnedIdleTimeout_RetiresOnTheLoops_AndKeepsOneSentinel()
    {
        Start();
        await ReleaseOnLoopAsync(await LeaseAsync(Loop0, reused: false));
        _time.Advance(TimeSpan.FromSeconds(2));
        _peers[0].Shutdown(SocketShutdown.Send);
        await Wait.Until(() => _pool.Idle == 0 && _pool.ClosedByFin == 1, Bound);
        Assert.Equal(TimeSpan.FromSeconds(2), _pool.Learner.IdleTimeout);

        var b = await LeaseAsync(Loop0, reused: false);
        var c = await LeaseAsync(Loop1, reused: false);
        await ReleaseOnLoopAsync(b);
        await ReleaseOnLoopAsync(c);
        _time.Advance(TimeSpan.FromSeconds(1.5)); // the learned 2 s less its margin
        await Wait.Until(() => _pool.Idle == 0 && _pool.HasSentinel && _pool.Retired(RetireReason.LearnedLimit) == 1, Bound);
        await AssertDescriptorsAsync();

        _peers[1].Shutdown(SocketShutdown.Send);
        _peers[2].Shutdown(SocketShutdown.Send);
        await Wait.Until(() => !_pool.HasSentinel && _pool.Retired(RetireReason.ClosedWhileIdle) == 2, Bound);
        Assert.Equal(3, _pool.Opened);
        Assert.Equal(3, RetiredTotal);
        await Wait.Until(() => _loops.All.Sum(l => l.Registered) == 0, Bound);
    }

    [Fact]
    public async Task Dispose_RetiresEveryConnectionOnce_AndClosesItsDescriptor()
    {
        Start();
        var connections = new List<UpstreamConnection>();
        foreach (var loop in new[] { Loop0, Loop0, Loop1, Loop1 })
        {
            connections.Add(await LeaseAsync(loop, reused: false));
        }
        foreach (var connection in connections.Take(3))
        {
            await ReleaseOnLoopAsync(connection);
        }
        await _pool.DisposeAsync().AsTask().WaitAsync(Bound);
        Assert.Equal(3, _pool.Retired(RetireReason.Shutdown));
        Assert.Equal(0, _pool.Idle);
        Assert.All(connections.Take(3), c => Assert.True(c.IsDisposed));

        // Back from an exchange after the pool was disposed, through its loop.
        _pool.Release(connections[3], null);
        await Wait.Until(() => _pool.Retired(RetireReason.Shutdown) == 4, Bound);
        Assert.Equal(_pool.Opened, RetiredTotal);
        await Wait.Until(() => _loops.All.Sum(l => l.Registered) == 0, Bound);
    }

    // A pool disposed after its loops stopped (a draining destination outlived them): what would be posted runs on the
    // disposing thread, under the pool's lock.
    [Fact]
    public async Task Dispose_AfterTheLoopsStopped_RetiresEveryConnectionOnce()
    {
        Start();
        var connections = new List<UpstreamConnection>();
        foreach (var loop in new[] { Loop0, Loop1, Loop1 })
        {
            connections.Add(await LeaseAsync(loop, reused: false));
        }
        foreach (var connection in connections)
        {
            await ReleaseOnLoopAsync(connection);
        }
        _loops.Dispose();
        await _pool.DisposeAsync().AsTask().WaitAsync(Bound);
        Assert.Equal(3, _pool.Retired(RetireReason.Shutdown));
        Assert.Equal(3, RetiredTotal);
        Assert.Equal(0, _pool.Idle);
        Assert.All(connections, c => Assert.True(c.IsDisposed));
        Assert.All(_loops.All, l => Assert.Equal(0, l.Registered));
    }
}
