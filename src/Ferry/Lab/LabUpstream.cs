using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;

namespace Ferry.Lab;

/// <summary>
/// A small HTTP/1.1 server on raw sockets whose every connection can be made to misbehave on purpose
/// (FIN or RST, silent idle closes, tiny backlog, stalls). Kestrel would hide exactly what it exists to show.
/// </summary>
internal sealed class LabUpstream : IAsyncDisposable
{
    /// <summary>How long <see cref="DisposeAsync"/> waits for connection loops after closing their sockets.</summary>
    private static readonly TimeSpan DisposeWait = TimeSpan.FromSeconds(5);

    private readonly Socket _listener;
    private readonly CancellationTokenSource _stopping = new();
    private readonly SemaphoreSlim? _handlerSlots;                                   // free request slots, null when unlimited
    private readonly ConcurrentDictionary<LabConnection, byte> _connections = new(); // accepted and not yet released
    private readonly ConcurrentDictionary<(string Method, string Path), int> _requestCounts = new();
    private readonly ConcurrentQueue<Exception> _errors = new();                     // unexpected exceptions from routes or scripts
    private readonly Task _acceptLoop;
    private int _connectionsAccepted;                                                // sockets accepted since start
    private int _requestsReceived;                                                   // request heads parsed
    private int _openConnections;                                                    // accepted and not yet released
    private int _tlsHandshakeFailures;
    private readonly ConcurrentQueue<string> _clientCertificates = new();
    private CancellationTokenSource? _acceptWhileIdle;                               // cancels the pending accept when the last slot is taken
    private readonly ConcurrentDictionary<LabConnection, (long Since, CancellationTokenSource Idle)> _idle = new(); // waiting for a request, when an event loop closes them
    private readonly ITimer? _idleSweep;                                             // the periodic idle check (IdleCheckInterval)
    private int _disposed;

