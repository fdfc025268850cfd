using System.Diagnostics;
using System.IO.Pipelines;
using System.Net.Sockets;
using Ferry.Configuration;
using Ferry.Errors;
using Ferry.Http1;
using Ferry.Loops;
using Ferry.Model;

namespace Ferry.Upstream;

// A leased connection and what the exchange and the logs need to know about its past.
internal readonly record struct Lease(UpstreamConnection Connection, bool Reused, TimeSpan IdleTime, TimeSpan Age, TimeSpan? ConnectTime);

// Keep-alive connections to one destination (docs/architecture.md, "The keep-alive contract"; docs/replay.md): a LIFO
// stack of idle connections (the warmest first, so the coldest age out), sized by the recent peak of concurrent
// requests (LeaseDemand) with MaxIdle as a floor, limited by the idle timeout, MaxRequests and MaxLifetime like nginx's
// keepalive_timeout, keepalive_requests and keepalive_time; plus what makes reuse race-free:
// - every idle connection has a pending read (the idle watch), so a FIN, RST or stray byte removes it at once;
// - limits the destination announced (Keep-Alive: timeout, max) or that were learned from its silent closes retire a
//   connection with a margin before the destination would close it;
// - a request that could not be replayed only takes a connection idle for less than what is known to be safe.
// The pool holds the connections and the counts; the connection limit's slots and their queue are SlotQueue's, every
// keep-alive decision is KeepAlivePolicy's.
// Over 500 lines: one lock guards the idle stack, the sentinel and the 4-tuple map, and the invariants between them
// (Debug.Asserts on the counts); opening a connection (connect, name resolution, TLS) is the next piece to move out.
internal sealed class ConnectionPool : IAsyncDisposable
{
    public delegate ConnectionPool Factory(DestinationState destination);

    // How often idle connections are checked against their limits. A quarter second keeps retirement close to the
    // margin (at least 200 ms) for the shortest idle timeouts seen in practice.
    internal static readonly TimeSpan ScavengePeriod = TimeSpan.FromMilliseconds(250);

    private readonly DestinationState _destination;
    private readonly KeepAliveConfig _config;
    private readonly TimeSpan _connectTimeout;
    private readonly TimeProvider _time;
    private readonly Lock _lock = new();
    private readonly List<UpstreamConnection> _idle = []; // index 0 = oldest idle, last = warmest
    private readonly ITimer _scavenger;
    private readonly LeaseDemand _demand;
    private readonly long[] _retired = new long[Enum.GetValues<RetireReason>().Length]; // by reason
    private UpstreamConnection? _sentinel; // idle past the learned limit, never leased: detects a destination that changed
    private long _opened;        // connections established
    private long _reused;        // leases served by an idle connection
    private long _closedByFin;   // idle closes seen as FIN
    private long _closedByReset; // idle closes seen as RST
    private int _connecting;     // connects in progress
    private long _slowConnects;  // connects that took a retransmitted SYN (>= 1 s): the listen queue was full
    private long _skippedUnsafe; // non-replayable leases that connected because every idle connection was too old
    private long _crossLoop;     // leases of an idle connection served by another loop than the request's client, moved to it
    private int _active;         // connections leased to an exchange right now
    private bool _disposed;
    private readonly ConnectionLimitConfig _limit;
    private readonly ConcurrencyLimit? _adaptive;
    private readonly SlotQueue _slots;
    private readonly IReadOnlyList<System.Net.IPAddress> _sources; // local addresses new connections bind to, in turn
    private int _nextSource;     // round-robin position in _sources
    private readonly Dictionary<UpstreamConnection, PortSpaceKey> _tuples = []; // open connections' 4-tuple spaces; guarded by _lock

