using System.Diagnostics;
using Ferry.Configuration;
using Ferry.Errors;
using Ferry.Loops;

namespace Ferry.Upstream;

// The slots of one destination's connection limit (MaxConnections or the adaptive one) and the requests queued for
// them: FIFO, bounded in length and in wait, and a free slot goes to the oldest waiter, so nobody overtakes the queue.
// The limit is read anew at every decision (`limit`): the adaptive one moves while requests wait.
// Its own lock, not the pool's: no caller changes slot state and pool state as one step. The pool releases a slot after
// the connection is back in its idle stack, in that order but not atomically; the adaptive limit (Sample, Overload)
// only reads InFlight, and a limit that rose is acted on by GrantWaiters alone; the pool's shutdown marks itself and
// this queue each under its own lock, and a request that queues between the two is failed by Shutdown like the rest.
internal sealed class SlotQueue(ConnectionLimitConfig config, Func<int> limit, TimeProvider time)
{
    private readonly Lock _lock = new();
    private readonly LinkedList<SlotWaiter> _waiters = []; // guarded by _lock
    private int _inUse;      // slots held (connecting or in use); written under _lock
    private bool _shutDown;  // guarded by _lock

    public int Queued { get { lock (_lock) { return _waiters.Count; } } }

    // Requests holding a slot (connecting or in use).
    public int InFlight => Volatile.Read(ref _inUse);

    // Whether a request now would start at once instead of queueing.
    public bool HasFreeSlot => !config.Limited || InFlight < limit();

    // Under the adaptive limit, a queue longer than Queue:Size still takes newcomers until its oldest request has waited
    // this long: a long queue that drains is a burst being absorbed (a cold start under thousands of connections, while
    // the limit grows from Initial), not an overload; one whose head has waited half the queue timeout is not draining,
    // and a newcomer would wait about as long. A fixed length alone refused 54,015 of 54,102 requests of a cold start
    // (docs/decisions/2026-12-02-adaptive-limit.md).
    public TimeSpan ShedAfter => config.QueueTimeout / 2;

    // A slot, held until Release; throws ProxyException ConnectionLimitReached when the queue is full or the wait
    // timed out, ClientAborted when the request was aborted while queued. `loop`: the event loop serving the request,
    // where it resumes when a slot is handed to it.
    public ValueTask AcquireAsync(CancellationToken requestAborted, EventLoop? loop = null)
    {
        LinkedListNode<SlotWaiter> node;
        lock (_lock)
        {
            // Nobody overtakes the queue: a free slot goes to the oldest waiter, handed over in Release.
            if (_inUse < limit() && _waiters.Count == 0)
            {
                _inUse++;
                return ValueTask.CompletedTask;
            }
            var now = time.GetTimestamp();
            if (_shutDown)
            {
                throw new ProxyException(ProxyError.ConnectionLimitReached, "the destination's pool was shut down");
            }
            if (_waiters.Count >= config.QueueSize)
            {
                var oldest = _waiters.First is { } first ? time.GetElapsedTime(first.Value.Since, now) : TimeSpan.Zero;
                var fixedLength = !config.Adaptive.Enabled || config.QueueSize == 0;
                if (fixedLength || oldest >= ShedAfter)
                {
                    throw new ProxyException(ProxyError.ConnectionLimitReached, fixedLength
                        ? $"{_inUse} connections in use (limit {limit()}) and {_waiters.Count} requests already queued"
                        : $"{_inUse} connections in use (limit {limit()}) and {_waiters.Count} requests queued, the oldest for {oldest.TotalMilliseconds:0} ms");
                }
            }
            node = _waiters.AddLast(new SlotWaiter(now, loop));
        }
        return WaitAsync(node, requestAborted);
    }

    // A request waiting for a slot, and since when (the queue's shedding looks at its oldest). One served by an event
    // loop resumes on it, posted rather than inline: not inside the request that released the slot, nor under the
    // queue's lock. Resumed on the thread pool, it went on there and posted back to its loop at every upstream read
    // and client write; with uploads queued at the limit, the pool's spinning workers took a quarter of the CPU.
    private sealed class SlotWaiter(long since, EventLoop? loop)
        : TaskCompletionSource(loop is null ? TaskCreationOptions.RunContinuationsAsynchronously : TaskCreationOptions.None)
    {
        public long Since { get; } = since;

        // Handed a slot: set under the queue's lock, as the waiter leaves the queue, so that a wait that ends before
        // the posted grant has run still knows it holds a slot.
        public bool Granted { get; set; }

        public void Grant()
        {
            if (loop is null)
            {
                TrySetResult();
            }
            else
            {
                loop.Post(static w => ((SlotWaiter)w!).TrySetResult(), this);
            }
        }

        public void Fail(Exception error)
        {
            if (loop is null)
            {
                TrySetException(error);
            }
            else
            {
                loop.Post(static s => { var (w, e) = ((SlotWaiter, Exception))s!; w.TrySetException(e); }, (this, error));
            }
        }
    }

    private async ValueTask WaitAsync(LinkedListNode<SlotWaiter> node, CancellationToken requestAborted)
    {
        try
        {
            await node.Value.Task.WaitAsync(config.QueueTimeout, time, requestAborted);
        }
        catch (Exception ex) when (ex is TimeoutException or OperationCanceledException)
        {
            bool granted;
            lock (_lock)
            {
                granted = node.Value.Granted;
                if (node.List is not null)
                {
                    _waiters.Remove(node);
                }
            }
            if (granted)
            {
                // The slot arrived as the wait ended: pass it on rather than leak it.
                Release();
            }
            if (requestAborted.IsCancellationRequested)
            {
                throw new ProxyException(ProxyError.ClientAborted, "client went away while queued for a connection", ex);
            }
            throw new ProxyException(ProxyError.ConnectionLimitReached,
                $"waited {config.QueueTimeout.TotalMilliseconds:0} ms for one of {limit()} connections", ex);
        }
    }

    public void Release()
    {
        SlotWaiter? next = null;
        lock (_lock)
        {
            Debug.Assert(_inUse > 0);
            // After the limit fell, slots above it are freed instead of handed on.
            if (_waiters.First is { } first && _inUse <= limit())
            {
                // The slot changes hands without being freed, so a newcomer cannot take it first.
                _waiters.RemoveFirst();
                next = first.Value;
                next.Granted = true;
            }
            else
            {
                _inUse--;
            }
        }
        next?.Grant();
    }

    // The limit rose: the oldest waiters take the new slots.
    public void GrantWaiters()
    {
        List<SlotWaiter>? granted = null;
        lock (_lock)
        {
            while (_waiters.First is { } first && _inUse < limit())
            {
                _waiters.RemoveFirst();
                _inUse++;
                first.Value.Granted = true;
                (granted ??= []).Add(first.Value);
            }
        }
        foreach (var waiter in granted ?? [])
        {
            waiter.Grant();
        }
    }

    // Every waiter fails, and so does every request that would have to queue from now on.
    public void Shutdown()
    {
        lock (_lock)
        {
            _shutDown = true;
            foreach (var waiter in _waiters)
            {
                waiter.Fail(new ProxyException(ProxyError.ConnectionLimitReached, "the destination's pool was shut down while the request waited"));
            }
            _waiters.Clear();
        }
    }
}
