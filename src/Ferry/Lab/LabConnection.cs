using System.Buffers;
using System.IO.Pipelines;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Authentication;
using System.Security.Cryptography.X509Certificates;

namespace Ferry.Lab;

/// <summary>One accepted socket: reads request heads in a loop and hands each request to the script or the routes.</summary>
internal sealed class LabConnection
{
    /// <summary>How long a closing connection keeps reading what the client still sends after our FIN, so that
    /// unread bytes do not turn the close into an RST. nginx's lingering_timeout defaults to 5 s.</summary>
    private static readonly TimeSpan LingerTimeout = TimeSpan.FromSeconds(5);

    private readonly LabUpstream _upstream;
    private readonly Socket _socket;
    private SslStream? _tls;          // over the socket when the upstream serves HTTPS, once the handshake is done
    private readonly CancellationToken _stopping;
    private readonly TaskCompletionSource _completed = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _state; // ConnectionOpen, ConnectionClosing (lingering), ConnectionReset or ConnectionClosedNow
    private volatile bool _readPending; // a request head read is outstanding (the idle wait)
    private const int ConnectionOpen = 0, ConnectionClosing = 1, ConnectionReset = 2, ConnectionClosedNow = 3;

    public LabConnection(LabUpstream upstream, Socket socket, CancellationToken stopping)
    {
        _upstream = upstream;
        _socket = socket;
        _stopping = stopping;
        socket.NoDelay = true;
        if (upstream.Options.ServerCertificate is null)
        {
            var stream = new NetworkStream(socket, ownsSocket: false);
            Input = PipeReader.Create(stream);
            Output = PipeWriter.Create(stream);
        }
    }

    // Set once the TLS handshake completes, for an HTTPS upstream.
    public PipeReader Input { get; private set; } = null!;
    public PipeWriter Output { get; private set; } = null!;
    public LabUpstreamOptions Options => _upstream.Options;
    /// <summary>Cancelled when the upstream is disposed.</summary>
    public CancellationToken Stopping => _stopping;
    public bool IsOpen => Volatile.Read(ref _state) == ConnectionOpen;
    /// <summary>Completes when the request loop has ended and the socket is released.</summary>
    public Task Completed => _completed.Task;

    /// <summary>Disposes the socket under the loop (upstream disposal), which fails whatever it awaits.</summary>
    public void Abort() => _socket.Dispose();

    /// <summary>FIN: shuts down the sending side now; the socket itself is released when the request loop ends.</summary>
    /// <summary>A plain close(), the way servers end idle keep-alive connections and connections past their request
    /// limit (nginx's ngx_http_close_connection, gunicorn, Node): FIN now, and whatever arrives afterwards is answered
    /// with RST by the kernel, never read. Only right when nothing of the request is left unread.</summary>
    public void CloseNow()
    {
        if (Interlocked.CompareExchange(ref _state, ConnectionClosedNow, ConnectionOpen) != ConnectionOpen)
        {
            return;
        }
        try
        {
            // FIN now. Disposing right away is the plain close(), but with a receive still pending .NET closes
            // abortively (RST), so the idle path leaves the dispose to the connection's loop, microseconds later.
            SendCloseNotify();
            _socket.Shutdown(SocketShutdown.Send);
            if (!_readPending)
            {
                _socket.Dispose();
            }
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
            // Already gone.
        }
    }

    public void Close()
    {
        if (Interlocked.CompareExchange(ref _state, ConnectionClosing, ConnectionOpen) == ConnectionOpen)
        {
            try
            {
                SendCloseNotify();
                _socket.Shutdown(SocketShutdown.Send);
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException)
            {
                // The peer is already gone; nothing left to announce.
            }
        }
    }

    /// <summary>RST: SO_LINGER with a zero timeout makes close() abort the connection (RFC 9293 §3.10.7.1 ABORT).</summary>
    public void Reset()
    {
        if (Interlocked.Exchange(ref _state, ConnectionReset) != ConnectionReset)
        {
            try
            {
                _socket.LingerState = new LingerOption(true, 0);
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException)
            {
                // Already closed: there is nothing left to reset.
            }
            _socket.Dispose();
        }
    }