    public ConnectionPool(DestinationState destination, KeepAliveConfig config, TimeSpan connectTimeout, TimeProvider time)
    {
        _destination = destination;
        _config = config;
        _connectTimeout = connectTimeout;
        _time = time;
        _limit = destination.Cluster.Config.ConnectionLimit;
        if (_limit.Adaptive.Enabled)
        {
            _adaptive = new ConcurrencyLimit(time, Math.Min(_limit.Adaptive.Min, _limit.AdaptiveMax), _limit.AdaptiveMax, _limit.Adaptive.Initial);
        }
        _slots = new SlotQueue(_limit, () => CurrentLimit, time);
        KeepAlive = new KeepAlivePolicy(config, time);
        _sources = destination.Cluster.Config.SourceAddresses;
        Ports = new PortSpace(EphemeralRange.Read().Size, time);
        _demand = new LeaseDemand(time);
        _scavenger = time.CreateTimer(static s => ((ConnectionPool)s!).Scavenge(), this, ScavengePeriod, ScavengePeriod);
    }

    public KeepAlivePolicy KeepAlive { get; }
    public KeepAliveLearner Learner => KeepAlive.Learner;
    public long LimitProbes => KeepAlive.LimitProbes;

    // Local ports this destination's connections take, per 4-tuple space (port exhaustion guard).
    public PortSpace Ports { get; }
    public long Opened => Interlocked.Read(ref _opened);
    public long Reused => Interlocked.Read(ref _reused);
    public long ClosedByFin => Interlocked.Read(ref _closedByFin);
    public long ClosedByReset => Interlocked.Read(ref _closedByReset);
    public long SkippedUnsafe => Interlocked.Read(ref _skippedUnsafe);
    public long CrossLoopLeases => Interlocked.Read(ref _crossLoop);
    public long SlowConnects => Interlocked.Read(ref _slowConnects);
    public int Active => Volatile.Read(ref _active);

    // The most requests that held or opened a connection at once over the last 30 to 60 s: what the pool keeps.
    public int RecentPeakLeases => _demand.RecentPeak;
    public int Idle { get { lock (_lock) { return _idle.Count; } } }
    public int Queued => _slots.Queued;

    // Whether a lease now would start at once instead of queueing for a connection slot.
    public bool HasFreeSlot => _slots.HasFreeSlot;

    // The adaptive estimate, null when switched off.
    public ConcurrencyLimit? Adaptive => _adaptive;

    // Requests allowed to hold a connection at once: the adaptive limit (below MaxConnections), else MaxConnections;
    // int.MaxValue without either.
    public int CurrentLimit => _adaptive?.Limit ?? (_limit.MaxConnections > 0 ? _limit.MaxConnections : int.MaxValue);

    // Requests holding a slot (connecting or in use).
    public int InFlight => _slots.InFlight;

    // How long the oldest request of a full queue waits before newcomers are refused (SlotQueue.ShedAfter).
    public TimeSpan ShedAfter => _slots.ShedAfter;

    public long Retired(RetireReason reason) => Interlocked.Read(ref _retired[(int)reason]);

    // The warmest idle connection that is within every limit, else a new one. `onlySafeIdle`: the request cannot be sent
    // again if this connection turns out to be closed (ReplayDecision.OnlySafeIdle), so it takes only an idle connection
    // that KeepAlivePolicy.IsSafeForNonReplayable allows.
    // With a connection limit (MaxConnections or the adaptive one), waits first for a slot (FIFO, bounded queue and
    // wait); the slot is held until Release. `upgrade`: the request may become a tunnel (a WebSocket) that holds its
    // connection for as long as the client stays; under the adaptive limit it takes no slot, since a few of them would
    // hold every slot of a limit measured on short requests and starve the rest.
    // `loop`: the event loop serving the request's client (Engine: Loops); its own idle connections are taken first
    // and a new connection is opened on it, so that the exchange runs on one thread.
    public async ValueTask<Lease> AcquireAsync(Http1Limits limits, bool onlySafeIdle, bool forceNew, CancellationToken requestAborted, bool upgrade = false,
        EventLoop? loop = null)
    {
        var slot = _adaptive is null ? _limit.MaxConnections > 0 : !upgrade;
        if (slot)
        {
            await _slots.AcquireAsync(requestAborted);
        }
        _demand.Begin();
        try
        {
            var lease = await LeaseAsync(limits, onlySafeIdle, forceNew, requestAborted, loop);
            lease.Connection.HoldsSlot = slot;
            if (lease.ConnectTime >= ConcurrencyLimit.SlowConnect)
            {
                Interlocked.Increment(ref _slowConnects);
                _adaptive?.Overload(InFlight, $"a connect took {lease.ConnectTime.Value.TotalSeconds:0.#} s (SYN retransmitted: listen queue full)");
            }
            return lease;
        }
        catch (ProxyException ex) when (ex.Error == ProxyError.ConnectionRefused && _adaptive is not null && Active > 0)
        {
            // Refused while other connections to it work: not down, its listen queue overflowed (tcp_abort_on_overflow).
            _adaptive.Overload(InFlight, "a connect was refused while other connections work");
            ReleaseAfterFailedLease(slot);
            throw;
        }
        catch
        {
            ReleaseAfterFailedLease(slot);
            throw;
        }
    }

