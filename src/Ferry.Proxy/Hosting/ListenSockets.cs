using System.Buffers;
using System.Net;
using System.Net.Sockets;
using Ferry.Loops;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Server.Kestrel.Transport.Sockets;
using Microsoft.Extensions.Options;

namespace Ferry.Hosting;

/// <summary>
/// The listening sockets of one Ferry process. Ferry binds them itself (or adopts them from a predecessor or from
/// systemd) and lends them to Kestrel through <see cref="OwnedSocketTransportFactory"/>, so that Kestrel never closes
/// one: a listening socket shared with another process must only stop being accepted on, never be reset
/// (docs/decisions/2026-12-02-zero-drop-restarts.md).
/// </summary>
internal sealed class ListenSockets : IDisposable
{
    // Kestrel's own default; the kernel caps it at net.core.somaxconn.
    private const int Backlog = 512;

    private readonly List<Socket> _inherited;
    private readonly List<Socket> _owned = [];
    // Kestrel's duplicates of these sockets whose accept loops have ended while the socket lives on in this process
    // (a reload gave it to another listener). They stay open: the runtime registered each one with its epoll
    // instance, and a closed descriptor's registration lives on as long as the socket does, so a later duplicate
    // that got the same number could not be registered and would never be accepted on.
    private readonly List<int> _parked = [];
    private ListenSockets? _successor;
    private readonly CancellationTokenSource _stopAccepting = new();
    private readonly Lock _lock = new();
    private int _accepting;

    public ListenSockets(IEnumerable<Socket>? inherited = null) => _inherited = [.. inherited ?? []];

    /// <summary>Every socket this process listens on, in the order acquired: what a successor takes over.</summary>
    public IReadOnlyList<Socket> Owned
    {
        get
        {
            lock (_lock)
            {
                return [.. _owned];
            }
        }
    }

    /// <summary>Cancelled when the process stops accepting; each accept loop ends on it.</summary>
    public CancellationToken StopAcceptingToken => _stopAccepting.Token;

    public bool StoppedAccepting => _stopAccepting.IsCancellationRequested;

    /// <summary>The inherited socket bound to <paramref name="endPoint"/>, or a new one bound to it. An address in use
    /// is reported as an IOException, as Kestrel reports it.</summary>
    public Socket Acquire(IPEndPoint endPoint)
    {
        var socket = Release(endPoint) ?? Bind(endPoint);
        return Adopt(socket);
    }

    /// <summary>Takes an already listening socket (from another set) as one of this set's.</summary>
    public Socket Adopt(Socket socket)
    {
        lock (_lock)
        {
            _owned.Add(socket);
            return socket;
        }
    }

    /// <summary>Removes the inherited socket bound to <paramref name="endPoint"/> from this set and returns it, or null.</summary>
    public Socket? Release(IPEndPoint endPoint)
    {
        lock (_lock)
        {
            var index = endPoint.Port == 0 ? -1 : _inherited.FindIndex(s => SameEndPoint(s.LocalEndPoint, endPoint));
            if (index < 0)
            {
                return null;
            }
            var socket = _inherited[index];
            _inherited.RemoveAt(index);
            return socket;
        }
    }

    /// <summary>Closes the inherited sockets no listener took: addresses the configuration no longer has.</summary>
    public void CloseUnclaimed()
    {
        lock (_lock)
        {
            foreach (var socket in _inherited)
            {
                socket.Dispose();
            }
            _inherited.Clear();
        }
    }

    public static bool SameEndPoint(EndPoint? bound, IPEndPoint wanted)
    {
        if (bound is not IPEndPoint ip || ip.Port != wanted.Port)
        {
            return false;
        }
        var address = ip.Address.IsIPv4MappedToIPv6 ? ip.Address.MapToIPv4() : ip.Address;
        var other = wanted.Address.IsIPv4MappedToIPv6 ? wanted.Address.MapToIPv4() : wanted.Address;
        return address.Equals(other);
    }

