using Ferry.Configuration;
using Ferry.Errors;
using Ferry.Loops;
using Ferry.Upstream;
using Microsoft.Extensions.Time.Testing;

namespace Ferry.Tests.Upstream;

public sealed class SlotQueueTests
{
    private static readonly TimeSpan QueueTimeout = TimeSpan.FromSeconds(10);

    // Real time, only so that a slot never handed over fails the test instead of hanging it.
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(10);

    private readonly FakeTimeProvider _clock = new();
    private int _limit = 1;

    private SlotQueue Queue(int queueSize = 10, bool adaptive = false) =>
        new(new ConnectionLimitConfig(MaxConnections: 100, queueSize, QueueTimeout)
        {
            Adaptive = AdaptiveLimitConfig.Default with { Enabled = adaptive },
        }, () => _limit, _clock);

    private static void AssertCounts(SlotQueue queue, int inFlight, int queued)
    {
        Assert.Equal(inFlight, queue.InFlight);
        Assert.Equal(queued, queue.Queued);
    }

    private static ProxyException Refused(SlotQueue queue) =>
        Assert.Throws<ProxyException>(() => { _ = queue.AcquireAsync(CancellationToken.None); });

    [Fact]
    public async Task Release_HandsTheSlotToTheOldestWaiter_AndNobodyOvertakesTheQueue()
    {
        var queue = Queue();
        Assert.True(queue.AcquireAsync(CancellationToken.None).IsCompletedSuccessfully);
        AssertCounts(queue, inFlight: 1, queued: 0);
        Assert.False(queue.HasFreeSlot);
        var first = queue.AcquireAsync(CancellationToken.None).AsTask();
        var second = queue.AcquireAsync(CancellationToken.None).AsTask();
        AssertCounts(queue, inFlight: 1, queued: 2);

        // A free slot while requests wait (the limit rose, GrantWaiters not yet run): a newcomer still queues last.
        _limit = 2;
        Assert.True(queue.HasFreeSlot);
        var third = queue.AcquireAsync(CancellationToken.None).AsTask();
        AssertCounts(queue, inFlight: 1, queued: 3);
        _limit = 1;

        queue.Release();
        await first.WaitAsync(Bound);
        Assert.False(second.IsCompleted);
        AssertCounts(queue, inFlight: 1, queued: 2);

        queue.Release();
        await second.WaitAsync(Bound);
        Assert.False(third.IsCompleted);
        AssertCounts(queue, inFlight: 1, queued: 1);

        queue.Release();
        await third.WaitAsync(Bound);
        AssertCounts(queue, inFlight: 1, queued: 0);

        queue.Release();
        AssertCounts(queue, inFlight: 0, queued: 0);
        Assert.True(queue.HasFreeSlot);
    }

    [Fact]
    public void QueueFull_IsRefusedAtOnce()
    {
        var queue = Queue(queueSize: 2);
        _ = queue.AcquireAsync(CancellationToken.None);
        _ = queue.AcquireAsync(CancellationToken.None);
        _ = queue.AcquireAsync(CancellationToken.None);
        AssertCounts(queue, inFlight: 1, queued: 2);

        var refused = Refused(queue);

        Assert.Equal(ProxyError.ConnectionLimitReached, refused.Error);
        Assert.Equal("1 connections in use (limit 1) and 2 requests already queued", refused.Details);
        AssertCounts(queue, inFlight: 1, queued: 2);
    }

    [Fact]
    public void AdaptiveQueueFull_TakesNewcomersUntilItsOldestWaitedShedAfter()
    {
        var queue = Queue(queueSize: 1, adaptive: true);
        Assert.Equal(QueueTimeout / 2, queue.ShedAfter);
        _ = queue.AcquireAsync(CancellationToken.None);
        _ = queue.AcquireAsync(CancellationToken.None);
        _clock.Advance(queue.ShedAfter - TimeSpan.FromMilliseconds(1));
        _ = queue.AcquireAsync(CancellationToken.None);
        AssertCounts(queue, inFlight: 1, queued: 2);

        _clock.Advance(TimeSpan.FromMilliseconds(1));
        var refused = Refused(queue);

        Assert.Equal(ProxyError.ConnectionLimitReached, refused.Error);
        Assert.Equal("1 connections in use (limit 1) and 2 requests queued, the oldest for 5000 ms", refused.Details);
        AssertCounts(queue, inFlight: 1, queued: 2);
    }