    private void ReleaseAfterFailedLease(bool slot)
    {
        _demand.End();
        if (slot)
        {
            _slots.Release();
        }
    }

    // A response head arrived `latency` after the request went out (the adaptive limit's sample).
    public void ObserveResponseHead(TimeSpan latency)
    {
        if (_adaptive is null)
        {
            return;
        }
        var before = _adaptive.Limit;
        _adaptive.Sample(latency, InFlight, Volatile.Read(ref _connecting));
        if (_adaptive.Limit > before)
        {
            _slots.GrantWaiters();
        }
    }

    private async ValueTask<Lease> LeaseAsync(Http1Limits limits, bool onlySafeIdle, bool forceNew, CancellationToken requestAborted, EventLoop? loop)
    {
        var now = _time.GetTimestamp();
        while (!forceNew)
        {
            UpstreamConnection? candidate;
            lock (_lock)
            {
                if (_idle.Count == 0)
                {
                    break;
                }
                // Read under the lock: a connection released meanwhile set its IdleSince before it entered the stack,
                // so no idle time comes out negative.
                now = _time.GetTimestamp();
                var index = loop is null ? _idle.Count - 1 : WarmestOn(loop);
                if (onlySafeIdle && !KeepAlive.IsSafeForNonReplayable(_idle[index].KeepAlive, now))
                {
                    if (index == _idle.Count - 1 || !KeepAlive.IsSafeForNonReplayable(_idle[^1].KeepAlive, now))
                    {
                        // The warmest is too old, so is every other: leave them to requests that can be replayed.
                        Interlocked.Increment(ref _skippedUnsafe);
                        break;
                    }
                    index = _idle.Count - 1;
                }
                candidate = _idle[index];
                _idle.RemoveAt(index);
            }
            if (KeepAlive.ExpiryReason(candidate.KeepAlive, now) is { } reason)
            {
                Retire(candidate, reason);
                continue;
            }
            if (loop is not null && candidate.Loop is { } other && !ReferenceEquals(other, loop))
            {
                await candidate.MoveToAsync(loop);
            }
            if (await candidate.IsClosedWhileIdleAsync())
            {
                // The close is in the socket's queue; the idle watch has not run yet. It will find the connection
                // leased and leave it to us.
                ObserveClose(candidate, now, candidate.Watch.TryGetEnded(out var ended) ? ended : default);
                Retire(candidate, RetireReason.ClosedWhileIdle);
                continue;
            }
            Interlocked.Increment(ref _active);
            Interlocked.Increment(ref _reused);
            return new Lease(candidate, true, _time.GetElapsedTime(candidate.IdleSince, now), _time.GetElapsedTime(candidate.CreatedAt, now), null);
        }

        // Each source address is a 4-tuple space of its own: taking them in turn multiplies the ports available.
        var source = _sources.Count == 0 ? null : _sources[(int)((uint)Interlocked.Increment(ref _nextSource) % (uint)_sources.Count)];
        Connected opened;
        Interlocked.Increment(ref _connecting);
        try
        {
            opened = _destination.Resolver is { } resolver
                ? await ConnectResolvedAsync(resolver, source, loop, requestAborted)
                : await Connector.OpenAsync(_destination.EndPoint, _connectTimeout, _time, requestAborted, source, loop);
        }
        finally
        {
            var connecting = Interlocked.Decrement(ref _connecting);
            Debug.Assert(connecting >= 0);
        }
        var connected = _time.GetTimestamp();
        var socket = opened.Socket;
        Stream transport = opened.Loop is { } loopStream ? loopStream : new NetworkStream(socket, ownsSocket: false);
        UpstreamConnection connection;
        if (_destination.Tls is { } tls)
        {
            System.Net.Security.SslStream stream;
            try
            {
                stream = await tls.HandshakeAsync(transport, _connectTimeout, _time, requestAborted);
            }
            catch
            {
                // A loop's socket is closed by its stream, on the loop (the failed handshake disposed it).
                if (opened.Loop is null)
                {
                    socket.Dispose();
                }
                throw;
            }
            var handshaken = _time.GetTimestamp();
            connection = new UpstreamConnection(_destination, socket, transport, limits, handshaken, stream)
            {
                TlsHandshakeTime = _time.GetElapsedTime(connected, handshaken),
            };
        }
        else
        {
            connection = new UpstreamConnection(_destination, socket, transport, limits, connected);
        }
        Interlocked.Increment(ref _opened);
        Interlocked.Increment(ref _active);
        if (opened.Remote is System.Net.IPEndPoint remote)
        {
            var key = new PortSpaceKey(source, remote);
            lock (_lock)
            {
                _tuples[connection] = key;
            }
            Ports.Opened(key);
        }
        return new Lease(connection, false, TimeSpan.Zero, TimeSpan.Zero, _time.GetElapsedTime(now, connected));
    }

