using System.Net;
using System.Net.Sockets;
using System.Threading.Tasks.Sources;

namespace Ferry.Loops;

/// <summary>
/// An outgoing TCP connection served by one <see cref="EventLoop"/>, as the <see cref="Stream"/> Ferry's upstream
/// engine reads and writes through its pipes (and TLS through an SslStream over it). The socket is non-blocking and
/// registered edge-triggered in the loop's epoll for its whole life; it never touches .NET's socket engine, whose own
/// epoll thread would otherwise be woken for every event and hand each continuation to the thread pool.
/// <para>A read or write tries its system call at once, on the calling thread. Only one that would block waits: it
/// completes on the loop when epoll reports the socket ready, and its continuation runs there inline. So an exchange
/// whose client is served by the same loop reads the upstream response, and writes it to the client, on one thread.
/// An operation started on another thread (an HTTP/2 stream, a continuation on the thread pool) also completes on the
/// loop: the waiting state it sets is published before the loop is asked to retry it.</para>
/// <para>Errors have NetworkStream's shape (IOException around the SocketException), which the exchange classifies.
/// The descriptor is removed from epoll and closed on the loop (<see cref="Dispose(bool)"/>), so no event of a closed
/// descriptor's number reaches anyone.</para>
/// </summary>
internal sealed class LoopStream : Stream, ILoopHandler, IValueTaskSource<int>, IValueTaskSource
{
    private const uint Interest = Native.EpollIn | Native.EpollOut | Native.EpollRdHup | Native.EpollEt;
    private const uint ReadReady = Native.EpollIn | Native.EpollRdHup | Native.EpollHup | Native.EpollErr;
    private const uint WriteReady = Native.EpollOut | Native.EpollHup | Native.EpollErr;

    private static readonly Action<object?> s_retryRead = static s => ((LoopStream)s!).RetryRead();
    private static readonly Action<object?> s_retryWrite = static s => ((LoopStream)s!).RetryWrite();
    private static readonly Action<object?> s_close = static s => ((LoopStream)s!).CloseOnLoop();

    // For epoll, connect and SO_ERROR only. Receives and sends go through Socket, not Native on the descriptor as
    // LoopConnection's do: they may run on any thread, and the Socket's handle keeps a descriptor that the loop is
    // closing from being reused under a call in flight.
    private readonly int _fd;
    private readonly byte[] _peek = new byte[1];
    private long _registration; // loop thread
    private bool _registered;   // loop thread
    // Loop thread: whether a receive can find something. Set by an EPOLLIN edge or a receive that found data; cleared
    // when a receive on the loop drains the socket, after which new data brings a new edge. A read on the loop with
    // nothing to find waits without a system call.
    private bool _readable;
    private bool _peerClosed;   // loop thread: FIN, RST or an error seen; its end of stream brings no further edge

    // The read waiting for the socket to become readable; at most one (Stream's contract). Its fields are set before
    // _readPending and read on the loop only after it.
    private ManualResetValueTaskSourceCore<int> _read;
    private Memory<byte> _readBuffer;
    private CancellationToken _readToken;
    private CancellationTokenRegistration _readCancel;
    private volatile bool _readPending;

    // A write (or the connect) waiting for the socket to become writable; the writer retries its send when it ends.
    private ManualResetValueTaskSourceCore<bool> _writable;
    private CancellationToken _writeToken;
    private CancellationTokenRegistration _writeCancel;
    private volatile bool _writePending;
    private byte[]? _connectTo; // the sockaddr of a connect not yet started on the loop
    private bool _connecting;   // loop thread: the pending wait is a connect's, whose outcome is SO_ERROR

    private int _disposed;

    private LoopStream(EventLoop loop, Socket socket)
    {
        _loop = loop;
        Socket = socket;
        _fd = (int)socket.SafeHandle.DangerousGetHandle();
        _read.RunContinuationsAsynchronously = false;
        _writable.RunContinuationsAsynchronously = false;
    }

    // The loop serving the socket; it changes only while the connection is leased and moved (MoveToAsync).
    private EventLoop _loop;

    public EventLoop Loop => Volatile.Read(ref _loop);

    public Socket Socket { get; }

