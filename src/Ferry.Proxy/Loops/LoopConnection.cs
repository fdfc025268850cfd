using System.Buffers;
using System.IO.Pipelines;
using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Http.Features;

namespace Ferry.Loops;

/// <summary>
/// A client connection served by one <see cref="EventLoop"/>: a non-blocking socket registered (edge-triggered) in
/// the loop's epoll, read and written on the loop's thread when epoll says it is ready. Kestrel reads the input pipe
/// and writes the output pipe; the input's reader and the output's reader are scheduled on the loop, so Kestrel's
/// request processing runs on the thread that received the bytes, and responses are sent from it.
/// <para>Every field below but the ones marked otherwise is touched on the loop's thread only.</para>
/// <para>Lifetime, as Kestrel's socket transport: the connection ends when the send side ends (the application
/// completed its output, an abort, or a send error). Then the socket is shut down, unregistered from epoll and closed,
/// in that order and on the loop, so that no event of a closed descriptor number reaches anyone.</para>
/// </summary>
internal sealed class LoopConnection : ConnectionContext, IConnectionIdFeature, IConnectionTransportFeature, IConnectionItemsFeature,
    IMemoryPoolFeature, IConnectionLifetimeFeature, IConnectionEndPointFeature, ILoopHandler
{
    // Kestrel's socket transport asks for half a block at least, so a receive fills most of one pool block.
    private const int MinReceiveBuffer = 2048;
    private const int MaxUnflushedReceive = 64 * 1024;

    private static long s_nextId;

    private readonly EventLoop _loop;
    // The bare descriptor, with no Socket over it: an idle connection then holds no async context, locks or cached
    // endpoints of .NET's sockets (docs/decisions/2026-12-03-idle-connections.md). Closed in Shutdown, on the loop.
    private readonly int _fd;
    private readonly LoopTransportCounters _counters;
    private readonly Pipe _input;
    private readonly Pipe _output;
    private readonly CancellationTokenSource _closedSource = new();
    // Completed once the descriptor is closed and both pipe ends the transport holds are completed.
    private readonly TaskCompletionSource _ended = new(TaskCreationOptions.RunContinuationsAsynchronously);
    // Made the first time the input fills up: most connections never need it.
    private Action? _resumeReceive;
    private long _registration;
    private string? _id;
    private IDictionary<object, object?>? _items;

    private bool _receiving = true;         // false once the input is complete (FIN, error, or the reader let go)
    private ValueTask<FlushResult> _pendingFlush;
    private bool _flushPending;             // the input is full: reading waits for the application
    private bool _readable;                 // epoll said readable since the last EAGAIN
    private bool _peerClosed;               // EPOLLRDHUP/HUP seen: read until 0 rather than stop at a short read
    private bool _closed;                   // descriptor closed
    private bool _closedFired;
    private Exception? _shutdownReason;
    // The send side (Send): the read it waits for, the read result it is sending, whether it waits for EPOLLOUT
    // after a send met a full kernel buffer (or for an abort).
    private readonly Action _send;
    private ValueTask<ReadResult> _pendingRead;
    private bool _readPending;
    private ReadOnlySequence<byte> _sending;
    private bool _sendingResult;
    private bool _sendingLast;
    private bool _waitingWritable;
    private volatile bool _aborted;         // any thread

    /// <summary>Takes <paramref name="fd"/> (accepted non-blocking) and closes it when the connection ends.</summary>
    public LoopConnection(EventLoop loop, int fd, EndPoint? localEndPoint, EndPoint? remoteEndPoint, LoopPipeOptions pipes, LoopTransportCounters counters)
    {
        _loop = loop;
        _fd = fd;
        _counters = counters;
        MemoryPool = pipes.Pool;
        // Read at accept, as Kestrel does: the application may ask after the socket is closed.
        LocalEndPoint = localEndPoint;
        RemoteEndPoint = remoteEndPoint;
        _input = new Pipe(pipes.Input);
        _output = new Pipe(pipes.Output);
        Transport = new DuplexPipe(_input.Reader, _output.Writer);
        ConnectionClosed = _closedSource.Token;
        _send = Send;

        Features = new FeatureCollection();
        Features.Set<IConnectionIdFeature>(this);
        Features.Set<IConnectionTransportFeature>(this);
        Features.Set<IConnectionItemsFeature>(this);
        Features.Set<IMemoryPoolFeature>(this);
        Features.Set<IConnectionLifetimeFeature>(this);
        Features.Set<IConnectionEndPointFeature>(this);
    }

    public EventLoop Loop => _loop;

    public override string ConnectionId
    {
        get => _id ??= $"L{_loop.Index}-{Interlocked.Increment(ref s_nextId):X}";
        set => _id = value;
    }

    public override IFeatureCollection Features { get; }

    public override IDictionary<object, object?> Items
    {
        get => _items ??= new ConnectionItems();
        set => _items = value;
    }

    public override IDuplexPipe Transport { get; set; }

    public MemoryPool<byte> MemoryPool { get; }

    public override CancellationToken ConnectionClosed { get; set; }

    public override EndPoint? LocalEndPoint { get; set; }

    public override EndPoint? RemoteEndPoint { get; set; }

    /// <summary>Registers the socket and starts the send side. On the loop's thread, right after accept (the loop
    /// counted it as its client then: <see cref="EventLoop.ClientAssigned"/>).</summary>
    public void Start()
    {
        _registration = _loop.Register(_fd, Native.EpollIn | Native.EpollOut | Native.EpollRdHup | Native.EpollEt, this);
        _counters.OnOpened();
        Send();
    }

    void ILoopHandler.OnEvents(uint events)
    {
        if (_closed)
        {
            return;
        }
        if ((events & (Native.EpollRdHup | Native.EpollHup | Native.EpollErr)) != 0)
        {
            _peerClosed = true;
        }
        if ((events & (Native.EpollIn | Native.EpollRdHup | Native.EpollHup | Native.EpollErr)) != 0)
        {
            _readable = true;
            if (!_flushPending)
            {
                Receive();
            }
        }
        if ((events & (Native.EpollOut | Native.EpollHup | Native.EpollErr)) != 0 && _waitingWritable)
        {
            _waitingWritable = false;
            Send();
        }
    }

    // Reads until the kernel has nothing more (edge-triggered: the next edge only comes with new data), the input is
    // full (resumed by the flush's completion), or the input ends.
    private void Receive()
    {
        while (_receiving && _readable && !_closed)
        {
            // Reads that fill their block are followed by the next one before the input is flushed, up to
            // MaxUnflushedReceive: a flush runs the application inline, and an upload relayed a flush at a time went
            // upstream in one send(2) per 4 KiB block.
            var unflushed = 0;
            while (true)
            {
                var memory = _input.Writer.GetMemory(MinReceiveBuffer);
                var received = Native.Receive(_fd, memory.Span, out var error);
                if (error == SocketError.WouldBlock)
                {
                    _readable = false;
                    break;
                }
                if (error != SocketError.Success)
                {
                    EndInput(IsReset(error) ? new ConnectionResetException($"Connection reset by peer ({error})", new SocketException((int)error)) : new SocketException((int)error));
                    return;
                }
                if (received == 0)
                {
                    // Completing the input hands Kestrel what was read before the end.
                    EndInput(null);
                    return;
                }
                _input.Writer.Advance(received);
                unflushed += received;
                // A short read drained the socket: data arriving later makes a new edge. Unless the peer has closed its
                // side, whose end of stream only shows as a read of 0 and brings no further edge.
                if (received < memory.Length)
                {
                    _readable = _peerClosed;
                    break;
                }
                if (unflushed >= MaxUnflushedReceive)
                {
                    break;
                }
            }
            if (unflushed == 0)
            {
                return;
            }
            var flush = _input.Writer.FlushAsync();
            if (_closed)
            {
                // The flush ran the application inline, which ended the connection: the input is complete already.
                return;
            }
            if (!flush.IsCompleted)
            {
                _flushPending = true;
                _pendingFlush = flush;
                flush.GetAwaiter().UnsafeOnCompleted(_resumeReceive ??= ResumeReceive);
                return;
            }
            if (!Continue(flush.GetAwaiter().GetResult()))
            {
                return;
            }
        }
    }

    // The application made room in the input (or let go of it): on the loop, through the input's writer scheduler.
    private void ResumeReceive()
    {
        _flushPending = false;
        var flush = _pendingFlush;
        _pendingFlush = default;
        var result = flush.GetAwaiter().GetResult();
        if (_closed)
        {
            // The connection ended while the input was full; its end was deferred to here.
            CompleteInput();
            return;
        }
        if (Continue(result))
        {
            Receive();
        }
    }

    private bool Continue(FlushResult result)
    {
        if (result.IsCompleted || result.IsCanceled)
        {
            // Kestrel no longer reads this connection's input: stop receiving, the send side ends the connection.
            _receiving = false;
            _input.Writer.Complete();
            return false;
        }
        return true;
    }

    private void EndInput(Exception? error)
    {
        _receiving = false;
        _input.Writer.Complete(error);
        FireConnectionClosed();
    }

    // Once the descriptor is closed: the input ends with the reason the connection ended (as Kestrel's transport).
    private void CompleteInput()
    {
        if (_receiving)
        {
            _receiving = false;
            _input.Writer.Complete(_shutdownReason);
        }
        FireConnectionClosed();
        _ended.TrySetResult();
    }

    // The send side, on the loop: sends what the application writes until its output completes, an abort or a send
    // error, then ends the connection. Not an async method, so that an idle connection holds no state machine: only
    // the callback registered on the output's pending read, or run by OnEvents at the next EPOLLOUT.
    private void Send()
    {
        Exception? error = null;
        try
        {
            while (true)
            {
                if (!_sendingResult)
                {
                    ReadResult result;
                    if (_readPending)
                    {
                        // Resumed by the output's reader scheduler: the pending read has completed.
                        _readPending = false;
                        result = _pendingRead.GetAwaiter().GetResult();
                        _pendingRead = default;
                    }
                    else
                    {
                        if (_aborted)
                        {
                            break;
                        }
                        var read = _output.Reader.ReadAsync();
                        if (!read.IsCompleted)
                        {
                            _readPending = true;
                            _pendingRead = read;
                            read.GetAwaiter().UnsafeOnCompleted(_send);
                            return;
                        }
                        result = read.GetAwaiter().GetResult();
                    }
                    if (result.IsCanceled || _aborted)
                    {
                        break;
                    }
                    _sending = result.Buffer;
                    _sendingLast = result.IsCompleted;
                    _sendingResult = true;
                }
                while (!_sending.IsEmpty && !_aborted)
                {
                    // One system call for many segments: a large response sits in the pipe as many 4 KiB blocks,
                    // and a send(2) per block cost several times the CPU of Kestrel's socket transport, which gathers.
                    var sent = Native.SendGather(_fd, _sending, out var socketError);
                    if (socketError == SocketError.WouldBlock)
                    {
                        // The kernel's send buffer is full: go on at EPOLLOUT (or an abort), on the loop.
                        _waitingWritable = true;
                        return;
                    }
                    if (socketError != SocketError.Success)
                    {
                        throw new SocketException((int)socketError);
                    }
                    _sending = _sending.Slice(sent);
                }
                _sendingResult = false;
                _output.Reader.AdvanceTo(_sending.End);
                _sending = default;
                if (_sendingLast)
                {
                    break;
                }
            }
        }
        catch (SocketException ex) when (IsReset(ex.SocketErrorCode))
        {
            error = new ConnectionResetException(ex.Message, ex);
        }
        catch (Exception ex)
        {
            error = ex;
        }
        _sending = default;
        Shutdown(error);
        _output.Reader.Complete();
    }

    // The end of the connection, on the loop: FIN both ways (even for an abort, as Kestrel's transport does), then
    // unregister, then close, so that the descriptor number is free only once epoll has let go of it.
    private void Shutdown(Exception? reason)
    {
        _shutdownReason = reason ?? new ConnectionAbortedException("The connection's send side completed.");
        // Fails when already reset or disconnected: closing is all that is left then.
        Native.ShutdownBoth(_fd);
        _loop.Unregister(_fd, _registration);
        Native.Close(_fd);
        _closed = true;
        _counters.OnClosed();
        _loop.ClientClosed();
        if (_flushPending)
        {
            // The receive side waits on a full input: wake it, it completes the input (ResumeReceive).
            _input.Writer.CancelPendingFlush();
        }
        else
        {
            CompleteInput();
        }
    }

    private void FireConnectionClosed()
    {
        if (_closedFired)
        {
            return;
        }
        _closedFired = true;
        // Off the loop: the token's callbacks are the application's, and may take their time.
        ThreadPool.UnsafeQueueUserWorkItem(static s => s.Cancel(), _closedSource, preferLocal: false);
    }

    /// <summary>Ends the connection from any thread: the send side stops at once and closes the socket on the loop.</summary>
    public override void Abort(ConnectionAbortedException abortReason)
    {
        if (_aborted)
        {
            return;
        }
        _aborted = true;
        _output.Reader.CancelPendingRead();
        _loop.Post(static s =>
        {
            var connection = (LoopConnection)s!;
            if (connection._waitingWritable)
            {
                connection._waitingWritable = false;
                connection.Send();
            }
        }, this);
    }

    /// <summary>Called by Kestrel once the connection's middleware has finished: completes what the application
    /// held and waits until the socket is closed.</summary>
    public override async ValueTask DisposeAsync()
    {
        _input.Reader.Complete();
        _output.Writer.Complete();
        // The source is not disposed: its cancellation may still be queued, and without a timer or a linked token
        // it holds nothing that needs disposing.
        await _ended.Task;
    }

    private static bool IsReset(SocketError error) =>
        error is SocketError.ConnectionReset or SocketError.Shutdown or SocketError.ConnectionAborted;

    private sealed class DuplexPipe(PipeReader input, PipeWriter output) : IDuplexPipe
    {
        public PipeReader Input { get; } = input;

        public PipeWriter Output { get; } = output;
    }

    void IConnectionLifetimeFeature.Abort() => Abort(new ConnectionAbortedException("The connection was aborted by the application."));
}