    // A TLS server ends a connection with close_notify, then FIN (nginx's SSL_shutdown before close). A few bytes on a
    // socket with room for them: the write completes at once.
    private void SendCloseNotify()
    {
        if (_tls is null)
        {
            return;
        }
        try
        {
            _tls.ShutdownAsync().Wait(TimeSpan.FromSeconds(1));
        }
        catch (Exception)
        {
            // The peer is gone or a write is in progress: the FIN alone still ends the connection.
        }
    }

    private async Task<bool> HandshakeAsync(X509Certificate2 certificate)
    {
        var check = Options.ClientCertificateCheck;
        var tls = new SslStream(new NetworkStream(_socket, ownsSocket: false), leaveInnerStreamOpen: false);
        try
        {
            await tls.AuthenticateAsServerAsync(new SslServerAuthenticationOptions
            {
                ServerCertificate = certificate,
                EnabledSslProtocols = SslProtocols.Tls12 | SslProtocols.Tls13,
                ApplicationProtocols = [SslApplicationProtocol.Http11],
                ClientCertificateRequired = check is not null,
                RemoteCertificateValidationCallback = check is null
                    ? null
                    : (_, cert, _, _) => cert is X509Certificate2 c && check(c),
            }, _stopping).WaitAsync(TimeSpan.FromSeconds(10));
        }
        catch (Exception e) when (e is IOException or AuthenticationException or OperationCanceledException or TimeoutException
                                      or ObjectDisposedException or SocketException)
        {
            _upstream.OnTlsHandshake(null, failed: true);
            await tls.DisposeAsync();
            return false;
        }
        _upstream.OnTlsHandshake(tls.RemoteCertificate?.Subject, failed: false);
        _tls = tls;
        Input = PipeReader.Create(tls);
        Output = PipeWriter.Create(tls);
        return true;
    }

    public async Task RunAsync()
    {
        try
        {
            if (Options.ServerCertificate is { } certificate && !await HandshakeAsync(certificate))
            {
                Interlocked.Exchange(ref _state, ConnectionClosedNow);
                return;
            }
            await ServeAsync();
        }
        catch (Exception e) when (e is IOException or SocketException or ObjectDisposedException or OperationCanceledException
                                      or LabBadRequestException)
        {
            // The peer went away or sent a malformed body after the response had started, the upstream is
            // stopping, or a script reset the connection.
        }
        catch (Exception e)
        {
            _upstream.ReportError(e);
        }
        finally
        {
            if (IsOpen && !_stopping.IsCancellationRequested)
            {
                Close();
            }
            if (Volatile.Read(ref _state) == ConnectionClosing && !_stopping.IsCancellationRequested && Input is not null)
            {
                await LingerAsync();
            }
            _socket.Dispose();
            _tls?.Dispose();
            _upstream.OnConnectionEnded(this);
            _completed.TrySetResult();
        }
    }

    private async Task ServeAsync()
    {
        int index = 0;
        while (IsOpen)
        {
            LabRequestHead? head;
            try
            {
                head = await ReadHeadAsync();
            }
            catch (LabBadRequestException e)
            {
                await WriteRejectionAsync(e);
                return;
            }
            if (head is null)
            {
                return;
            }
            index++;
            _upstream.OnRequest(head);
            LabExchange exchange;
            try
            {
                exchange = new LabExchange(this, head, index);
            }
            catch (LabBadRequestException e)
            {
                await WriteRejectionAsync(e);
                return;
            }
            try
            {
                await _upstream.HandleAsync(exchange, _stopping);
            }
            catch (LabBadRequestException e) when (IsOpen && !exchange.ResponseStarted)
            {
                await WriteRejectionAsync(e);
                return;
            }
            if (IsOpen && exchange.ClosesConnection && exchange.ResponseCompleted && exchange.BodyDone && !HasUnreadInput())
            {
                CloseNow();
            }
            if (!IsOpen || exchange.ClosesConnection || (exchange.ResponseStarted && !exchange.ResponseCompleted))
            {
                return;
            }
            // The client sent a body that nobody read; it must be consumed to find the next request head.
            await exchange.DrainBodyAsync(_stopping);
        }
    }

