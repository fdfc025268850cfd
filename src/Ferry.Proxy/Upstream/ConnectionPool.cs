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
// Two kinds of idle stack. On .NET's sockets (no event loop), one stack under the pool's lock. On the event loops
// (Engine: Loops), one stack per loop, as Envoy keeps a pool per worker: a loop's stack is touched on that loop's thread
// only, so the lease and the return of a request served on its loop take no lock; what another thread must do to it
// (the scavenger, a release or lease that continued on the thread pool, disposal) is posted to the loop. What spans
// the loops stays per destination: the idle total (Interlocked) for the idle cap and the MaxIdle floor, the sentinel
// (under the lock, off the request path), the slots, the demand and what was learned.
// Over 500 lines: the lock guards the shared stack and the sentinel, and the invariants between them (Debug.Asserts on
// the counts); opening a connection (connect, name resolution, TLS) is the next piece to move out.
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
    private readonly List<UpstreamConnection> _idle = []; // connections without a loop; index 0 = oldest idle, last = warmest
    private LoopIdle?[] _loops = [];                      // by EventLoop.Index; replaced (copy on write) under _lock
    private int _loopIdle;                                // idle connections in the loops' stacks, all loops together
    private readonly ITimer _scavenger;
    private readonly LeaseDemand _demand;
    private readonly long[] _retired = new long[Enum.GetValues<RetireReason>().Length]; // by reason
    private UpstreamConnection? _sentinel; // idle past the learned limit, never leased: detects a destination that changed
    private long _opened;        // connections established
    private long _reused;        // leases served by an idle connection
    private long _closedByFin;   // idle closes seen as FIN
    private long _closedByReset; // idle closes seen as RST
    private int _connecting;     // connects in progress
    private long _connectingSince; // since when _connecting has been above zero: the oldest pending connect, or older
    private long _slowConnects;  // connects that took a retransmitted SYN (>= 1 s): the listen queue was full
    private long _skippedUnsafe; // non-replayable leases that connected because every idle connection was too old
    private long _crossLoop;     // leases of an idle connection handed over by another loop than the request's client
    private int _active;         // connections leased to an exchange right now
    private volatile bool _disposed;
    private readonly ConnectionLimitConfig _limit;
    private readonly ConcurrencyLimit? _adaptive;
    private readonly SlotQueue _slots;
    private readonly IReadOnlyList<System.Net.IPAddress> _sources; // local addresses new connections bind to, in turn
    private int _nextSource;     // round-robin position in _sources

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
    public int Idle
    {
        get
        {
            lock (_lock)
            {
                return _idle.Count + Volatile.Read(ref _loopIdle);
            }
        }
    }
    public int Queued => _slots.Queued;

    // Idle connections in `loop`'s stack (Engine: Loops).
    internal int IdleOn(EventLoop loop) => Volatile.Read(ref _loops) is var loops && loop.Index < loops.Length ? loops[loop.Index]?.Count ?? 0 : 0;

    // Whether an idle connection is kept past the learned idle timeout as the sentinel.
    internal bool HasSentinel => Volatile.Read(ref _sentinel) is not null;

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
    // `loop`: the event loop serving the request's client (Engine: Loops); the lease is made on it, from its own idle
    // stack, and a new connection is opened on it, so that the exchange runs on one thread.
    public async ValueTask<Lease> AcquireAsync(Http1Limits limits, bool onlySafeIdle, bool forceNew, CancellationToken requestAborted, bool upgrade = false,
        EventLoop? loop = null)
    {
        var slot = _adaptive is null ? _limit.MaxConnections > 0 : !upgrade;
        if (slot)
        {
            await _slots.AcquireAsync(requestAborted, loop);
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
        _adaptive.Sample(latency, InFlight, Volatile.Read(ref _connecting) > 0 ? _time.GetElapsedTime(Volatile.Read(ref _connectingSince)) : TimeSpan.Zero);
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
            if (loop is null)
            {
                lock (_lock)
                {
                    // Read under the lock: a connection released meanwhile set its IdleSince before it entered the
                    // stack, so no idle time comes out negative.
                    now = _time.GetTimestamp();
                    candidate = TakeWarmest(_idle, onlySafeIdle, now);
                }
            }
            else
            {
                // A lease that continued off its loop (after a slot's wait, on an HTTP/2 stream's thread) moves there:
                // the stack is the loop's, and the exchange runs there anyway.
                await loop.SwitchTo();
                var own = LoopStack(loop);
                now = _time.GetTimestamp();
                candidate = Owns(own) ? TakeWarmest(own, onlySafeIdle, now) : TakeWarmestLocked(own, onlySafeIdle, now);
                if (candidate is null && own.Count == 0 && Volatile.Read(ref _loopIdle) > 0)
                {
                    // Another loop has idle connections: one is handed over rather than a new one opened, as Envoy's
                    // per-worker pools would. Connecting cost no less CPU, and it would let a destination's connections
                    // grow to a peak per loop, past MaxConnections (docs/decisions/2026-12-03-per-loop-pools.md).
                    candidate = await HandOverAsync(loop, onlySafeIdle);
                    now = _time.GetTimestamp();
                }
            }
            if (candidate is null)
            {
                break;
            }
            if (KeepAlive.ExpiryReason(candidate.KeepAlive, now) is { } reason)
            {
                Retire(candidate, reason);
                continue;
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
        if (Interlocked.Increment(ref _connecting) == 1)
        {
            Volatile.Write(ref _connectingSince, _time.GetTimestamp());
        }
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
            connection.Tuple = key;
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

    // The idle connections of one event loop: read and changed on that loop's thread only, so that a lease and a
    // return there take no lock. Once the loop has stopped, what is posted to it runs on the thread that posts, maybe
    // on several threads at once: from then on the stack is changed under the pool's lock (Owns is false for good).
    private sealed class LoopIdle(ConnectionPool pool, EventLoop loop)
    {
        private int _count;

        public ConnectionPool Pool { get; } = pool;
        public EventLoop Loop { get; } = loop;
        public List<UpstreamConnection> Stack { get; } = []; // index 0 = oldest idle, last = warmest

        // Stack.Count, published for other threads: a lease whose own loop has none looks for a loop that has some.
        public int Count => Volatile.Read(ref _count);

        public void Push(UpstreamConnection connection)
        {
            Stack.Add(connection);
            connection.InLoopStack = true;
            Volatile.Write(ref _count, Stack.Count);
            Interlocked.Increment(ref Pool._loopIdle);
        }

        // `reserved`: the pool's idle total was already decremented for it (RetireSurplus).
        public UpstreamConnection RemoveAt(int index, bool reserved = false)
        {
            var connection = Stack[index];
            Stack.RemoveAt(index);
            connection.InLoopStack = false;
            Volatile.Write(ref _count, Stack.Count);
            if (!reserved)
            {
                Interlocked.Decrement(ref Pool._loopIdle);
            }
            return connection;
        }
    }

    // The idle stack of `loop`, made on first use (once per pool and loop, under the lock).
    private LoopIdle LoopStack(EventLoop loop)
    {
        var loops = Volatile.Read(ref _loops);
        return loop.Index < loops.Length && loops[loop.Index] is { } idle ? idle : AddLoopStack(loop);
    }

    private LoopIdle AddLoopStack(EventLoop loop)
    {
        lock (_lock)
        {
            var loops = _loops;
            if (loop.Index < loops.Length && loops[loop.Index] is { } idle)
            {
                return idle;
            }
            var grown = new LoopIdle?[Math.Max(loops.Length, loop.Index + 1)];
            loops.CopyTo(grown, 0);
            idle = grown[loop.Index] = new LoopIdle(this, loop);
            Volatile.Write(ref _loops, grown);
            return idle;
        }
    }

    private static bool Owns(LoopIdle idle) => idle.Loop.IsOnLoop && !idle.Loop.IsStopped;

    // Runs `action` where `idle`'s stack may be changed: at once on its loop, else posted there; a post that runs off
    // the loop (the loop has stopped) takes the lock.
    private void OnLoop<T>(LoopIdle idle, Action<ConnectionPool, LoopIdle, T> action, T state)
    {
        if (Owns(idle))
        {
            action(this, idle, state);
            return;
        }
        idle.Loop.Post(static s =>
        {
            var (idle, action, state) = ((LoopIdle, Action<ConnectionPool, LoopIdle, T>, T))s!;
            if (Owns(idle))
            {
                action(idle.Pool, idle, state);
                return;
            }
            lock (idle.Pool._lock)
            {
                action(idle.Pool, idle, state);
            }
        }, (idle, action, state));
    }

    // OnLoop, for a caller that waits until it has run.
    private Task OnLoopAsync(LoopIdle idle, Action<ConnectionPool, LoopIdle> action)
    {
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        OnLoop(idle, static (pool, idle, state) =>
        {
            try
            {
                state.Action(pool, idle);
                state.Done.SetResult();
            }
            catch (Exception ex)
            {
                state.Done.SetException(ex);
            }
        }, (Action: action, Done: done));
        return done.Task;
    }

    // The index of the warmest idle connection of `stack`, or -1. `onlySafeIdle`: only if it is safe for a request
    // that cannot be replayed; if the warmest is too old, so is every other: they are left to requests that can be.
    private int Warmest(List<UpstreamConnection> stack, bool onlySafeIdle, long now)
    {
        if (stack.Count == 0)
        {
            return -1;
        }
        if (onlySafeIdle && !KeepAlive.IsSafeForNonReplayable(stack[^1].KeepAlive, now))
        {
            Interlocked.Increment(ref _skippedUnsafe);
            return -1;
        }
        return stack.Count - 1;
    }

    // Guarded by _lock.
    private UpstreamConnection? TakeWarmest(List<UpstreamConnection> stack, bool onlySafeIdle, long now)
    {
        var index = Warmest(stack, onlySafeIdle, now);
        if (index < 0)
        {
            return null;
        }
        var candidate = stack[index];
        stack.RemoveAt(index);
        return candidate;
    }

    // Where `idle` is owned (see LoopIdle).
    private UpstreamConnection? TakeWarmest(LoopIdle idle, bool onlySafeIdle, long now) =>
        Warmest(idle.Stack, onlySafeIdle, now) is var index and >= 0 ? idle.RemoveAt(index) : null;

    private UpstreamConnection? TakeWarmestLocked(LoopIdle idle, bool onlySafeIdle, long now)
    {
        lock (_lock)
        {
            return TakeWarmest(idle, onlySafeIdle, now);
        }
    }

    // The request's loop has no idle connection and another has: the loop with the most pops its warmest and moves it
    // to the request's loop (LoopStream.MoveToAsync), where this continues. Null if that loop has none left by then;
    // this then continues on that loop, and the connection opened next is still served by the request's loop.
    private async ValueTask<UpstreamConnection?> HandOverAsync(EventLoop loop, bool onlySafeIdle)
    {
        LoopIdle? donor = null;
        foreach (var idle in Volatile.Read(ref _loops))
        {
            if (idle is not null && !ReferenceEquals(idle.Loop, loop) && idle.Count > (donor?.Count ?? 0))
            {
                donor = idle;
            }
        }
        if (donor is null)
        {
            return null;
        }
        await donor.Loop.SwitchTo();
        var now = _time.GetTimestamp();
        var candidate = Owns(donor) ? TakeWarmest(donor, onlySafeIdle, now) : TakeWarmestLocked(donor, onlySafeIdle, now);
        if (candidate is null)
        {
            return null;
        }
        Interlocked.Increment(ref _crossLoop);
        await candidate.MoveToAsync(loop);
        return candidate;
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
        foreach (var idle in Volatile.Read(ref _loops))
        {
            if (idle is not null)
            {
                OnLoop(idle, static (pool, idle, _) => pool.RetireGoneAddresses(idle), 0);
            }
        }
    }

    // Where `idle` is owned.
    private void RetireGoneAddresses(LoopIdle idle)
    {
        for (var i = idle.Stack.Count - 1; i >= 0; i--)
        {
            if (IsAddressGone(idle.Stack[i]))
            {
                Retire(idle.RemoveAt(i), RetireReason.AddressGone);
            }
        }
    }

    private bool IsAddressGone(UpstreamConnection connection) =>
        _destination.Resolver is { } resolver && connection.Tuple is { } key && !resolver.Contains(key.Remote.Address);

    // Called exactly once per lease. `retire` null: the exchange completed cleanly and the connection may be reused.
    public void Release(UpstreamConnection connection, RetireReason? retire)
    {
        var active = Interlocked.Decrement(ref _active);
        Debug.Assert(active >= 0, "a lease released twice");
        Debug.Assert(!ReferenceEquals(connection, _sentinel), "the sentinel was leased");
        var holdsSlot = connection.HoldsSlot;
        connection.HoldsSlot = false;
        var reason = retire;
        if (retire is null)
        {
            reason = KeepAlive.Released(connection.KeepAlive, out var probe);
            if (probe)
            {
                connection.BeyondLearnedLimit = true;
            }
        }
        if (reason is null && connection.Loop is { } loop)
        {
            // Back to its loop's stack, from an exchange that ended on another thread through a post: until then it
            // is neither leased nor idle, and its slot and demand stay taken, as if the exchange had lasted that long.
            OnLoop(LoopStack(loop), static (pool, idle, state) => pool.ReturnToLoop(idle, state.Connection, state.HoldsSlot),
                (Connection: connection, HoldsSlot: holdsSlot));
            return;
        }
        UpstreamConnection? coldest = null;
        if (reason is null)
        {
            connection.IdleSince = _time.GetTimestamp();
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
        Released(holdsSlot, coldest, connection, reason);
    }

    // Where `idle` is owned: a connection released cleanly goes on top of its loop's stack. The idle cap counts every
    // loop's idle connections; above it, this loop's coldest goes, or with none here, the connection itself.
    private void ReturnToLoop(LoopIdle idle, UpstreamConnection connection, bool holdsSlot)
    {
        connection.IdleSince = _time.GetTimestamp();
        RetireReason? reason = null;
        UpstreamConnection? coldest = null;
        if (!_disposed && _config.MaxIdle > 0 && !IsAddressGone(connection))
        {
            if (Volatile.Read(ref _loopIdle) >= _demand.IdleCap(_config.MaxIdle))
            {
                if (idle.Stack.Count == 0)
                {
                    reason = RetireReason.PoolFull;
                }
                else
                {
                    coldest = idle.RemoveAt(0);
                }
            }
            if (reason is null)
            {
                idle.Push(connection);
                // If the close is already queued, the watch completes synchronously and removes the connection before
                // anyone can lease it.
                connection.Watch.Start(this);
            }
        }
        else
        {
            reason = _disposed ? RetireReason.Shutdown : _config.MaxIdle == 0 ? RetireReason.PoolFull : RetireReason.AddressGone;
        }
        Released(holdsSlot, coldest, connection, reason);
    }

    private void Released(bool holdsSlot, UpstreamConnection? coldest, UpstreamConnection connection, RetireReason? reason)
    {
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

    // Where `idle` is owned. MaxIdle is the destination's floor, whichever loops hold the connections: each one this
    // loop retires first takes one off the idle total while the total is above it, so that loops retiring at once
    // never go below it together.
    private void RetireSurplus(LoopIdle idle, long now)
    {
        while (idle.Stack.Count > 0 && _time.GetElapsedTime(idle.Stack[0].IdleSince, now) >= LeaseDemand.Window && TryTakeSurplus())
        {
            Retire(idle.RemoveAt(0, reserved: true), RetireReason.Surplus);
        }
    }

    private bool TryTakeSurplus()
    {
        int total;
        do
        {
            total = Volatile.Read(ref _loopIdle);
            if (!LeaseDemand.IsSurplus(total, _config.MaxIdle, LeaseDemand.Window))
            {
                return false;
            }
        }
        while (Interlocked.CompareExchange(ref _loopIdle, total - 1, total) != total);
        return true;
    }

    // The idle watch's read ended (IdleWatch): a connection still idle is closed, seen or broken and leaves the pool at
    // once; a leased one is left to the exchange, which continues the read.
    public void IdleReadEnded(UpstreamConnection connection, in IdleRead read)
    {
        if (connection.Loop is { } loop)
        {
            // A loop's connection ends its reads on the loop; should one end elsewhere, its stack is looked at there.
            // That the watch still has ended then tells this idle period from a later one.
            OnLoop(LoopStack(loop), static (pool, idle, state) =>
            {
                if (state.Connection.InLoopStack && state.Connection.Watch.TryGetEnded(out _))
                {
                    idle.RemoveAt(idle.Stack.LastIndexOf(state.Connection));
                    pool.ClosedWhileIdle(state.Connection, state.Read);
                }
                else if (ReferenceEquals(Volatile.Read(ref pool._sentinel), state.Connection))
                {
                    pool.SentinelReadEnded(state.Connection, state.Read);
                }
            }, (Connection: connection, Read: read));
            return;
        }
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
        if (wasIdle)
        {
            ClosedWhileIdle(connection, read);
        }
    }

    private void SentinelReadEnded(UpstreamConnection connection, IdleRead read)
    {
        lock (_lock)
        {
            if (!ReferenceEquals(_sentinel, connection))
            {
                return;
            }
            _sentinel = null;
        }
        ClosedWhileIdle(connection, read);
    }

    private void ClosedWhileIdle(UpstreamConnection connection, IdleRead read)
    {
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
        Debug.Assert(!connection.InLoopStack, "an idle connection retired");
        Interlocked.Increment(ref _retired[(int)reason]);
        AssertCounts();
        connection.Dispose();
        if (connection.Tuple is { } key)
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
        _demand.Tick();
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
        foreach (var idle in Volatile.Read(ref _loops))
        {
            if (idle is not null && idle.Count > 0)
            {
                OnLoop(idle, static (pool, idle, _) => pool.Scavenge(idle), 0);
            }
        }
    }

    // Where `idle` is owned: its loop's share of Scavenge, on the loop's own clock reading.
    private void Scavenge(LoopIdle idle)
    {
        var now = _time.GetTimestamp();
        RetireSurplus(idle, now);
        for (var i = idle.Stack.Count - 1; i >= 0; i--)
        {
            var keepAlive = idle.Stack[i].KeepAlive;
            if (KeepAlive.ExpiryReason(keepAlive, now) is not { } reason)
            {
                // Still in the stack, so its idle watch has seen no close.
                KeepAlive.NoteSurvived(keepAlive, now);
                continue;
            }
            var c = idle.RemoveAt(i);
            if (KeepAlive.KeepsAsSentinel(reason, sentinelKept: Volatile.Read(ref _sentinel) is not null) && TryKeepAsSentinel(c))
            {
                continue;
            }
            Retire(c, reason);
        }
    }

    private bool TryKeepAsSentinel(UpstreamConnection connection)
    {
        lock (_lock)
        {
            if (_sentinel is not null || _disposed)
            {
                return false;
            }
            _sentinel = connection;
            return true;
        }
    }

    public async ValueTask DisposeAsync()
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
        // Each loop empties its own stack; a connection returned there afterwards sees _disposed and retires.
        foreach (var loop in Volatile.Read(ref _loops))
        {
            if (loop is not null)
            {
                await OnLoopAsync(loop, static (pool, idle) =>
                {
                    while (idle.Stack.Count > 0)
                    {
                        pool.Retire(idle.RemoveAt(idle.Stack.Count - 1), RetireReason.Shutdown);
                    }
                });
            }
        }
        Debug.Assert(Idle == 0 && _sentinel is null);
    }
}