/// <summary>The pipe options of the connections one loop accepts from one listener: made once, not per connection.</summary>
internal sealed class LoopPipeOptions(EventLoop loop, MemoryPool<byte> pool)
{
    // Kestrel's default MaxRequestBufferSize and MaxResponseBufferSize (1 MiB and 64 KiB): how far the loop reads
    // ahead of the application, and how much a response may queue before the application's flush waits.
    private const long InputPause = 1024 * 1024;
    private const long OutputPause = 64 * 1024;

    // What a relay writes to a client between yields to the loop (EventLoop.Yield), so that the deferred send drains
    // the output before it reaches OutputPause: a flush that waits there resumes on the thread pool (Kestrel's
    // ConcurrentPipeWriter completes it through a task that runs its continuations asynchronously), and with it the
    // rest of the relay, 14.6 work items per 1 MiB response.
    public const long WriteBeforeYield = OutputPause / 2;

    public MemoryPool<byte> Pool { get; } = pool;

    // The loop is the input reader's scheduler (Kestrel's request processing runs on it) and the output reader's (the
    // send side, deferred to the end of the loop's batch so that writes of one batch leave together); a paused
    // receive resumes on it. The application's flushes of the output resume inline on the loop when the send side
    // makes room.
    public PipeOptions Input { get; } = new(pool, readerScheduler: loop, writerScheduler: loop, InputPause, InputPause / 2, useSynchronizationContext: false);

    public PipeOptions Output { get; } = new(pool, readerScheduler: loop.Deferred, writerScheduler: PipeScheduler.Inline, OutputPause, OutputPause / 2, useSynchronizationContext: false);
}
