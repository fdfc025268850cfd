using System.Diagnostics;
using System.IO.Pipelines;
using System.Net.Security;
using System.Net.Sockets;
using Ferry.Http1;
using Ferry.Loops;
using Ferry.Model;

namespace Ferry.Upstream;

// Why a connection left the pool or was never put back; one counter each in the pool.
internal enum RetireReason
{
    IdleTimeout,       // idle longer than the configured limit (or the automatic cap)
    AnnouncedLimit,    // the destination announced it: Keep-Alive timeout/max reached, or Connection: close
    LearnedLimit,      // a limit learned from the destination's silent closes was about to be reached
    MaxRequests,       // Ferry's own per-connection request limit
    Lifetime,          // older than MaxLifetime
    ClosedWhileIdle,   // FIN, RST or a stray byte arrived while idle
    NotReusable,       // framing forbids reuse: close-delimited body, upgrade, leftover bytes, body not fully sent
    Error,             // the exchange failed or was aborted
    PoolFull,          // MaxIdle is 0, or far more idle connections than the recent peak needs (LeaseDemand.IdleCap)
    Surplus,           // above MaxIdle and not needed by a whole window's traffic (LeaseDemand.Window)
    Shutdown,          // the pool was disposed
    AddressGone,       // the destination's host name no longer resolves to this connection's address
}

// One HTTP/1.1 connection to a destination. Owned by exactly one exchange at a time, or idle in its pool.
internal sealed class UpstreamConnection : IDisposable
{
    private readonly Socket _socket;
    private readonly LoopStream? _loopStream;
    private readonly SslStream? _tls;
    private readonly Lock _deadlineLock = new();
    private CancellationTokenSource? _cancellation; // cancels the current exchange; reused while nothing cancels it
    private ITimer? _deadlineTimer;                  // fires the current exchange's timeout off the loops
    private bool _timerArmed;                        // _deadlineTimer is set to fire: the current deadline is its to keep
    private LoopTimer? _loopTimer;                   // fires it on the connection's loop (loop thread only)
    private long _deadline = long.MaxValue;          // TimeProvider timestamp the timer must reach; MaxValue: none
    private TimeProvider? _time;
    private int _disposed;

    // `transport`: the stream over `socket` (a NetworkStream, or the loop's stream when an event loop serves the
    // connection); `tls`: the authenticated stream over it for an https destination, null for plain TCP.
    public UpstreamConnection(DestinationState destination, Socket socket, Stream transport, Http1Limits limits, long createdAt, SslStream? tls = null)
    {
        Destination = destination;
        _socket = socket;
        _loopStream = transport as LoopStream;
        _tls = tls;
        var stream = tls ?? transport;
        // 16 KiB reads keep a typical response head and small body in one segment; larger bodies stream through.
        Input = PipeReader.Create(stream, new StreamPipeReaderOptions(bufferSize: 16 * 1024, minimumReadSize: 4 * 1024, leaveOpen: true));
        Output = PipeWriter.Create(stream, new StreamPipeWriterOptions(minimumBufferSize: 4 * 1024, leaveOpen: true));
        Parser = new ResponseHeadParser(limits);
        Head = new ResponseHead();
        Chunked = new ChunkedDecoder(limits);
        Watch = new IdleWatch(this, waitOnSocket: tls is null);
        CreatedAt = createdAt;
        IdleSince = createdAt;
    }

    public DestinationState Destination { get; }

    // The event loop serving the socket (Engine: Loops); null on .NET's socket engine.
    public EventLoop? Loop => _loopStream?.Loop;

    // For a TLS connection: the negotiated protocol ("TLSv1.3") and how long the handshake took.
    public string? TlsProtocol => _tls is null ? null : TlsProtocolName(_tls.SslProtocol);
    public TimeSpan? TlsHandshakeTime { get; init; }

    // A read or write that the TLS layer failed (an alert from the destination, a record that does not decrypt), as
    // opposed to the socket (FIN, RST): the innermost message, which names the alert. Null for anything else.
    public string? TlsFailure(Exception? error)
    {
        if (_tls is null || error is not IOException { InnerException: { } inner } || inner is System.Net.Sockets.SocketException or IOException)
        {
            return null;
        }
        while (inner.InnerException is not null)
        {
            inner = inner.InnerException;
        }
        return inner.Message;
    }
    public PipeReader Input { get; }
    public PipeWriter Output { get; }
    public ResponseHeadParser Parser { get; }
    public ResponseHead Head { get; }
    public ChunkedDecoder Chunked { get; }

