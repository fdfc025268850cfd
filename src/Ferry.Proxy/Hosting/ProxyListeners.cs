using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using Ferry.Configuration;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Connections.Features;

namespace Ferry.Hosting;

/// <summary>
/// One proxied listener as it runs: its listening socket, the certificates it serves, and the connections it accepted,
/// so that a configuration reload that changes or removes it can close them gracefully while the others go on.
/// </summary>
internal sealed class ProxyListener
{
    private readonly ConcurrentDictionary<ConnectionContext, byte> _connections = new();
    private volatile bool _closing;

    public ProxyListener(ListenerConfig config, ListenSockets sockets, ListenerCertificates? certificates = null)
    {
        Config = config;
        Sockets = sockets;
        Certificates = certificates;
    }

    public ListenerConfig Config { get; }

    public ListenSockets Sockets { get; }

    // Set for a listener started by a reload; the first Kestrel instance reads its listeners' from the CertificateStore.
    public ListenerCertificates? Certificates { get; }

    public Socket Socket => Sockets.Owned[0];

    public int Connections => _connections.Count;

    public DrainState Drain { get; } = new();

    public Uri Uri
    {
        get
        {
            var bound = (IPEndPoint)Socket.LocalEndPoint!;
            var address = bound.Address.Equals(IPAddress.Any) ? IPAddress.Loopback
                : bound.Address.Equals(IPAddress.IPv6Any) ? IPAddress.IPv6Loopback
                : bound.Address;
            return new Uri($"{(Config.Tls is null ? "http" : "https")}://{new IPEndPoint(address, bound.Port)}");
        }
    }

    // Outermost connection middleware of the listener.
    public async Task ServeAsync(ConnectionContext connection, ConnectionDelegate next)
    {
        _connections.TryAdd(connection, 0);
        try
        {
            if (_closing)
            {
                // Accepted just before the listener stopped accepting: it closes like the others.
                RequestClose(connection);
            }
            await next(connection);
        }
        finally
        {
            _connections.TryRemove(connection, out _);
        }
    }

    /// <summary>
    /// Stops accepting (closing this descriptor; a listener that took the same address over holds its own). From now
    /// on each HTTP/1.x response of the listener says "Connection: close", so that busy keep-alive clients leave
    /// between two requests rather than meet an idle connection closed under the request they are sending.
    /// </summary>
    public async Task RetireAsync()
    {
        Drain.Begin();
        await Sockets.StopAcceptingAsync();
    }

    /// <summary>After the drain grace: the connections left are asked to close as Kestrel does at shutdown (an idle
    /// HTTP/1.1 connection closes now, a busy one after its response; HTTP/2 gets GOAWAY).</summary>
    public void CloseConnections()
    {
        _closing = true;
        foreach (var connection in _connections.Keys)
        {
            RequestClose(connection);
        }
    }

    private static void RequestClose(ConnectionContext connection) =>
        connection.Features.Get<IConnectionLifetimeNotificationFeature>()?.RequestClose();
}

/// <summary>
/// The proxied listeners of a running server and their changes on reload (docs/configuration.md, "Reload"). A
/// listener whose settings did not change keeps its socket and its connections. An added or changed listener is
/// served by a new Kestrel instance, started before the old one stops accepting; a changed listener that keeps its
/// address takes the same listening socket over (a duplicate descriptor), so no connection is refused in between.
/// </summary>
internal sealed class ProxyListeners : IAsyncDisposable
{
    // Longest wait, after its listeners retired, for a Kestrel instance started by a reload to finish its requests.
    private static readonly TimeSpan StopTimeout = TimeSpan.FromSeconds(30);

    private readonly Lock _lock = new();
    private readonly List<(WebApplication App, IReadOnlyList<ProxyListener> Listeners)> _started = []; // guarded by _lock
    private readonly List<Task> _stopping = []; // guarded by _lock
    private readonly TimeProvider _time;
    private readonly TimeSpan _drainGrace;
    private readonly CancellationTokenSource _serverStopping = new();
    private Func<IReadOnlyList<ProxyListener>, WebApplication>? _createApp;
    private IReadOnlyList<ProxyListener> _current;