    internal static Socket Bind(IPEndPoint endPoint)
    {
        var socket = new Socket(endPoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            if (endPoint.Address.Equals(IPAddress.IPv6Any))
            {
                socket.DualMode = true;
            }
            socket.Bind(endPoint);
            socket.Listen(Backlog);
            return socket;
        }
        catch (SocketException ex)
        {
            socket.Dispose();
            throw new IOException($"Failed to bind to address {endPoint}: {ex.Message}", ex);
        }
    }

    // Held by each Kestrel listener while it accepts, and until it has closed its duplicate after a stop.
    internal void EnterAccept() => Interlocked.Increment(ref _accepting);

    internal void ExitAccept() => Interlocked.Decrement(ref _accepting);

    /// <summary>
    /// Ends every accept loop, then closes this process's descriptors. A socket handed to a successor lives on in
    /// it (both descriptors refer to the same socket); one that is not shared is closed, so that new connections
    /// are refused at once rather than queued for a process that will never accept them.
    /// </summary>
    public async Task StopAcceptingAsync()
    {
        _stopAccepting.Cancel();
        // Each listener closes its duplicate once its cancelled accept has returned; the bound only matters if one is stuck.
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(5);
        while (Volatile.Read(ref _accepting) > 0 && DateTime.UtcNow < deadline)
        {
            await Task.Delay(5);
        }
        CloseAll();
    }

    /// <summary>The sockets live on in <paramref name="successor"/>, another set of this process: Kestrel duplicates
    /// of them that this set still holds, or that are unbound from now on, are parked there rather than closed.</summary>
    public void HandOver(ListenSockets successor)
    {
        lock (_lock)
        {
            _successor = successor;
            foreach (var parked in _parked)
            {
                successor.Park(parked);
            }
            _parked.Clear();
        }
    }

    // A Kestrel listener has let go of its duplicate of one of these sockets.
    internal void Unbound(int duplicate)
    {
        lock (_lock)
        {
            if (_successor is null)
            {
                Unix.Close(duplicate);
            }
            else
            {
                _successor.Park(duplicate);
            }
        }
    }

    private void Park(int duplicate)
    {
        lock (_lock)
        {
            if (_successor is null)
            {
                _parked.Add(duplicate);
            }
            else
            {
                _successor.Park(duplicate);
            }
        }
    }

    private void CloseAll()
    {
        lock (_lock)
        {
            foreach (var parked in _parked)
            {
                Unix.Close(parked);
            }
            _parked.Clear();
            // Nothing ever accepts on these descriptors (Kestrel accepts on duplicates), so closing one is a plain
            // close(2): it never resets the socket another process shares.
            foreach (var socket in _owned.Concat(_inherited))
            {
                socket.Dispose();
            }
            _inherited.Clear();
        }
    }

    public void Dispose()
    {
        _stopAccepting.Cancel();
        CloseAll();
        _stopAccepting.Dispose();
    }
}

/// <summary>A listening socket owned by <see cref="ListenSockets"/>, given to Kestrel as its endpoint.</summary>
internal sealed class OwnedListenEndPoint(Socket socket, ListenSockets owner) : EndPoint
{
    public Socket Socket { get; } = socket;

    public ListenSockets Owner { get; } = owner;

    public override AddressFamily AddressFamily => Socket.AddressFamily;

    public override string ToString() => Socket.LocalEndPoint?.ToString() ?? "(closed)";
}