    [Fact]
    public async Task QueueTimeout_RefusesTheWaiterAfterTheWaitBound()
    {
        var queue = Queue();
        _ = queue.AcquireAsync(CancellationToken.None);
        var waiting = queue.AcquireAsync(CancellationToken.None).AsTask();

        _clock.Advance(QueueTimeout - TimeSpan.FromMilliseconds(1));
        Assert.False(waiting.IsCompleted);
        AssertCounts(queue, inFlight: 1, queued: 1);
        _clock.Advance(TimeSpan.FromMilliseconds(1));

        var refused = await Assert.ThrowsAsync<ProxyException>(() => waiting.WaitAsync(Bound));
        Assert.Equal(ProxyError.ConnectionLimitReached, refused.Error);
        Assert.Equal("waited 10000 ms for one of 1 connections", refused.Details);
        AssertCounts(queue, inFlight: 1, queued: 0);
    }

    [Fact]
    public async Task AbortedWaiter_LeavesTheQueue()
    {
        var queue = Queue();
        _ = queue.AcquireAsync(CancellationToken.None);
        using var aborted = new CancellationTokenSource();
        var waiting = queue.AcquireAsync(aborted.Token).AsTask();
        var next = queue.AcquireAsync(CancellationToken.None).AsTask();

        await aborted.CancelAsync();

        var refused = await Assert.ThrowsAsync<ProxyException>(() => waiting.WaitAsync(Bound));
        Assert.Equal(ProxyError.ClientAborted, refused.Error);
        Assert.Equal("client went away while queued for a connection", refused.Details);
        AssertCounts(queue, inFlight: 1, queued: 1);
        queue.Release();
        await next.WaitAsync(Bound);
        AssertCounts(queue, inFlight: 1, queued: 0);
    }

    // The request is aborted, and before its wait ends a release hands it the slot: the slot goes on to the next
    // waiter instead of staying held by a request that is gone.
    [Fact]
    public async Task SlotGrantedAsTheWaiterIsAborted_IsHandedOn()
    {
        var queue = Queue();
        _ = queue.AcquireAsync(CancellationToken.None);
        using var aborted = new CancellationTokenSource();
        var held = new HeldContinuations();
        Task waiting;
        var previous = SynchronizationContext.Current;
        SynchronizationContext.SetSynchronizationContext(held);
        try
        {
            waiting = queue.AcquireAsync(aborted.Token).AsTask();
        }
        finally
        {
            SynchronizationContext.SetSynchronizationContext(previous);
        }
        var next = queue.AcquireAsync(CancellationToken.None).AsTask();

        await aborted.CancelAsync();
        queue.Release();
        // The slot changed hands to the aborted waiter, whose wait has not ended yet.
        AssertCounts(queue, inFlight: 1, queued: 1);
        held.RunAll();

        AssertCounts(queue, inFlight: 1, queued: 0);
        var refused = await Assert.ThrowsAsync<ProxyException>(() => waiting.WaitAsync(Bound));
        Assert.Equal(ProxyError.ClientAborted, refused.Error);
        await next.WaitAsync(Bound);
        queue.Release();
        AssertCounts(queue, inFlight: 0, queued: 0);
    }

    // A request served by an event loop resumes on that loop when it is handed a slot, whichever thread released it.
    [Fact]
    public async Task WaiterOfALoop_ResumesOnItsLoop()
    {
        using var loops = new EventLoops(1);
        var loop = loops.All[0];
        var queue = Queue();
        _ = queue.AcquireAsync(CancellationToken.None);
        Task<bool> resumedOnLoop = null!;
        await loop.InvokeAsync(() => resumedOnLoop = WaitThenSayWhere(queue, loop));

        queue.Release();

        Assert.True(await resumedOnLoop.WaitAsync(Bound));
        AssertCounts(queue, inFlight: 1, queued: 0);

        // As the forwarder waits: started on the loop, where no synchronization context is current.
        static async Task<bool> WaitThenSayWhere(SlotQueue queue, EventLoop loop)
        {
            await queue.AcquireAsync(CancellationToken.None, loop);
            return loop.IsOnLoop;
        }
    }

