using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Server.Kestrel.Transport.Sockets;

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
                Unix.ClearCloseOnExec(socket.SafeHandle);
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

    private static Socket Bind(IPEndPoint endPoint)
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

    // Held by each accept loop while it is inside an accept, so that no socket is closed under one.
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
        // Cancelling an accept completes it on the accepting thread; the bound only matters if one is stuck.
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(5);
        while (Volatile.Read(ref _accepting) > 0 && DateTime.UtcNow < deadline)
        {
            await Task.Delay(5);
        }
        CloseAll();
    }

    private void CloseAll()
    {
        lock (_lock)
        {
            foreach (var socket in _owned.Concat(_inherited))
            {
                // Disposing a socket with an accept pending makes .NET close it abortively: it sets SO_LINGER 0 on
                // the socket itself, so every connection a successor accepts from it would inherit that and end
                // with a reset instead of a FIN; and a close racing a running accept makes .NET disconnect the
                // socket, unless the descriptor lacks FD_CLOEXEC ("may be shared with other processes"). Accepts
                // are over by now; clearing the flag covers the race all the same.
                Unix.ClearCloseOnExec(socket.SafeHandle);
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
/// Kestrel's transport for <see cref="OwnedListenEndPoint"/>: the accept loop of Kestrel's socket transport, except
/// that unbinding cancels the pending accept instead of disposing the socket. Accepted connections are Kestrel's
/// own socket connections (<see cref="SocketConnectionContextFactory"/>).
/// </summary>
internal sealed class OwnedSocketTransportFactory(ILoggerFactory loggers) : IConnectionListenerFactory, IConnectionListenerFactorySelector
{
    public bool CanBind(EndPoint endpoint) => endpoint is OwnedListenEndPoint;

    public ValueTask<IConnectionListener> BindAsync(EndPoint endpoint, CancellationToken cancellationToken = default)
    {
        var owned = (OwnedListenEndPoint)endpoint;
        var contexts = new SocketConnectionContextFactory(new SocketConnectionFactoryOptions(),
            loggers.CreateLogger("Microsoft.AspNetCore.Server.Kestrel.Transport.Sockets"));
        return ValueTask.FromResult<IConnectionListener>(new Listener(owned, contexts));
    }

    private sealed class Listener(OwnedListenEndPoint owned, SocketConnectionContextFactory contexts) : IConnectionListener
    {
        private readonly CancellationTokenSource _unbound = new();

        // Kestrel reports this as the listener's address; the socket's, so that port 0 shows the port it got.
        public EndPoint EndPoint { get; } = owned.Socket.LocalEndPoint!;

        public async ValueTask<ConnectionContext?> AcceptAsync(CancellationToken cancellationToken = default)
        {
            owned.Owner.EnterAccept();
            try
            {
                return await AcceptCoreAsync(cancellationToken);
            }
            finally
            {
                owned.Owner.ExitAccept();
            }
        }

        private async ValueTask<ConnectionContext?> AcceptCoreAsync(CancellationToken cancellationToken)
        {
            using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, _unbound.Token, owned.Owner.StopAcceptingToken);
            while (true)
            {
                try
                {
                    var accepted = await owned.Socket.AcceptAsync(stop.Token);
                    accepted.NoDelay = true;
                    return contexts.Create(accepted);
                }
                catch (OperationCanceledException) when (stop.IsCancellationRequested)
                {
                    return null; // Kestrel's accept loop ends on null
                }
                catch (ObjectDisposedException) when (owned.Owner.StoppedAccepting || _unbound.IsCancellationRequested)
                {
                    return null;
                }
                catch (SocketException ex) when (ex.SocketErrorCode == SocketError.ConnectionReset)
                {
                    // The client gave up while the connection was queued; Kestrel's transport skips these too.
                }
            }
        }

        public ValueTask UnbindAsync(CancellationToken cancellationToken = default)
        {
            _unbound.Cancel();
            return ValueTask.CompletedTask;
        }

        public ValueTask DisposeAsync()
        {
            _unbound.Cancel();
            _unbound.Dispose();
            contexts.Dispose();
            return ValueTask.CompletedTask;
        }
    }
}