    // A host name's addresses, the next in turn first. Like the OS for a host name, a connect that is refused or
    // unroutable falls back to the other addresses; a timeout does not, so the connect timeout bounds the attempt.
    private async ValueTask<Connected> ConnectResolvedAsync(DestinationResolver resolver, System.Net.IPAddress? source, EventLoop? loop,
        CancellationToken requestAborted)
    {
        System.Net.IPEndPoint[] endPoints;
        try
        {
            endPoints = await resolver.EndPointsForConnectAsync(requestAborted);
        }
        catch (OperationCanceledException ex)
        {
            throw new ProxyException(ProxyError.ClientAborted, "client went away while the destination's name was resolved", ex);
        }
        for (var i = 0; ; i++)
        {
            try
            {
                return await Connector.OpenAsync(endPoints[i], _connectTimeout, _time, requestAborted, source, loop);
            }
            catch (ProxyException ex) when (i < endPoints.Length - 1 && ex.Error is ProxyError.ConnectionRefused or ProxyError.DestinationUnroutable)
            {
                // The next address may answer.
            }
        }
    }

    // The warmest idle connection served by `loop`, else the warmest of all. Guarded by _lock.
    private int WarmestOn(EventLoop loop)
    {
        for (var i = _idle.Count - 1; i >= 0; i--)
        {
            if (ReferenceEquals(_idle[i].Loop, loop))
            {
                return i;
            }
        }
        Interlocked.Increment(ref _crossLoop);
        return _idle.Count - 1;
    }

    // Retires the idle connections to addresses the destination's host name no longer resolves to; the ones in use
    // are retired when they come back (Release).
    public void RetireGoneAddresses()
    {
        List<UpstreamConnection>? gone = null;
        lock (_lock)
        {
            for (var i = _idle.Count - 1; i >= 0; i--)
            {
                if (IsAddressGone(_idle[i]))
                {
                    (gone ??= []).Add(_idle[i]);
                    _idle.RemoveAt(i);
                }
            }
        }
        foreach (var connection in gone ?? [])
        {
            Retire(connection, RetireReason.AddressGone);
        }
    }