/// <summary>
/// Kestrel's transport for <see cref="OwnedListenEndPoint"/>: Kestrel's own socket transport on a duplicate of the
/// owned descriptor (as with ListenHandle), behind a listener that can stop accepting before Kestrel stops, and that
/// closes the duplicate once Kestrel has let go of it. Accepted connections are Kestrel's socket connections, with
/// its options and memory pool.
/// </summary>
internal sealed class OwnedSocketTransportFactory(IOptions<SocketTransportOptions> options, ILoggerFactory loggers)
    : IConnectionListenerFactory, IConnectionListenerFactorySelector
{
    private readonly SocketTransportFactory _sockets = new(options, loggers);

    public bool CanBind(EndPoint endpoint) => endpoint is OwnedListenEndPoint;

    public async ValueTask<IConnectionListener> BindAsync(EndPoint endpoint, CancellationToken cancellationToken = default)
    {
        var owned = (OwnedListenEndPoint)endpoint;
        var duplicate = Unix.Duplicate(owned.Socket.SafeHandle);
        try
        {
            return new Listener(await _sockets.BindAsync(new FileHandleEndPoint((ulong)duplicate, FileHandleType.Tcp), cancellationToken), owned.Owner, duplicate);
        }
        catch
        {
            Unix.Close(duplicate);
            throw;
        }
    }

    private sealed class Listener(IConnectionListener inner, ListenSockets owner, int duplicate) : OwnedListener(owner, duplicate)
    {
        public override EndPoint EndPoint => inner.EndPoint;

        protected override ValueTask<ConnectionContext?> AcceptInnerAsync(CancellationToken cancellationToken) => inner.AcceptAsync(cancellationToken);

        // Disposing a socket that owns its descriptor while an accept is pending makes .NET close it abortively: it
        // sets SO_LINGER 0 on the socket itself, so every connection a successor accepts from it would inherit that
        // and end with a reset instead of a FIN. Kestrel wraps a file handle without owning it, and the accept is
        // cancelled before Kestrel lets go of the socket all the same; the duplicate is closed after that.
        protected override ValueTask StopInnerAsync() => inner.UnbindAsync();

        protected override ValueTask DisposeInnerAsync() => inner.DisposeAsync();
    }
}

/// <summary>
/// A listener on a duplicate of an owned descriptor: it stops accepting when the owner does (a reload that retires
/// the listener, a hand-over to a successor), and lets the owner close the duplicate only once no accept is pending
/// on it and the transport under it has let go of it.
/// </summary>
internal abstract class OwnedListener(ListenSockets owner, int duplicate) : IConnectionListener
{
    private readonly CancellationTokenSource _unbound = new();
    private int _accepting;
    private int _innerUnbound;

    public abstract EndPoint EndPoint { get; }

    protected abstract ValueTask<ConnectionContext?> AcceptInnerAsync(CancellationToken cancellationToken);

    // A connection the transport accepted before the stop, to be served rather than closed: its client is connected.
    protected virtual ConnectionContext? TryTakeAccepted() => null;

    // Completes once the transport accepts no more (a transport that accepts ahead of AcceptAsync stops on its own
    // threads): what it holds then is all TryTakeAccepted will ever return.
    protected virtual ValueTask AcceptingStoppedAsync() => ValueTask.CompletedTask;

    protected abstract ValueTask StopInnerAsync();

    protected virtual ValueTask DisposeInnerAsync() => ValueTask.CompletedTask;

    public async ValueTask<ConnectionContext?> AcceptAsync(CancellationToken cancellationToken = default)
    {
        owner.EnterAccept();
        Interlocked.Increment(ref _accepting);
        try
        {
            using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, _unbound.Token, owner.StopAcceptingToken);
            try
            {
                return await AcceptInnerAsync(stop.Token);
            }
            catch (OperationCanceledException) when (stop.IsCancellationRequested)
            {
                await AcceptingStoppedAsync();
                if (TryTakeAccepted() is { } accepted)
                {
                    return accepted;
                }
                if (owner.StoppedAccepting)
                {
                    // Nothing accepts on this duplicate any more: close it now, so that the socket itself closes
                    // with the owner's descriptor unless a successor holds it.
                    Interlocked.Decrement(ref _accepting);
                    await UnbindInnerAsync();
                    Interlocked.Increment(ref _accepting);
                }
                return null; // Kestrel's accept loop ends on null
            }
        }
        finally
        {
            Interlocked.Decrement(ref _accepting);
            owner.ExitAccept();
        }
    }

    private async ValueTask UnbindInnerAsync()
    {
        _unbound.Cancel();
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(5);
        while (Volatile.Read(ref _accepting) > 0 && DateTime.UtcNow < deadline)
        {
            await Task.Delay(5);
        }
        if (Interlocked.Exchange(ref _innerUnbound, 1) == 0)
        {
            await StopInnerAsync();
            owner.Unbound(duplicate);
        }
    }

    public ValueTask UnbindAsync(CancellationToken cancellationToken = default) => UnbindInnerAsync();

    public async ValueTask DisposeAsync()
    {
        await UnbindInnerAsync();
        await DisposeInnerAsync();
        _unbound.Dispose();
    }
}