    /// <summary>
    /// Connects <paramref name="socket"/> (created, optionally bound, not connected) to <paramref name="endPoint"/>
    /// on <paramref name="loop"/>. On failure the socket is closed and the SocketException thrown, as
    /// <see cref="Socket.ConnectAsync(EndPoint, CancellationToken)"/> would; cancelled by <paramref name="cancellationToken"/>.
    /// </summary>
    public static async ValueTask<LoopStream> ConnectAsync(EventLoop loop, Socket socket, EndPoint endPoint, CancellationToken cancellationToken)
    {
        LoopStream stream;
        try
        {
            socket.Blocking = false;
            var address = endPoint.Serialize();
            stream = new LoopStream(loop, socket) { _connectTo = address.Buffer[..address.Size].ToArray() };
        }
        catch
        {
            socket.Dispose();
            throw;
        }
        try
        {
            await stream.WaitWritableAsync(cancellationToken, connect: true);
            return stream;
        }
        catch
        {
            stream.Dispose();
            throw;
        }
    }

    public override bool CanRead => true;
    public override bool CanWrite => true;
    public override bool CanSeek => false;
    public override long Length => throw new NotSupportedException();
    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

    /// <summary>
    /// A zero-byte read waits until the socket is readable (data, FIN or an error) and returns 0 without consuming
    /// anything, as NetworkStream's does: an idle connection waits so without holding a buffer.
    /// </summary>
    public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        if (cancellationToken.IsCancellationRequested)
        {
            return ValueTask.FromCanceled<int>(cancellationToken);
        }
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        var onLoop = Loop.IsOnLoop;
        if ((!onLoop || _readable || _peerClosed) && TryReceive(buffer, onLoop, out var received, out var error))
        {
            return error is null ? new ValueTask<int>(received) : ValueTask.FromException<int>(error);
        }
        _read.Reset();
        _readBuffer = buffer;
        _readToken = cancellationToken;
        _readPending = true;
        if (cancellationToken.CanBeCanceled)
        {
            _readCancel = cancellationToken.UnsafeRegister(static s => ((LoopStream)s!).Loop.Post(static x => ((LoopStream)x!).CancelRead(), s), this);
        }
        if (!onLoop)
        {
            // The socket may have become readable between the receive above and now, with its edge already handled.
            Loop.Post(s_retryRead, this);
        }
        return new ValueTask<int>(this, _read.Version);
    }

    public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
    {
        if (cancellationToken.IsCancellationRequested)
        {
            return ValueTask.FromCanceled(cancellationToken);
        }
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        if (!TrySend(ref buffer, out var error))
        {
            return WriteRestAsync(buffer, cancellationToken);
        }
        return error is null ? default : ValueTask.FromException(error);
    }

    // What the kernel's send buffer could not take at once: sent as it drains. Only a large upload or a slow
    // destination comes here, so the state machine this allocates is not on the common path.
    private async ValueTask WriteRestAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken)
    {
        do
        {
            await WaitWritableAsync(cancellationToken, connect: false);
            if (TrySend(ref buffer, out var error) && error is not null)
            {
                throw error;
            }
        }
        while (!buffer.IsEmpty);
    }

    // Sends until done (true), an error (true, with it) or a full send buffer (false, `buffer` left with the rest).
    private bool TrySend(ref ReadOnlyMemory<byte> buffer, out Exception? error)
    {
        error = null;
        while (!buffer.IsEmpty)
        {
            int sent;
            SocketError result;
            try
            {
                sent = Socket.Send(buffer.Span, SocketFlags.None, out result);
            }
            catch (ObjectDisposedException)
            {
                result = SocketError.OperationAborted;
                sent = 0;
            }
            if (result == SocketError.WouldBlock)
            {
                return false;
            }
            if (result != SocketError.Success)
            {
                error = TransportError("write", result);
                return true;
            }
            buffer = buffer[sent..];
        }
        return true;
    }

    // One receive without waiting: true with the count (0: end of stream) or the error; false when it would block.
    // `onLoop`: the caller is the loop's thread, which keeps the readiness flags.
    private bool TryReceive(Memory<byte> buffer, bool onLoop, out int received, out Exception? error)
    {
        error = null;
        SocketError result;
        try
        {
            received = buffer.IsEmpty
                ? Socket.Receive(_peek, 0, 1, SocketFlags.Peek, out result) * 0
                : Socket.Receive(buffer.Span, SocketFlags.None, out result);
        }
        catch (ObjectDisposedException)
        {
            received = 0;
            result = SocketError.OperationAborted;
        }
        if (result == SocketError.WouldBlock)
        {
            if (onLoop)
            {
                _readable = false;
            }
            return false;
        }
        if (result != SocketError.Success)
        {
            received = 0;
            error = TransportError("read", result);
        }
        if (onLoop)
        {
            if (error is not null || (received == 0 && !buffer.IsEmpty))
            {
                _peerClosed = true;
            }
            // A read that did not fill its buffer took everything there was; a peek leaves it all.
            _readable = buffer.IsEmpty || received == buffer.Length;
        }
        return true;
    }

    private static IOException TransportError(string direction, SocketError error)
    {
        var socket = new SocketException((int)error);
        return new IOException($"Unable to {direction} data {(direction == "read" ? "from" : "to")} the transport connection: {socket.Message}.", socket);
    }

    private ValueTask WaitWritableAsync(CancellationToken cancellationToken, bool connect)
    {
        _writable.Reset();
        _writeToken = cancellationToken;
        _writePending = true;
        if (cancellationToken.CanBeCanceled)
        {
            _writeCancel = cancellationToken.UnsafeRegister(static s => ((LoopStream)s!).Loop.Post(static x => ((LoopStream)x!).CancelWrite(), s), this);
        }
        if (connect)
        {
            Loop.Schedule(static s => ((LoopStream)s!).StartConnect(), this);
        }
        else if (!Loop.IsOnLoop)
        {
            Loop.Post(s_retryWrite, this);
        }
        return new ValueTask(this, _writable.Version);
    }

    // On the loop: the registration is made here, before the connect, so that its completion is an edge seen here.
    private void StartConnect()
    {
        var address = _connectTo!;
        _connectTo = null;
        if (Volatile.Read(ref _disposed) != 0)
        {
            EndWrite(new SocketException((int)SocketError.OperationAborted));
            return;
        }
        _registration = Loop.Register(_fd, Interest, this);
        _registered = true;
        var errno = Native.Connect(_fd, address, address.Length);
        if (errno == Native.EInProgress)
        {
            _connecting = true;
            return;
        }
        EndWrite(errno == 0 ? null : new SocketException((int)Native.ToSocketError(errno)));
    }

    // On the loop, for every event of a batch before any is handled (EventLoop.NoteReadiness).
    public void NoteEvents(uint events)
    {
        if ((events & (Native.EpollRdHup | Native.EpollHup | Native.EpollErr)) != 0)
        {
            _peerClosed = true;
        }
        if ((events & ReadReady) != 0)
        {
            _readable = true;
        }
    }

    void ILoopHandler.OnEvents(uint events)
    {
        NoteEvents(events);
        if ((events & ReadReady) != 0)
        {
            if (_readPending && _readBuffer.IsEmpty)
            {
                // A zero-byte read waits for exactly this: readable, no need to look.
                EndRead(0, null);
            }
            else
            {
                RetryRead();
            }
        }
        if ((events & WriteReady) != 0)
        {
            RetryWrite();
        }
    }

    /// <summary>
    /// Moves the socket to <paramref name="target"/>'s epoll: it leaves its loop's (on that loop), then joins the
    /// target's (on the target), where the task completes and its continuation runs inline. The pool moves an idle
    /// connection it leases to a request on another loop, so that connections follow the requests instead of each
    /// exchange on them crossing threads. A read waiting meanwhile (the idle watch's) stays waiting, and is retried on
    /// the target in case its data arrived in between. Only for a connection nobody else is using. <paramref name="leaving"/>
    /// runs on the loop left, before the socket leaves its epoll: what the owner keeps in that loop (a timer) goes.
    /// </summary>
    public Task MoveToAsync(EventLoop target, Action<EventLoop>? leaving = null)
    {
        var moved = new TaskCompletionSource();
        var from = Loop;
        from.Schedule(_ =>
        {
            leaving?.Invoke(from);
            if (_registered)
            {
                _registered = false;
                from.Unregister(_fd, _registration);
            }
            Volatile.Write(ref _loop, target);
            target.Post(_ =>
            {
                if (Volatile.Read(ref _disposed) == 0)
                {
                    _registration = target.Register(_fd, Interest, this);
                    _registered = true;
                    _readable = true;
                    RetryRead();
                }
                moved.SetResult();
            }, null);
        }, null);
        return moved.Task;
    }

    /// <summary>
    /// On the loop: completes a waiting read now if epoll said the socket has something, before its event is handled.
    /// The pool calls it before it leases an idle connection, so that a close (a FIN, a TLS close_notify) already
    /// received is seen by the idle watch before a request is sent on the connection. The flags cover every event up
    /// to the loop's last epoll_wait, this batch's included (EventLoop.NoteReadiness); a close that arrives after it
    /// races with the request as it would a moment later, and the replay policy handles it. Looking with a system
    /// call every time cost one more receive per reused connection (an EAGAIN, nearly always).
    /// </summary>
    public void Pump()
    {
        if (Loop.IsOnLoop && (_readable || _peerClosed))
        {
            RetryRead();
        }
    }

    // On the loop. Looks whatever the flags say: the callers know the socket may have something.
    private void RetryRead()
    {
        if (!_readPending || !TryReceive(_readBuffer, onLoop: true, out var received, out var error))
        {
            return;
        }
        EndRead(received, error);
    }

    private void RetryWrite()
    {
        if (!_writePending)
        {
            return;
        }
        if (_connecting)
        {
            _connecting = false;
            var errno = Native.PendingError(_fd);
            EndWrite(errno == 0 ? null : new SocketException((int)Native.ToSocketError(errno)));
            return;
        }
        // The writer sends again itself; if the buffer is still full it waits for the next edge.
        EndWrite(null);
    }

    private void CancelRead()
    {
        if (_readPending && _readToken.IsCancellationRequested)
        {
            EndRead(0, new OperationCanceledException(_readToken));
        }
    }

    private void CancelWrite()
    {
        if (_writePending && _writeToken.IsCancellationRequested)
        {
            _connecting = false;
            EndWrite(new OperationCanceledException(_writeToken));
        }
    }

    private void EndRead(int received, Exception? error)
    {
        _readPending = false;
        _readBuffer = default;
        _readCancel.Unregister();
        _readCancel = default;
        if (error is null)
        {
            _read.SetResult(received);
        }
        else
        {
            _read.SetException(error);
        }
    }

    private void EndWrite(Exception? error)
    {
        _writePending = false;
        _writeCancel.Unregister();
        _writeCancel = default;
        if (error is null)
        {
            _writable.SetResult(true);
        }
        else
        {
            _writable.SetException(error);
        }
    }

    // Unregistered, then closed: the descriptor number is free only once epoll has let go of it. A read or write
    // still waiting ends as aborted, as a .NET socket's pending operations do when it is disposed.
    private void CloseOnLoop()
    {
        if (_registered)
        {
            _registered = false;
            Loop.Unregister(_fd, _registration);
        }
        Socket.Dispose();
        if (_readPending)
        {
            EndRead(0, TransportError("read", SocketError.OperationAborted));
        }
        if (_writePending)
        {
            _connecting = false;
            EndWrite(new SocketException((int)SocketError.OperationAborted));
        }
    }

    protected override void Dispose(bool disposing)
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0)
        {
            Loop.Schedule(s_close, this);
        }
        base.Dispose(disposing);
    }

    int IValueTaskSource<int>.GetResult(short token) => _read.GetResult(token);
    ValueTaskSourceStatus IValueTaskSource<int>.GetStatus(short token) => _read.GetStatus(token);
    void IValueTaskSource<int>.OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
        _read.OnCompleted(continuation, state, token, flags);

    void IValueTaskSource.GetResult(short token) => _writable.GetResult(token);
    ValueTaskSourceStatus IValueTaskSource.GetStatus(short token) => _writable.GetStatus(token);
    void IValueTaskSource.OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
        _writable.OnCompleted(continuation, state, token, flags);

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override Task FlushAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public override void Flush()
    {
    }

    // Blocking calls have no place on a loop; nothing in Ferry makes them on this stream.
    public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();
}