    // Guarded by _lock.
    private bool IsAddressGone(UpstreamConnection connection) =>
        _destination.Resolver is { } resolver && _tuples.TryGetValue(connection, out var key) && !resolver.Contains(key.Remote.Address);

    // Called exactly once per lease. `retire` null: the exchange completed cleanly and the connection may be reused.
    public void Release(UpstreamConnection connection, RetireReason? retire)
    {
        var active = Interlocked.Decrement(ref _active);
        Debug.Assert(active >= 0, "a lease released twice");
        Debug.Assert(!ReferenceEquals(connection, _sentinel), "the sentinel was leased");
        var holdsSlot = connection.HoldsSlot;
        connection.HoldsSlot = false;
        var now = _time.GetTimestamp();
        var reason = retire;
        if (retire is null)
        {
            reason = KeepAlive.Released(connection.KeepAlive, out var probe);
            if (probe)
            {
                connection.BeyondLearnedLimit = true;
            }
        }
        UpstreamConnection? coldest = null;
        if (reason is null)
        {
            connection.IdleSince = now;
            lock (_lock)
            {
                if (!_disposed && _config.MaxIdle > 0 && !IsAddressGone(connection))
                {
                    if (_idle.Count >= _demand.IdleCap(_config.MaxIdle))
                    {
                        // Far more connections than the recent peak needs: the coldest goes, the warmest stays on top.
                        coldest = _idle[0];
                        _idle.RemoveAt(0);
                    }
                    _idle.Add(connection);
                    // Started under the lock: if the close is already queued, the watch completes synchronously and
                    // removes the connection before anyone can lease it.
                    connection.Watch.Start(this);
                }
                else
                {
                    reason = _disposed ? RetireReason.Shutdown : _config.MaxIdle == 0 ? RetireReason.PoolFull : RetireReason.AddressGone;
                }
            }
        }
        // Only now: until the connection is back in the stack, a request that finds the stack empty and connects is
        // part of the same peak, not a new need.
        _demand.End();
        if (holdsSlot)
        {
            // After the connection is back in the stack: the waiter that gets the slot takes it instead of connecting.
            _slots.Release();
        }
        if (coldest is not null)
        {
            Retire(coldest, RetireReason.PoolFull);
        }
        if (reason is not null)
        {
            Retire(connection, reason.Value);
        }
    }

    // Surplus above MaxIdle that a whole window's traffic did not need (LeaseDemand) closes, coldest first.
    private void RetireSurplus(long now)
    {
        _demand.Tick();
        List<UpstreamConnection>? surplus = null;
        lock (_lock)
        {
            var count = 0;
            while (count < _idle.Count
                && LeaseDemand.IsSurplus(_idle.Count - count, _config.MaxIdle, _time.GetElapsedTime(_idle[count].IdleSince, now)))
            {
                count++;
            }
            if (count > 0)
            {
                surplus = _idle.GetRange(0, count);
                _idle.RemoveRange(0, count);
            }
        }
        if (surplus is not null)
        {
            foreach (var connection in surplus)
            {
                Retire(connection, RetireReason.Surplus);
            }
        }
    }

    // The idle watch's read ended (IdleWatch): a connection still idle is closed, seen or broken and leaves the pool at
    // once; a leased one is left to the exchange, which continues the read.
    public void IdleReadEnded(UpstreamConnection connection, in IdleRead read)
    {
        bool wasIdle;
        lock (_lock)
        {
            wasIdle = _idle.Remove(connection);
            Debug.Assert(!wasIdle || !ReferenceEquals(_sentinel, connection), "the sentinel was in the idle stack");
            if (!wasIdle && ReferenceEquals(_sentinel, connection))
            {
                _sentinel = null;
                wasIdle = true;
            }
        }
        if (!wasIdle)
        {
            return;
        }
        ObserveClose(connection, _time.GetTimestamp(), read);
        Retire(connection, RetireReason.ClosedWhileIdle);
    }