/// <summary>
/// The event loops' transport for <see cref="OwnedListenEndPoint"/> (Engine: Loops): every loop accepts on a duplicate
/// of the owned descriptor, with the same stop and unbind semantics as <see cref="OwnedSocketTransportFactory"/>:
/// accepting stops on the owner's <see cref="ListenSockets.StopAcceptingToken"/>, the duplicate leaves every loop's
/// epoll before the owner closes (or parks) it.
/// </summary>
internal sealed class OwnedLoopTransportFactory : IConnectionListenerFactory, IConnectionListenerFactorySelector, IDisposable
{
    private readonly EventLoops _loops;
    private readonly MemoryPool<byte> _pool;

    public OwnedLoopTransportFactory(EventLoops loops, IServiceProvider services)
    {
        _loops = loops;
        // Kestrel's pinned block pool, as its socket transport uses.
        _pool = services.GetService<IMemoryPoolFactory<byte>>()?.Create(new MemoryPoolOptions()) ?? MemoryPool<byte>.Shared;
    }

    public bool CanBind(EndPoint endpoint) => endpoint is OwnedListenEndPoint;

    public async ValueTask<IConnectionListener> BindAsync(EndPoint endpoint, CancellationToken cancellationToken = default)
    {
        var owned = (OwnedListenEndPoint)endpoint;
        var duplicate = Unix.Duplicate(owned.Socket.SafeHandle);
        var inner = new LoopListener(_loops, duplicate, _pool);
        try
        {
            await inner.StartAsync();
        }
        catch
        {
            await inner.StopAsync();
            Unix.Close(duplicate);
            throw;
        }
        return new Listener(inner, owned.Owner, duplicate, owned.Socket.LocalEndPoint!);
    }

    public void Dispose() => _pool.Dispose();

    private sealed class Listener : OwnedListener
    {
        private readonly LoopListener _inner;
        private readonly CancellationTokenRegistration _stopAccepting;

        public Listener(LoopListener inner, ListenSockets owner, int duplicate, EndPoint endPoint) : base(owner, duplicate)
        {
            _inner = inner;
            EndPoint = endPoint;
            // The loops accept ahead of Kestrel's accept loop: they stop the moment the owner does, not at the next
            // AcceptAsync, so that no connection is taken from a socket a successor now serves.
            _stopAccepting = owner.StopAcceptingToken.Register(static s => _ = ((LoopListener)s!).StopAcceptingAsync(), inner);
        }

        public override EndPoint EndPoint { get; }

        protected override async ValueTask<ConnectionContext?> AcceptInnerAsync(CancellationToken cancellationToken) =>
            await _inner.AcceptAsync(cancellationToken);

        protected override ConnectionContext? TryTakeAccepted() => _inner.TryTake();

        // A loop may accept between the owner's stop and its own: without waiting for every loop, such a connection
        // would be found after Kestrel's accept loop ended, and closed unserved.
        protected override ValueTask AcceptingStoppedAsync() => new(_inner.StopAcceptingAsync());

        // Only after every loop has taken the duplicate out of its epoll instance (a closed descriptor's number may be
        // reused at once) does the owner let go of it.
        protected override async ValueTask StopInnerAsync() => await _inner.StopAsync();

        protected override ValueTask DisposeInnerAsync()
        {
            _stopAccepting.Dispose();
            return ValueTask.CompletedTask;
        }
    }
}
