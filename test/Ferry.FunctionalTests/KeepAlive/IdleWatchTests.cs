using System.Buffers;
using System.Net;
using System.Net.Sockets;
using Ferry.Configuration;
using Ferry.FunctionalTests.Support;
using Ferry.Hosting;
using Ferry.Model;
using Ferry.Tests.Support;
using Ferry.Upstream;
using Microsoft.Extensions.Configuration;

namespace Ferry.FunctionalTests.KeepAlive;

// The idle watch (docs/architecture.md) against a raw loopback peer the test drives byte by byte: how each way of
// ending an idle period is seen by the pool, and how the watch's read is handed to the exchange that leases the
// connection. Time is manual, so no limit retires a connection behind the test's back.
public sealed class IdleWatchTests : IAsyncLifetime
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(10);
    private static readonly byte[] Response = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"u8.ToArray();

    private readonly ManualTimeProvider _time = new();
    private Socket _listener = null!;
    private ProxyState _state = null!;
    private ClusterState _cluster = null!;
    private ConnectionPool _pool = null!;

    public Task InitializeAsync()
    {
        _listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        _listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        _listener.Listen(4);
        var settings = new Dictionary<string, string?>
        {
            ["Listeners:main:Address"] = "127.0.0.1:0",
            ["Routes:r:ClusterId"] = "c",
            ["Clusters:c:Destinations:p:Address"] = $"http://127.0.0.1:{((IPEndPoint)_listener.LocalEndPoint!).Port}",
        };
        var config = FerryConfigLoader.Load(new ConfigurationBuilder().AddInMemoryCollection(settings).Build()).Config!;
        _state = ProxyState.Build(config, FerryServer.PoolFactory(_time), _time);
        _cluster = _state.Clusters["c"];
        _pool = _cluster.Destinations[0].Pool;
        return Task.CompletedTask;
    }

    public async Task DisposeAsync()
    {
        await _state.DisposeAsync();
        _listener.Dispose();
    }

    // A connection that served one request and went back to the pool, and the peer's end of it.
    private async Task<(UpstreamConnection Connection, Socket Peer)> IdleConnectionAsync()
    {
        var accept = _listener.AcceptAsync();
        var lease = await _pool.AcquireAsync(_cluster.Limits, onlySafeIdle: false, forceNew: false, CancellationToken.None).AsTask().WaitAsync(Bound);
        var peer = await accept.WaitAsync(Bound);
        lease.Connection.RequestCount++;
        _pool.Release(lease.Connection, null);
        Assert.Equal(1, _pool.Idle);
        return (lease.Connection, peer);
    }

    private async Task<Lease> LeaseReusedAsync()
    {
        var lease = await _pool.AcquireAsync(_cluster.Limits, onlySafeIdle: false, forceNew: false, CancellationToken.None).AsTask().WaitAsync(Bound);
        Assert.True(lease.Reused);
        return lease;
    }

    [Fact]
    public async Task FinWhileIdle_RetiresTheConnectionAtOnce_AsAFin()
    {
        var (connection, peer) = await IdleConnectionAsync();
        using (peer)
        {
            peer.Shutdown(SocketShutdown.Send);
            await Wait.Until(() => _pool.Idle == 0 && _pool.Retired(RetireReason.ClosedWhileIdle) == 1, Bound);
        }
        Assert.Equal(1, _pool.ClosedByFin);
        Assert.Equal(0, _pool.ClosedByReset);
        Assert.True(connection.IsDisposed);
    }

    // A reset first makes the socket readable with nothing to read; the read after it reports the reset.
    [Fact]
    public async Task ResetWhileIdle_RetiresTheConnectionAtOnce_AsAReset()
    {
        var (connection, peer) = await IdleConnectionAsync();
        peer.LingerState = new LingerOption(true, 0);
        peer.Close();
        await Wait.Until(() => _pool.Idle == 0 && _pool.Retired(RetireReason.ClosedWhileIdle) == 1, Bound);
        Assert.Equal(1, _pool.ClosedByReset);
        Assert.Equal(0, _pool.ClosedByFin);
        Assert.True(connection.IsDisposed);
    }

    [Fact]
    public async Task StrayByteWhileIdle_RetiresTheConnection_WithoutCountingAClose()
    {
        var (connection, peer) = await IdleConnectionAsync();
        using (peer)
        {
            peer.Send("x"u8);
            await Wait.Until(() => _pool.Idle == 0 && _pool.Retired(RetireReason.ClosedWhileIdle) == 1, Bound);
        }
        Assert.Equal(0, _pool.ClosedByFin);
        Assert.Equal(0, _pool.ClosedByReset);
        Assert.Null(_pool.Learner.IdleTimeout);
        Assert.True(connection.IsDisposed);
    }

    // The exchange waits in the idle watch's read; the response arrives after that.
    [Fact]
    public async Task ResponseAfterTakeOver_IsTheExchangesFirstRead()
    {
        var (_, peer) = await IdleConnectionAsync();
        using (peer)
        {
            var lease = await LeaseReusedAsync();
            var connection = lease.Connection;
            var read = connection.ReadAsync(connection.BeginExchange(_time));
            Assert.False(read.IsCompleted);
            peer.Send(Response);
            var result = await read.AsTask().WaitAsync(Bound);
            Assert.Equal(Response, result.Buffer.ToArray());
            connection.Input.AdvanceTo(result.Buffer.End);
            connection.EndExchange();
            _pool.Release(connection, null);
            Assert.Equal(1, _pool.Idle);

            // The next idle period is watched again: a FIN still removes the connection at once.
            peer.Shutdown(SocketShutdown.Send);
            await Wait.Until(() => _pool.Idle == 0 && _pool.ClosedByFin == 1, Bound);
        }
    }

    // The response arrives between the lease and the exchange's first read: the watch's read has ended, and the
    // exchange gets its bytes rather than a read that would wait for more.
    [Fact]
    public async Task ResponseBeforeTakeOver_IsHandedToTheExchange()
    {
        var (_, peer) = await IdleConnectionAsync();
        using (peer)
        {
            var lease = await LeaseReusedAsync();
            var connection = lease.Connection;
            peer.Send(Response);
            await Wait.Until(() => connection.Watch.TryGetEnded(out _), Bound);
            Assert.Equal(0, _pool.Retired(RetireReason.ClosedWhileIdle));

            var read = connection.ReadAsync(connection.BeginExchange(_time));
            Assert.True(read.IsCompleted);
            var result = await read;
            Assert.Equal(Response, result.Buffer.ToArray());
            connection.Input.AdvanceTo(result.Buffer.End);
            connection.EndExchange();
            _pool.Release(connection, null);
        }
    }

    // A timeout or a client abort cancels the exchange while it waits in the taken-over read.
    [Fact]
    public async Task CancelledExchange_EndsTheTakenOverRead()
    {
        var (_, peer) = await IdleConnectionAsync();
        using (peer)
        {
            var lease = await LeaseReusedAsync();
            var connection = lease.Connection;
            var ct = connection.BeginExchange(_time);
            var read = connection.ReadAsync(ct).AsTask();
            Assert.False(read.IsCompleted);
            connection.CancelExchange();
            var ex = await Assert.ThrowsAnyAsync<OperationCanceledException>(() => read.WaitAsync(Bound));
            Assert.Equal(ct, ex.CancellationToken);
            connection.EndExchange();
            _pool.Release(connection, RetireReason.Error);
            Assert.Equal(1, _pool.Retired(RetireReason.Error));
        }
    }

    // The deadline the exchange sets (SetDeadline) cancels the taken-over read as well.
    [Fact]
    public async Task Deadline_EndsTheTakenOverRead()
    {
        var (_, peer) = await IdleConnectionAsync();
        using (peer)
        {
            var lease = await LeaseReusedAsync();
            var connection = lease.Connection;
            var read = connection.ReadAsync(connection.BeginExchange(_time)).AsTask();
            connection.SetDeadline(TimeSpan.FromSeconds(1));
            Assert.False(read.IsCompleted);
            _time.Advance(TimeSpan.FromSeconds(1));
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => read.WaitAsync(Bound));
            connection.EndExchange();
            _pool.Release(connection, RetireReason.Error);
        }
    }
}
