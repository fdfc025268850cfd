using System.Buffers;
using System.Threading.Channels;
using Microsoft.AspNetCore.Connections;

namespace Ferry.Loops;

/// <summary>
/// Accepts on one listening descriptor from every loop: each loop registers it with EPOLLEXCLUSIVE (the kernel wakes
/// one waiting loop per incoming connection rather than all of them) and accepts when woken; a connection lives on
/// the loop with the fewest clients at that moment (<see cref="EventLoops.LeastLoaded"/>). Accepted connections are queued for <see cref="AcceptAsync"/>, Kestrel's accept loop.
/// The descriptor is borrowed: the owner closes it, after <see cref="StopAcceptingAsync"/> has taken it out of every
/// epoll instance.
/// </summary>
internal sealed class LoopListener
{
    // Connections taken per wake-up before the loop turns to its other descriptors; the registration is
    // level-triggered, so whatever is left in the backlog wakes a loop again.
    private const int AcceptBatch = 16;

    private readonly EventLoops _loops;
    private readonly int _fd;
    private readonly MemoryPool<byte> _pool;
    private readonly Channel<LoopConnection> _accepted = Channel.CreateUnbounded<LoopConnection>(new UnboundedChannelOptions { SingleReader = false, SingleWriter = false });
    private readonly Acceptor[] _acceptors;
    private readonly Lock _lock = new();
    private Task? _stopped;

    public LoopListener(EventLoops loops, int fd, MemoryPool<byte> pool)
    {
        _loops = loops;
        _fd = fd;
        _pool = pool;
        _acceptors = [.. loops.All.Select(l => new Acceptor(this, l))];
    }

    /// <summary>Puts the descriptor in every loop's epoll; connections are accepted from then on.</summary>
    public async Task StartAsync()
    {
        Native.SetNonBlocking(_fd);
        await Task.WhenAll(_acceptors.Select(a => a.Loop.InvokeAsync(() => a.Token = a.Loop.Register(_fd, Native.EpollIn | Native.EpollExclusive, a))));
    }

    /// <summary>The next accepted connection; null once accepting has stopped and the queue is empty.</summary>
    public async ValueTask<LoopConnection?> AcceptAsync(CancellationToken cancellationToken)
    {
        try
        {
            return await _accepted.Reader.ReadAsync(cancellationToken);
        }
        catch (ChannelClosedException)
        {
            return null;
        }
    }

    /// <summary>A connection already accepted, without waiting; null when none is queued.</summary>
    public LoopConnection? TryTake() => _accepted.Reader.TryRead(out var connection) ? connection : null;

    /// <summary>
    /// Takes the descriptor out of every loop's epoll (each on its own thread, so no accept is running on it when
    /// this completes); connections accepted before remain queued. Idempotent.
    /// </summary>
    public Task StopAcceptingAsync()
    {
        lock (_lock)
        {
            return _stopped ??= StopAsync();
        }

        async Task StopAsync()
        {
            await Task.WhenAll(_acceptors.Select(a => a.Loop.InvokeAsync(() => a.Loop.Unregister(_fd, a.Token))));
            _accepted.Writer.TryComplete();
        }
    }

    /// <summary>Stops accepting and closes the connections that were accepted but never taken.</summary>
    public async Task StopAsync()
    {
        await StopAcceptingAsync();
        while (_accepted.Reader.TryRead(out var connection))
        {
            connection.Abort(new ConnectionAbortedException("The listener stopped before the connection was served."));
            await connection.DisposeAsync();
        }
    }

    private sealed class Acceptor(LoopListener listener, EventLoop loop) : ILoopHandler
    {
        private readonly LoopPipeOptions _pipes = new(loop, listener._pool);

        public EventLoop Loop { get; } = loop;

        public long Token { get; set; }

        public void OnEvents(uint events)
        {
            for (var i = 0; i < AcceptBatch; i++)
            {
                var fd = Native.Accept(listener._fd, out var errno);
                if (fd < 0)
                {
                    if (errno == Native.EIntr)
                    {
                        continue;
                    }
                    // EAGAIN: another loop took it, or the backlog is empty. Anything else (out of descriptors,
                    // a connection reset while queued) is retried on the next wake-up, as Kestrel's accept loop retries.
                    return;
                }
                // Read now: a connection reset while queued has no peer address any more, and nothing to serve.
                var remote = Native.EndPoint(fd, remote: true);
                var local = remote is null ? null : Native.EndPoint(fd, remote: false);
                if (local is null || !Native.SetNoDelay(fd))
                {
                    Native.Close(fd);
                    continue;
                }
                // Served by the loop with the fewest clients: this one, unless another has fewer, which then
                // registers the connection on its own thread.
                var loop = listener._loops.LeastLoaded(Loop);
                loop.ClientAssigned();
                var connection = new LoopConnection(loop, fd, local, remote, listener._acceptors[loop.Index]._pipes, listener._loops.Connections);
                if (ReferenceEquals(loop, Loop))
                {
                    connection.Start();
                }
                else
                {
                    loop.Post(static c => ((LoopConnection)c!).Start(), connection);
                }
                if (!listener._accepted.Writer.TryWrite(connection))
                {
                    connection.Abort(new ConnectionAbortedException("The listener stopped."));
                    _ = connection.DisposeAsync();
                }
            }
        }
    }
}

/// <summary>Connections opened and closed by the loops' transport: a test reads that every accepted descriptor was closed.</summary>
internal sealed class LoopTransportCounters
{
    private long _opened;
    private long _closed;

    public long Opened => Volatile.Read(ref _opened);

    public long Closed => Volatile.Read(ref _closed);

    public void OnOpened() => Interlocked.Increment(ref _opened);

    public void OnClosed() => Interlocked.Increment(ref _closed);
}
