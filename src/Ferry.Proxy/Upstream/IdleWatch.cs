using System.Diagnostics;
using System.IO.Pipelines;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using System.Runtime.ExceptionServices;
using System.Threading.Tasks.Sources;

namespace Ferry.Upstream;

// How an idle connection's pending read ended, as the pool hands it to the exchange that leased the connection.
internal readonly record struct IdleRead(ReadResult Result, Exception? Error);

// The read an idle connection keeps pending (docs/architecture.md, "The idle watch"), one per connection and reused
// for every idle period: an async method here cost a Task per request (docs/decisions/2026-11-22-hot-path-3.md).
// Life of one idle period: the pool starts it on Release; when the read ends, the pool decides under its lock whether
// the connection was still idle (then the close is observed and the connection retired) or leased; a leased
// connection's exchange takes the read over (TakeOver) and gets its result as the first bytes of the response.
// The read waits in two steps: a zero-byte receive on the socket until something arrives (data, FIN or RST), then the
// pipe read, which completes at once with what arrived, exactly as a pipe read pending all along would have. Waiting
// in the pipe read itself costs a pooled state machine box of StreamPipeReader's per idle period, which its cache
// misses whenever the read is started and completed on different threads; the socket's receive is a single reused
// object. It also leaves an idle connection without a receive buffer, like Kestrel's WaitForDataBeforeAllocatingBuffer.
internal sealed class IdleWatch : IValueTaskSource<ReadResult>
{
    private readonly UpstreamConnection _connection;
    private readonly bool _waitOnSocket;
    private readonly Action _readable;
    private readonly Action _readEnded;
    // Completed once per idle period with how the read ended; its continuation is the exchange's, run inline.
    private ManualResetValueTaskSourceCore<IdleRead> _core;
    private ConfiguredValueTaskAwaitable<int>.ConfiguredValueTaskAwaiter _wait;        // the zero-byte receive
    private ConfiguredValueTaskAwaitable<ReadResult>.ConfiguredValueTaskAwaiter _read; // the pipe read after it
    private CancellationTokenSource _cancelWait = new(); // cancels the zero-byte receive for the exchange; reused until cancelled
    private ConnectionPool? _pool;                     // the pool that started the current period
    private IdleRead _ended;                           // how the read ended; valid once _hasEnded
    private volatile bool _hasEnded;                   // the read of the current period ended
    private bool _pending;                             // started and not yet taken over by an exchange
    private CancellationTokenRegistration _cancel;     // the exchange's token, while it waits for the read
    private CancellationToken _exchangeToken;

    // `waitOnSocket` false (TLS): the pipe read waits from the start. A TLS stream can hold received records in its
    // own buffer (a close_notify read along with the last response bytes) where the socket shows nothing to wait for;
    // and a record arriving while idle may be a session ticket, not a close: only the TLS stream's read can tell.
    public IdleWatch(UpstreamConnection connection, bool waitOnSocket = true)
    {
        _connection = connection;
        _waitOnSocket = waitOnSocket;
        _readable = Readable;
        _readEnded = ReadEnded;
    }

    // The connection went idle in `pool`: its next read starts now. If a close is already queued, it ends (and the
    // pool sees it) before this returns.
    public void Start(ConnectionPool pool)
    {
        Debug.Assert(!_pending, "the previous idle read was never taken over");
        _core.Reset();
        _pool = pool;
        _hasEnded = false;
        _pending = true;
        if (!_cancelWait.TryReset())
        {
            _cancelWait.Dispose();
            _cancelWait = new CancellationTokenSource();
        }
        ValueTask<int> wait;
        try
        {
            if (_connection.Input.TryRead(out var buffered))
            {
                // Bytes or the end of the stream already in the pipe: what a pipe read would return at once.
                End(new IdleRead(buffered, null));
                return;
            }
            if (!_waitOnSocket)
            {
                Read();
                return;
            }
            wait = _connection.WaitForDataAsync(_cancelWait.Token);
        }
        catch (Exception ex)
        {
            End(new IdleRead(default, AsReadError(ex)));
            return;
        }
        _wait = wait.ConfigureAwait(false).GetAwaiter();
        if (_wait.IsCompleted)
        {
            Readable();
        }
        else
        {
            _wait.UnsafeOnCompleted(_readable);
        }
    }