    public ProxyListeners(IReadOnlyList<ProxyListener> listeners, TimeProvider time, TimeSpan drainGrace)
    {
        _current = listeners;
        _time = time;
        _drainGrace = drainGrace;
    }

    /// <summary>The listeners serving now, in the configuration's order.</summary>
    public IReadOnlyList<ProxyListener> Current => Volatile.Read(ref _current);

    // Every socket Ferry listens on for proxied traffic: what a successor takes over.
    public IReadOnlyList<Socket> Sockets => [.. Current.SelectMany(l => l.Sockets.Owned)];

    // Set once the first Kestrel instance is built: how a reload builds one for the listeners it starts.
    public void CanStart(Func<IReadOnlyList<ProxyListener>, WebApplication> createApp) => _createApp = createApp;

    public bool CanReload => _createApp is not null;

    /// <summary>The listener for <paramref name="config"/>: on the inherited socket bound to its address, or a new one.</summary>
    public static ProxyListener Open(ListenerConfig config, ListenSockets inherited)
    {
        var sockets = new ListenSockets();
        sockets.Adopt(inherited.Release(config.EndPoint) ?? ListenSockets.Bind(config.EndPoint));
        return new ProxyListener(config, sockets);
    }

    /// <summary>
    /// Binds what the <paramref name="changed"/> listeners (added, changed or removed, by name) need and loads their
    /// certificates; nothing serves yet. Throws IOException when an address cannot be bound, having bound nothing.
    /// </summary>
    public ListenerChange Prepare(IReadOnlyList<ListenerConfig> next, IReadOnlyCollection<string> changed)
    {
        var current = Current;
        var names = new HashSet<string>(changed, StringComparer.OrdinalIgnoreCase);
        var added = new List<ProxyListener>();
        var handOvers = new List<(ProxyListener From, ProxyListener To)>();
        try
        {
            foreach (var config in next.Where(l => names.Contains(l.Name)))
            {
                // The address may be served now, by this listener or by another one that is going: share its socket.
                var serving = current.FirstOrDefault(l => ListenSockets.SameEndPoint(l.Socket.LocalEndPoint, config.EndPoint));
                var socket = serving is null
                    ? ListenSockets.Bind(config.EndPoint)
                    : new Socket(new SafeSocketHandle(Unix.Duplicate(serving.Socket.SafeHandle), ownsHandle: true));
                var sockets = new ListenSockets();
                sockets.Adopt(socket);
                var certificates = config.Tls is { } tls ? new ListenerCertificates(config.Name, config.Protocols, tls, _time.GetUtcNow()) : null;
                var listener = new ProxyListener(config, sockets, certificates);
                added.Add(listener);
                if (serving is not null)
                {
                    handOvers.Add((serving, listener));
                }
            }
        }
        catch
        {
            CloseSockets(added);
            throw;
        }
        var kept = current.Where(l => !names.Contains(l.Config.Name)).ToDictionary(l => l.Config.Name, StringComparer.OrdinalIgnoreCase);
        var order = next.Select(l => kept.GetValueOrDefault(l.Name) ?? added.First(a => a.Config.Name.Equals(l.Name, StringComparison.OrdinalIgnoreCase))).ToArray();
        return new ListenerChange(added, [.. current.Where(l => names.Contains(l.Config.Name))], order, [.. names], handOvers);
    }

    /// <summary>Starts serving the added listeners, beside the ones they replace; on failure nothing serves them.</summary>
    public async Task StartAsync(ListenerChange change, CancellationToken cancellationToken = default)
    {
        if (change.Added.Count == 0)
        {
            return;
        }
        var app = _createApp!(change.Added);
        try
        {
            await app.StartAsync(cancellationToken);
        }
        catch
        {
            await app.DisposeAsync();
            CloseSockets(change.Added);
            throw;
        }
        lock (_lock)
        {
            _started.Add((app, change.Added));
        }
    }