    private LabUpstream(LabUpstreamOptions options)
    {
        Options = options;
        if (options.MaxConcurrentRequests < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(options), options.MaxConcurrentRequests, "MaxConcurrentRequests must be at least 1");
        }
        _handlerSlots = options.MaxConcurrentRequests == int.MaxValue ? null : new SemaphoreSlim(options.MaxConcurrentRequests);
        _listener = new Socket(options.EndPoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            _listener.Bind(options.EndPoint);
            _listener.Listen(options.Backlog);
        }
        catch
        {
            _listener.Dispose();
            throw;
        }
        EndPoint = (IPEndPoint)_listener.LocalEndPoint!;
        Uri = new Uri($"{(options.ServerCertificate is null ? "http" : "https")}://{(EndPoint.AddressFamily == AddressFamily.InterNetworkV6 ? $"[{EndPoint.Address}]" : EndPoint.Address.ToString())}:{EndPoint.Port}/");
        if (options.IdleCheckInterval is { } interval && options.IdleTimeout is not null)
        {
            _idleSweep = options.TimeProvider.CreateTimer(static s => ((LabUpstream)s!).SweepIdle(), this, interval, interval);
        }
        _acceptLoop = AcceptLoopAsync();
    }

    /// <summary>Binds and listens before returning, so connections can be made at once.</summary>
    public static LabUpstream Start(LabUpstreamOptions options) => new(options);

    public LabUpstreamOptions Options { get; }
    public IPEndPoint EndPoint { get; }
    public Uri Uri { get; }
    public string Name => Options.Name;
    public int ConnectionsAccepted => Volatile.Read(ref _connectionsAccepted);
    public int RequestsReceived => Volatile.Read(ref _requestsReceived);
    public int OpenConnections => Volatile.Read(ref _openConnections);
    /// <summary>Connections whose TLS handshake failed (<see cref="LabUpstreamOptions.ServerCertificate"/>).</summary>
    public int TlsHandshakeFailures => Volatile.Read(ref _tlsHandshakeFailures);
    /// <summary>Client certificates seen in completed handshakes, by subject.</summary>
    public IReadOnlyCollection<string> ClientCertificateSubjects => _clientCertificates;
    /// <summary>Connections waiting for their next request, counted only when a periodic check closes them
    /// (<see cref="LabUpstreamOptions.IdleCheckInterval"/>).</summary>
    public int IdleConnections => _idle.Count;
    /// <summary>Exceptions a route or script threw that were not about the connection going away.</summary>
    public IReadOnlyCollection<Exception> Errors => _errors;

    /// <summary>How many request heads with this method and path (query excluded) were received.</summary>
    public int RequestCount(string method, string path) =>
        _requestCounts.TryGetValue((method, path), out int count) ? count : 0;

    internal void OnRequest(LabRequestHead head)
    {
        Interlocked.Increment(ref _requestsReceived);
        _requestCounts.AddOrUpdate((head.Method, head.Path), 1, (_, count) => count + 1);
        WakeEventLoop();
    }

    internal void IdleStarted(LabConnection connection, CancellationTokenSource idle) =>
        _idle[connection] = (Options.TimeProvider.GetTimestamp(), idle);

    internal void IdleEnded(LabConnection connection) => _idle.TryRemove(connection, out _);

    // gunicorn's gthread loop: any event wakes it, it closes the expired keep-alive connections, then waits on
    // select(1.0) again. So the wake-up timer restarts at every event.
    private void WakeEventLoop()
    {
        if (_idleSweep is null || !Options.IdleCheckOnTraffic)
        {
            return;
        }
        SweepIdle();
        _idleSweep.Change(Options.IdleCheckInterval!.Value, Options.IdleCheckInterval.Value);
    }

    private void SweepIdle()
    {
        var timeout = Options.IdleTimeout!.Value;
        foreach (var entry in _idle)
        {
            // Removing the exact entry: the connection may have started a newer idle wait meanwhile.
            if (Options.TimeProvider.GetElapsedTime(entry.Value.Since) >= timeout && _idle.TryRemove(entry))
            {
                try
                {
                    entry.Value.Idle.Cancel();
                }
                catch (ObjectDisposedException)
                {
                    // The request arrived and the wait ended meanwhile.
                }
            }
        }
    }

    internal void ReportError(Exception e) => _errors.Enqueue(e);

    internal void OnTlsHandshake(string? clientCertificate, bool failed)
    {
        if (failed)
        {
            Interlocked.Increment(ref _tlsHandshakeFailures);
        }
        else if (clientCertificate is not null)
        {
            _clientCertificates.Enqueue(clientCertificate);
        }
    }

    internal async Task HandleAsync(LabExchange exchange, CancellationToken ct)
    {
        if (_handlerSlots is not null)
        {
            await _handlerSlots.WaitAsync(ct);
            if (_handlerSlots.CurrentCount == 0)
            {
                CancelAcceptWhileIdle();
            }
        }
        try
        {
            if (Options.HandlerDelay > TimeSpan.Zero)
            {
                await Task.Delay(Options.HandlerDelay, Options.TimeProvider, ct);
            }
            await (Options.Script ?? LabRoutes.HandleAsync)(exchange, ct);
        }
        finally
        {
            _handlerSlots?.Release();
        }
    }

    private void CancelAcceptWhileIdle()
    {
        try
        {
            Volatile.Read(ref _acceptWhileIdle)?.Cancel();
        }
        catch (ObjectDisposedException)
        {
            // That accept already completed; the next one checks the slots before it starts.
        }
    }

    private async Task AcceptLoopAsync()
    {
        var ct = _stopping.Token;
        while (!ct.IsCancellationRequested)
        {
            Socket socket;
            try
            {
                socket = await AcceptWhenIdleAsync(ct);
            }
            catch (OperationCanceledException) when (!ct.IsCancellationRequested)
            {
                // Every handler slot became busy while accept() was pending; wait for one to be free again.
                continue;
            }
            catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException
                                      || (e is SocketException && ct.IsCancellationRequested))
            {
                return;
            }
            catch (SocketException)
            {
                // A connection that was reset while still in the backlog (ECONNABORTED): accept the next one.
                continue;
            }
            Interlocked.Increment(ref _connectionsAccepted);
            Interlocked.Increment(ref _openConnections);
            WakeEventLoop();
            var connection = new LabConnection(this, socket, ct);
            _connections[connection] = 0;
            _ = Task.Run(connection.RunAsync, CancellationToken.None);
        }
    }

    /// <summary>
    /// Accepts the next connection, but only while a handler slot is free: a busy single-threaded server does
    /// not call accept(), so new connections wait in the listen backlog and overflow it. A pending accept is
    /// cancelled as soon as the last slot is taken (see <see cref="HandleAsync"/>).
    /// </summary>
    private async Task<Socket> AcceptWhenIdleAsync(CancellationToken ct)
    {
        if (_handlerSlots is null)
        {
            return await _listener.AcceptAsync(ct);
        }
        await _handlerSlots.WaitAsync(ct);
        _handlerSlots.Release();
        using var whileIdle = CancellationTokenSource.CreateLinkedTokenSource(ct);
        // Published before checking the slots, so a handler taking the last slot from now on cancels this accept.
        Volatile.Write(ref _acceptWhileIdle, whileIdle);
        try
        {
            if (_handlerSlots.CurrentCount == 0)
            {
                throw new OperationCanceledException(whileIdle.Token);
            }
            return await _listener.AcceptAsync(whileIdle.Token);
        }
        finally
        {
            Interlocked.CompareExchange(ref _acceptWhileIdle, null, whileIdle);
        }
    }

    /// <summary>Called once by each connection after its socket is released.</summary>
    internal void OnConnectionEnded(LabConnection connection)
    {
        _connections.TryRemove(connection, out _);
        Interlocked.Decrement(ref _openConnections);
    }

    /// <summary>Stops listening, closes every connection and waits (bounded) for their loops to end.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 1)
        {
            return;
        }
        await _stopping.CancelAsync();
        _idleSweep?.Dispose();
        _listener.Dispose();
        await _acceptLoop;
        var connections = _connections.Keys.ToList();
        foreach (var connection in connections)
        {
            // Aborts reads and writes still pending on the socket; the loops then end on their own.
            connection.Abort();
        }
        try
        {
            // A safety bound in real time, whatever the injected TimeProvider: disposal must end.
            await Task.WhenAll(connections.Select(c => c.Completed)).WaitAsync(DisposeWait);
            _stopping.Dispose();
        }
        catch (TimeoutException)
        {
            // A script ignoring cancellation keeps its task alive (and its use of the stopping token valid),
            // but its socket is already closed.
        }
    }
}