    // The grant to a loop's waiter is posted to the loop; a wait that ends before the post has run (the request was
    // aborted) still holds the slot, and hands it on rather than leaking it.
    [Fact]
    public async Task SlotGrantedToALoopWaiterAsItsWaitEnds_IsHandedOn()
    {
        using var loops = new EventLoops(1);
        var loop = loops.All[0];
        using var busy = new ManualResetEventSlim();
        var queue = Queue();
        _ = queue.AcquireAsync(CancellationToken.None);
        using var aborted = new CancellationTokenSource();
        var waiting = queue.AcquireAsync(aborted.Token, loop).AsTask();
        var next = queue.AcquireAsync(CancellationToken.None).AsTask();
        loop.Post(_ => busy.Wait(Bound), null);
        try
        {
            queue.Release();
            await aborted.CancelAsync();

            var refused = await Assert.ThrowsAsync<ProxyException>(() => waiting.WaitAsync(Bound));
            Assert.Equal(ProxyError.ClientAborted, refused.Error);
            await next.WaitAsync(Bound);
            AssertCounts(queue, inFlight: 1, queued: 0);
        }
        finally
        {
            busy.Set();
        }
        queue.Release();
        AssertCounts(queue, inFlight: 0, queued: 0);
    }

    [Fact]
    public async Task RaisedLimit_LetsTheOldestWaitersIn()
    {
        var queue = Queue();
        _ = queue.AcquireAsync(CancellationToken.None);
        var waiting = Enumerable.Range(0, 4).Select(_ => queue.AcquireAsync(CancellationToken.None).AsTask()).ToArray();
        AssertCounts(queue, inFlight: 1, queued: 4);

        _limit = 3;
        queue.GrantWaiters();

        await Task.WhenAll(waiting[0], waiting[1]).WaitAsync(Bound);
        Assert.False(waiting[2].IsCompleted);
        Assert.False(waiting[3].IsCompleted);
        AssertCounts(queue, inFlight: 3, queued: 2);
    }

    [Fact]
    public async Task LoweredLimit_FreesReleasedSlotsInsteadOfHandingThemOn()
    {
        _limit = 3;
        var queue = Queue();
        for (var i = 0; i < 3; i++)
        {
            _ = queue.AcquireAsync(CancellationToken.None);
        }
        var waiting = queue.AcquireAsync(CancellationToken.None).AsTask();
        _limit = 1;

        queue.Release();
        AssertCounts(queue, inFlight: 2, queued: 1);
        queue.Release();
        AssertCounts(queue, inFlight: 1, queued: 1);
        queue.Release();
        await waiting.WaitAsync(Bound);
        AssertCounts(queue, inFlight: 1, queued: 0);
    }

    [Fact]
    public async Task Shutdown_FailsEveryWaiter_AndRefusesNewcomersThatWouldQueue()
    {
        var queue = Queue();
        _ = queue.AcquireAsync(CancellationToken.None);
        var waiting = Enumerable.Range(0, 3).Select(_ => queue.AcquireAsync(CancellationToken.None).AsTask()).ToArray();

        queue.Shutdown();

        foreach (var waiter in waiting)
        {
            var failed = await Assert.ThrowsAsync<ProxyException>(() => waiter.WaitAsync(Bound));
            Assert.Equal(ProxyError.ConnectionLimitReached, failed.Error);
            Assert.Equal("the destination's pool was shut down while the request waited", failed.Details);
        }
        AssertCounts(queue, inFlight: 1, queued: 0);
        var refused = Refused(queue);
        Assert.Equal(ProxyError.ConnectionLimitReached, refused.Error);
        Assert.Equal("the destination's pool was shut down", refused.Details);
        AssertCounts(queue, inFlight: 1, queued: 0);
    }

    // Keeps the continuations posted to it until RunAll: the queue's wait then ends only when the test says so.
    private sealed class HeldContinuations : SynchronizationContext
    {
        private readonly Queue<(SendOrPostCallback Callback, object? State)> _posted = new();

        public override void Post(SendOrPostCallback d, object? state)
        {
            lock (_posted)
            {
                _posted.Enqueue((d, state));
            }
        }

        public void RunAll()
        {
            while (true)
            {
                (SendOrPostCallback Callback, object? State) next;
                lock (_posted)
                {
                    if (!_posted.TryDequeue(out next))
                    {
                        return;
                    }
                }
                next.Callback(next.State);
            }
        }
    }
}