    private void CloseIdle()
    {
        if (Options.ResetOnIdleTimeout)
        {
            Reset();
        }
        else
        {
            CloseNow();
        }
    }

    private bool HasUnreadInput()
    {
        if (!Input.TryRead(out var read))
        {
            return false;
        }
        var unread = !read.Buffer.IsEmpty;
        Input.AdvanceTo(read.Buffer.Start);
        return unread;
    }

    /// <summary>Reads the next head; null when the client closed cleanly or the connection sat idle too long.</summary>
    private async Task<LabRequestHead?> ReadHeadAsync()
    {
        // With a periodic check (IdleCheckInterval) the upstream's sweep cancels `idle`; otherwise its own timer does.
        var swept = Options.IdleTimeout is not null && Options.IdleCheckInterval is not null;
        using var idle = Options.IdleTimeout is { } timeout
            ? swept ? new CancellationTokenSource() : new CancellationTokenSource(timeout, Options.TimeProvider)
            : null;
        using var idleOrStopping = idle is null ? null : CancellationTokenSource.CreateLinkedTokenSource(idle.Token, _stopping);
        bool sawByte = false;
        // The close happens in the timer's callback, not in a continuation: the FIN (or RST) is on the wire when the
        // timer has fired, as with a server's own timer, and tests that move a manual clock see it at once.
        using var closeWhenIdle = idle?.Token.UnsafeRegister(_ =>
        {
            if (!Volatile.Read(ref sawByte))
            {
                CloseIdle();
            }
        }, null);
        if (swept)
        {
            _upstream.IdleStarted(this, idle!);
        }
        try
        {
            while (true)
            {
                ReadResult result;
                try
                {
                    // The idle clock stops at the first byte of the next request, like nginx's keepalive_timeout.
                    _readPending = true;
                    try
                    {
                        result = await Input.ReadAsync(sawByte || idleOrStopping is null ? _stopping : idleOrStopping.Token);
                    }
                    finally
                    {
                        _readPending = false;
                    }
                }
                catch (OperationCanceledException) when (idle is { IsCancellationRequested: true } && !_stopping.IsCancellationRequested)
                {
                    CloseIdle();
                    return null;
                }
                var buffer = result.Buffer;
                sawByte |= !buffer.IsEmpty;
                bool parsed;
                LabRequestHead? head;
                try
                {
                    parsed = LabRequestHead.TryParse(ref buffer, out head);
                }
                catch (LabBadRequestException)
                {
                    Input.AdvanceTo(result.Buffer.End);
                    throw;
                }
                if (parsed)
                {
                    Input.AdvanceTo(buffer.Start);
                    return head;
                }
                Input.AdvanceTo(buffer.Start, buffer.End);
                if (result.IsCompleted)
                {
                    if (!buffer.IsEmpty)
                    {
                        throw new LabBadRequestException(400, "connection closed inside the request head");
                    }
                    return null;
                }
            }
        }
        finally
        {
            if (swept)
            {
                _upstream.IdleEnded(this);
            }
        }
    }

    private async Task WriteRejectionAsync(LabBadRequestException e)
    {
        if (!IsOpen)
        {
            return;
        }
        await Output.WriteAsync(LabExchange.FormatRejection(e.StatusCode, e.Message, Options.Name), _stopping);
        Close();
    }

    /// <summary>After our FIN, read and discard until the client closes too (see <see cref="LingerTimeout"/>).</summary>
    private async Task LingerAsync()
    {
        using var linger = new CancellationTokenSource(LingerTimeout, Options.TimeProvider);
        using var lingerOrStopping = CancellationTokenSource.CreateLinkedTokenSource(linger.Token, _stopping);
        try
        {
            while (true)
            {
                var result = await Input.ReadAsync(lingerOrStopping.Token);
                Input.AdvanceTo(result.Buffer.End);
                if (result.IsCompleted)
                {
                    return;
                }
            }
        }
        catch (Exception e) when (e is IOException or SocketException or ObjectDisposedException or OperationCanceledException or InvalidOperationException)
        {
            // The client reset, the linger time ran out or the upstream is stopping: release the socket anyway.
        }
    }
}