    // TimeProvider timestamps.
    public long CreatedAt { get; }
    public long IdleSince { get; set; }

    // Requests started on this connection; > 0 at lease time means the connection is reused.
    public int RequestCount { get; set; }

    // Limits the destination announced with "Keep-Alive: timeout=N, max=M" (-1: none).
    public int AnnouncedIdleTimeoutSeconds { get; set; } = -1;
    public int AnnouncedMaxRequests { get; set; } = -1;

    // Kept past a learned request limit as a probe: only requests that can be replayed may use it.
    public bool BeyondLearnedLimit { get; set; }

    // What the keep-alive policy decides on.
    public ConnectionKeepAlive KeepAlive =>
        new(CreatedAt, IdleSince, RequestCount, AnnouncedIdleTimeoutSeconds, AnnouncedMaxRequests, BeyondLearnedLimit);

    // The lease holding this connection holds a slot under the destination's connection limit (ConnectionPool).
    public bool HoldsSlot { get; set; }

    // The local address and remote end point it was opened with, whose 4-tuple space it takes a port of (PortSpace);
    // null when the remote end point is not an IP one. Set once by the pool when the connection opens.
    public PortSpaceKey? Tuple { get; set; }

    // In its loop's idle stack (ConnectionPool, Engine: Loops). Read and written on that loop's thread only.
    public bool InLoopStack { get; set; }

    // The read pending while the connection is idle. The exchange that leases the connection takes it over (ReadAsync):
    // its result is the first bytes of the response (or the close that raced with the request).
    public IdleWatch Watch { get; }

    public bool IsDisposed => Volatile.Read(ref _disposed) != 0;

    public long BytesAcked() => TcpInfo.BytesAcked(_socket);

    // The token of the exchange that holds the connection: cancelled by its timeouts (SetDeadline) or by the exchange
    // itself (CancelExchange). One source and one timer serve every request on the connection, where a source per
    // request cost a timer, a linked source and their registrations each time (docs/decisions/2026-11-22-hot-path.md).
    // A source is detached before it is cancelled, so a late cancellation can never reach the next exchange.
    public CancellationToken BeginExchange(TimeProvider time)
    {
        Debug.Assert(_time is null || ReferenceEquals(_time, time));
        _time = time;
        lock (_deadlineLock)
        {
            _deadline = long.MaxValue;
            _cancellation ??= new CancellationTokenSource();
            return _cancellation.Token;
        }
    }