    /// <summary>A reload that failed after <see cref="StartAsync"/>: the added listeners stop and their sockets close
    /// (closing a duplicate leaves the socket it shares open); the running ones were never touched.</summary>
    public async Task AbortAsync(ListenerChange change)
    {
        WebApplication? app;
        lock (_lock)
        {
            app = _started.FirstOrDefault(s => ReferenceEquals(s.Listeners, change.Added)).App;
            _started.RemoveAll(s => ReferenceEquals(s.Listeners, change.Added));
        }
        if (app is not null)
        {
            foreach (var (from, to) in change.HandOvers)
            {
                to.Sockets.HandOver(from.Sockets);
            }
            await Task.WhenAll(change.Added.Select(l => l.RetireAsync()));
            foreach (var listener in change.Added)
            {
                listener.CloseConnections();
            }
            await StopAsync(app);
        }
        CloseSockets(change.Added);
    }

    private static void CloseSockets(IEnumerable<ProxyListener> listeners)
    {
        foreach (var listener in listeners)
        {
            listener.Sockets.Dispose();
        }
    }

    /// <summary>
    /// The new listeners are current; the ones they replace stop accepting (when this returns, a connection to a removed
    /// address is refused), drain their connections for the drain grace (as a restart does), then close those left. A
    /// Kestrel instance started by an earlier reload whose listeners are all gone stops then, once its requests are done.
    /// </summary>
    public async Task CommitAsync(ListenerChange change)
    {
        Volatile.Write(ref _current, change.Current);
        foreach (var (from, to) in change.HandOvers)
        {
            from.Sockets.HandOver(to.Sockets);
        }
        await Task.WhenAll(change.Retired.Select(l => l.RetireAsync()));
        lock (_lock)
        {
            var done = _started.Where(s => !s.Listeners.Any(change.Current.Contains)).Select(s => s.App).ToList();
            _started.RemoveAll(s => done.Contains(s.App));
            _stopping.RemoveAll(t => t.IsCompleted);
            _stopping.Add(DrainAsync(change.Retired, done));
        }
    }

    private async Task DrainAsync(IReadOnlyList<ProxyListener> retired, IReadOnlyList<WebApplication> done)
    {
        try
        {
            await Task.Delay(_drainGrace, _time, _serverStopping.Token);
        }
        catch (OperationCanceledException)
        {
            // The server stops: Kestrel's own stop closes what is left.
        }
        foreach (var listener in retired)
        {
            listener.CloseConnections();
        }
        await Task.WhenAll(done.Select(StopAsync));
    }

    // The server stops: drains cut short, and what is still running.
    private async Task<(WebApplication[] Apps, Task[] Retiring)> StoppingAsync(bool clear)
    {
        await _serverStopping.CancelAsync();
        lock (_lock)
        {
            var apps = _started.Select(s => s.App).ToArray();
            if (clear)
            {
                _started.Clear();
            }
            return (apps, [.. _stopping]);
        }
    }

    private async Task StopAsync(WebApplication app)
    {
        using var timeout = new CancellationTokenSource(StopTimeout, _time);
        await app.StopAsync(timeout.Token);
        await app.DisposeAsync();
    }

    /// <summary>Stops accepting on every listener, without closing a socket a successor holds.</summary>
    public Task StopAcceptingAsync() => Task.WhenAll(Current.Select(l => l.Sockets.StopAcceptingAsync()));

    // At server stop, beside the first Kestrel instance: the ones reloads started stop the same way.
    public async Task StopAsync(CancellationToken cancellationToken)
    {
        var (apps, retiring) = await StoppingAsync(clear: false);
        await Task.WhenAll(apps.Select(a => a.StopAsync(cancellationToken)));
        await Task.WhenAll(retiring);
    }

    public async ValueTask DisposeAsync()
    {
        var (apps, retiring) = await StoppingAsync(clear: true);
        foreach (var app in apps)
        {
            await app.DisposeAsync();
        }
        await Task.WhenAll(retiring);
        foreach (var listener in Current)
        {
            listener.Sockets.Dispose();
        }
    }
}

/// <summary>What a reload changes in the listeners: prepared by <see cref="ProxyListeners.Prepare"/>, then started and
/// committed, or aborted.</summary>
internal sealed record ListenerChange(IReadOnlyList<ProxyListener> Added, IReadOnlyList<ProxyListener> Retired,
    IReadOnlyList<ProxyListener> Current, IReadOnlyList<string> Names, IReadOnlyList<(ProxyListener From, ProxyListener To)> HandOvers);