    // Whether an idle read is waiting to be taken over by the exchange that leased the connection.
    public bool IsPending => _pending;

    // How the current period's read ended, if it has.
    public bool TryGetEnded(out IdleRead read)
    {
        var ended = _hasEnded;
        read = ended ? _ended : default;
        return ended;
    }

    // The exchange that leased the connection continues the idle read: its result is the first bytes of the response
    // (or the close that raced with the request). `cancellationToken` cancels the read as it would a pipe read.
    public ValueTask<ReadResult> TakeOver(CancellationToken cancellationToken)
    {
        Debug.Assert(_pending);
        _pending = false;
        _exchangeToken = cancellationToken;
        _cancel = cancellationToken.UnsafeRegister(static s => ((IdleWatch)s!).Cancel(), this);
        return new ValueTask<ReadResult>(this, _core.Version);
    }

    // Whichever step is waiting ends as cancelled.
    private void Cancel()
    {
        _cancelWait.Cancel();
        _connection.Input.CancelPendingRead();
    }

    private void Readable()
    {
        try
        {
            _wait.GetResult();
        }
        catch (Exception ex)
        {
            _wait = default;
            End(new IdleRead(default, AsReadError(ex)));
            return;
        }
        _wait = default;
        Read();
    }

    private void Read()
    {
        ValueTask<ReadResult> read;
        try
        {
            read = _connection.Input.ReadAsync();
        }
        catch (Exception ex)
        {
            End(new IdleRead(default, AsReadError(ex)));
            return;
        }
        _read = read.ConfigureAwait(false).GetAwaiter();
        if (_read.IsCompleted)
        {
            ReadEnded();
        }
        else
        {
            _read.UnsafeOnCompleted(_readEnded);
        }
    }

    private void ReadEnded()
    {
        IdleRead read;
        try
        {
            read = new IdleRead(_read.GetResult(), null);
        }
        catch (Exception ex)
        {
            read = new IdleRead(default, ex);
        }
        _read = default;
        End(read);
    }

    // The socket's own errors in the shape NetworkStream gives the pipe's, which the pool and the exchange classify.
    private static Exception AsReadError(Exception ex) =>
        ex is SocketException socket ? new IOException($"Unable to read data from the transport connection: {socket.Message}.", socket) : ex;

    private void End(IdleRead read)
    {
        _ended = read;
        _hasEnded = true;
        // The pool decides first, under its lock, so a connection still idle is retired before anyone can lease it;
        // the exchange of a leased one continues on this thread, outside the lock.
        _pool!.IdleReadEnded(_connection, read);
        _core.SetResult(read);
    }

    ReadResult IValueTaskSource<ReadResult>.GetResult(short token)
    {
        var idle = _core.GetResult(token);
        // Disposing waits for a running callback: the exchange's token can no longer cancel this pipe's next read.
        _cancel.Dispose();
        _cancel = default;
        if (idle.Error is OperationCanceledException)
        {
            // The zero-byte receive was cancelled for the exchange.
            throw new OperationCanceledException(_exchangeToken);
        }
        if (idle.Error is { } error)
        {
            ExceptionDispatchInfo.Throw(error);
        }
        if (idle.Result.IsCanceled)
        {
            _connection.Input.AdvanceTo(idle.Result.Buffer.Start);
            throw new OperationCanceledException(_exchangeToken);
        }
        return idle.Result;
    }

    ValueTaskSourceStatus IValueTaskSource<ReadResult>.GetStatus(short token) => _core.GetStatus(token);

    void IValueTaskSource<ReadResult>.OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
        _core.OnCompleted(continuation, state, token, flags);
}