    // Cancels the exchange's token once `timeout` has passed (infinite: never), replacing the previous deadline.
    // Called on the connection's loop, the deadline is kept by the loop's timer wheel: no lock of the runtime's timer
    // queue, no thread-pool callback (docs/decisions/2026-12-03-loop-timer-wheel.md). Anywhere else (.NET's sockets,
    // an HTTP/2 stream or a continuation on the thread pool) it is an ITimer, as it would cost a post to the loop, a
    // system call to wake it, for each deadline to use the wheel from there. A test's clock is not the wheel's real
    // one: the wheel serves only connections on the system's TimeProvider.
    public void SetDeadline(TimeSpan timeout)
    {
        var time = _time!;
        var loop = _loopStream is { } stream && ReferenceEquals(time, TimeProvider.System) ? stream.Loop : null;
        if (loop is not null && !loop.IsOnLoop)
        {
            loop = null;
        }
        var deadline = timeout == Timeout.InfiniteTimeSpan
            ? long.MaxValue
            : time.GetTimestamp() + (long)(timeout.TotalSeconds * time.TimestampFrequency);
        lock (_deadlineLock)
        {
            _deadline = deadline;
            if (loop is not null || deadline == long.MaxValue)
            {
                if (_timerArmed)
                {
                    _timerArmed = false;
                    _deadlineTimer!.Change(Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
                }
            }
            else
            {
                _deadlineTimer ??= time.CreateTimer(static s => ((UpstreamConnection)s!).DeadlineReached(wheel: false), this,
                    Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
                _deadlineTimer.Change(timeout, Timeout.InfiniteTimeSpan);
                _timerArmed = true;
            }
        }
        // A loop timer armed earlier stays armed when this call is off the loop: only the loop touches its wheel, and
        // a cancel posted there could land after the exchange came back to the loop and armed it again. When it
        // fires, the deadline it finds decides, as for a late ITimer; the next deadline set on the loop moves it, and
        // it is disarmed when the connection leaves its loop (MoveToAsync) or is closed.
        if (loop is not null)
        {
            if (deadline == long.MaxValue)
            {
                if (_loopTimer is not null)
                {
                    loop.CancelTimer(_loopTimer);
                }
            }
            else
            {
                loop.ArmTimer(_loopTimer ??= new LoopTimer(static s => ((UpstreamConnection)s!).DeadlineReached(wheel: true), this), deadline);
            }
        }
    }

    public void CancelExchange() => Detach()?.Cancel();

    public void EndExchange() => SetDeadline(Timeout.InfiniteTimeSpan);

    private CancellationTokenSource? Detach()
    {
        lock (_deadlineLock)
        {
            var current = _cancellation;
            _cancellation = null;
            _deadline = long.MaxValue;
            return current;
        }
    }

    // A timer callback can run after its deadline was moved or cleared: the deadline decides, not the callback.
    // `wheel`: the loop's timer fired (on the loop), else the ITimer (on the thread pool).
    private void DeadlineReached(bool wheel)
    {
        CancellationTokenSource? cancel = null;
        lock (_deadlineLock)
        {
            // Whether this ITimer firing is the one the current deadline waits for: a deadline set since on the loop
            // disarmed it, and a callback already on its way must not arm it again.
            var timerOwns = !wheel && _timerArmed;
            if (!wheel)
            {
                _timerArmed = false;
            }
            if (_deadline == long.MaxValue)
            {
                return;
            }
            var now = _time!.GetTimestamp();
            if (now < _deadline)
            {
                // The wheel never fires before its deadline: a later deadline was set off the loop, on the ITimer,
                // which fires for it. The ITimer counts milliseconds and can fire just before a Stopwatch deadline:
                // it waits the rest, unless the deadline has moved to the wheel meanwhile.
                if (timerOwns)
                {
                    var rest = TimeSpan.FromSeconds((double)(_deadline - now) / _time.TimestampFrequency);
                    _deadlineTimer!.Change(rest > TimeSpan.FromMilliseconds(1) ? rest : TimeSpan.FromMilliseconds(1), Timeout.InfiniteTimeSpan);
                    _timerArmed = true;
                }
                return;
            }
            cancel = _cancellation;
            _cancellation = null;
            _deadline = long.MaxValue;
        }
        // Outside the lock: cancellation runs the registered callbacks (pipe reads) synchronously.
        cancel?.Cancel();
    }

    // Serves the connection from `loop` from now on (Engine: Loops); it must be idle and leased.
    public Task MoveToAsync(EventLoop loop) => _loopStream!.MoveToAsync(loop, _loopTimer is null ? null : LeaveLoop);

    // On the loop the connection leaves: a loop timer is armed in one wheel, and the next exchange arms it in the
    // target's. An idle connection has no deadline; a timer left armed by an exchange that ended off the loop would
    // only have found none when it fired.
    private void LeaveLoop(EventLoop from)
    {
        Debug.Assert(Volatile.Read(ref _deadline) == long.MaxValue, "a connection moves between loops only while idle");
        from.CancelTimer(_loopTimer!);
        Debug.Assert(!_loopTimer!.IsArmed);
    }

    // Completes with 0 once the socket has something to read (data, FIN or an error), consuming nothing.
    public ValueTask<int> WaitForDataAsync(CancellationToken cancellationToken) =>
        _loopStream is { } loop
            ? loop.ReadAsync(Memory<byte>.Empty, cancellationToken)
            : _socket.ReceiveAsync(Memory<byte>.Empty, SocketFlags.None, cancellationToken);

    // First read of a response: continues the idle watch's read when there is one.
    public ValueTask<ReadResult> ReadAsync(CancellationToken cancellationToken) =>
        Watch.IsPending ? Watch.TakeOver(cancellationToken) : Input.ReadAsync(cancellationToken);

    // An idle HTTP/1.1 connection has nothing to read: readability means FIN, RST or a stray byte, all fatal. The idle
    // watch notices them too, but a close can be in the socket's queue before its continuation has run.
    // Over TLS, bytes can also be a record the idle read has yet to consume (a TLS 1.3 session ticket); only readable
    // with nothing to read, FIN or RST, is certain. A close_notify that has not been consumed yet is left to the
    // exchange, which sees the close as a keep-alive race on a reused connection.
    // On an event loop the idle read is run on whatever epoll reported up to the loop's last wait, TLS records
    // included, on the connection's loop (at once when the caller is on it; else, only if bytes are waiting, through a
    // post there), and then either it has ended or the connection is clean (LoopStream.Pump).
    public ValueTask<bool> IsClosedWhileIdleAsync()
    {
        if (_loopStream is { } loop)
        {
            if (loop.Loop.IsOnLoop)
            {
                loop.Pump();
                return new ValueTask<bool>(Watch.TryGetEnded(out _));
            }
            if (_tls is not null && HasBytesWaiting())
            {
                return PumpOnLoopAsync(loop);
            }
        }
        return new ValueTask<bool>(IsReadableWhileIdle());
    }

    private async ValueTask<bool> PumpOnLoopAsync(LoopStream loop)
    {
        await loop.Loop.InvokeAsync(loop.Pump);
        return Watch.TryGetEnded(out _);
    }

    private bool HasBytesWaiting()
    {
        try
        {
            return _socket.Available > 0;
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
        {
            return false;
        }
    }

    private bool IsReadableWhileIdle()
    {
        try
        {
            return _socket.Poll(0, SelectMode.SelectRead) && (_tls is null || _socket.Available == 0);
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
        {
            return true;
        }
    }

    // The end of what Ferry sends (a tunnel whose client finished): over TLS a close_notify first, so that the
    // destination reads a clean end rather than a truncation.
    public async ValueTask ShutdownSendAsync()
    {
        try
        {
            if (_tls is not null)
            {
                await _tls.ShutdownAsync();
            }
            _socket.Shutdown(SocketShutdown.Send);
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException or IOException)
        {
            // Already closed by the peer: nothing left to shut down.
        }
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }
        // The socket goes first: a request body the destination stopped reading can still sit in the writer, and
        // flushing it to a live socket could block for as long as the destination keeps its window shut. A loop's
        // socket is closed on its loop, after it leaves the loop's epoll.
        if (_loopStream is not null)
        {
            _loopStream.Dispose();
        }
        else
        {
            _socket.Dispose();
        }
        if (_tls is not null)
        {
            // Frees the TLS session's native state; with the socket gone, nothing is written.
            try { _tls.Dispose(); } catch (Exception) { }
        }
        lock (_deadlineLock)
        {
            _deadlineTimer?.Dispose();
            _timerArmed = false;
            _deadline = long.MaxValue;
        }
        if (_loopTimer is { } timer)
        {
            // Disarmed on its loop: it would only find no deadline when it fired, but meanwhile it keeps the
            // connection reachable.
            _loopStream!.Loop.Schedule(static s => ((UpstreamConnection)s!).CancelLoopTimer(), this);
        }
        // Completing the pipes returns their pooled buffers. Completed with an error, the writer drops what it still
        // holds instead of writing it to the closed socket; whatever they throw, the connection is gone, and a throw
        // here would skip the pool's accounting and replace the exchange's classified error.
        CompleteQuietly(Input, Output);
        Debug.Assert(IsDisposed);
    }

    private void CancelLoopTimer() => _loopStream!.Loop.CancelTimer(_loopTimer!);

    internal static string TlsProtocolName(System.Security.Authentication.SslProtocols protocol) => protocol switch
    {
        System.Security.Authentication.SslProtocols.Tls13 => "TLSv1.3",
        System.Security.Authentication.SslProtocols.Tls12 => "TLSv1.2",
        _ => protocol.ToString(),
    };

    private static readonly ObjectDisposedException s_closed = new(nameof(UpstreamConnection), "the upstream connection was closed");

    private static void CompleteQuietly(PipeReader input, PipeWriter output)
    {
        try { input.Complete(s_closed); } catch (Exception) { }
        try { output.Complete(s_closed); } catch (Exception) { }
    }
}