    private void ObserveClose(UpstreamConnection connection, long now, IdleRead read)
    {
        var reset = IsReset(read.Error);
        if (read.Error is null && !read.Result.Buffer.IsEmpty)
        {
            return; // a stray byte: a broken destination, not a keep-alive limit
        }
        Interlocked.Increment(ref reset ? ref _closedByReset : ref _closedByFin);
        KeepAlive.ObserveIdleClose(connection.KeepAlive, now);
    }

    // A TLS stream can wrap the socket's error one level deeper than a plain stream does.
    private static bool IsReset(Exception? error)
    {
        for (var e = error; e is not null; e = e.InnerException)
        {
            if (e is SocketException { SocketErrorCode: SocketError.ConnectionReset })
            {
                return true;
            }
        }
        return false;
    }

    private void Retire(UpstreamConnection connection, RetireReason reason)
    {
        Debug.Assert(!connection.IsDisposed, "a connection retired twice");
        Interlocked.Increment(ref _retired[(int)reason]);
        AssertCounts();
        connection.Dispose();
        bool counted;
        PortSpaceKey key;
        lock (_lock)
        {
            counted = _tuples.Remove(connection, out key);
        }
        if (counted)
        {
            Ports.Closed(key);
        }
    }

    // Every connection opened is leased (Active), idle, the sentinel, between two of these, or retired once: never more
    // leased and retired than opened. Retired is read first and Opened last, and both only grow, so the check holds
    // while other threads lease and retire.
    [Conditional("DEBUG")]
    private void AssertCounts()
    {
        var retired = 0L;
        for (var i = 0; i < _retired.Length; i++)
        {
            retired += Interlocked.Read(ref _retired[i]);
        }
        var active = Active;
        Debug.Assert(active >= 0 && active + retired <= Opened, $"{active} leased and {retired} retired of {Opened} opened");
    }

    private void Scavenge()
    {
        var now = _time.GetTimestamp();
        RetireSurplus(now);
        List<(UpstreamConnection, RetireReason)>? expired = null;
        lock (_lock)
        {
            for (var i = _idle.Count - 1; i >= 0; i--)
            {
                var c = _idle[i];
                Debug.Assert(!ReferenceEquals(c, _sentinel), "the sentinel was in the idle stack");
                var keepAlive = c.KeepAlive;
                if (KeepAlive.ExpiryReason(keepAlive, now) is not { } reason)
                {
                    // Still in the list, so its idle watch has seen no close.
                    KeepAlive.NoteSurvived(keepAlive, now);
                    continue;
                }
                _idle.RemoveAt(i);
                if (KeepAlive.KeepsAsSentinel(reason, sentinelKept: _sentinel is not null))
                {
                    _sentinel = c;
                    continue;
                }
                (expired ??= []).Add((c, reason));
            }
            if (_sentinel is { } sentinel && KeepAlive.WatchSentinel(sentinel.KeepAlive, now) != SentinelVerdict.Watching)
            {
                _sentinel = null;
                (expired ??= []).Add((sentinel, RetireReason.LearnedLimit));
            }
        }
        if (expired is not null)
        {
            foreach (var (connection, reason) in expired)
            {
                Retire(connection, reason);
            }
        }
    }

    public ValueTask DisposeAsync()
    {
        _scavenger.Dispose();
        List<UpstreamConnection> idle;
        lock (_lock)
        {
            _disposed = true;
            idle = [.. _idle];
            if (_sentinel is not null)
            {
                idle.Add(_sentinel);
                _sentinel = null;
            }
            _idle.Clear();
        }
        _slots.Shutdown();
        foreach (var c in idle)
        {
            Retire(c, RetireReason.Shutdown);
        }
        Debug.Assert(Idle == 0 && _sentinel is null);
        return ValueTask.CompletedTask;
    }
}
