using Ferry.Loops;

namespace Ferry.Tests.Loops;

// The loop itself, with an eventfd standing in for a socket: what runs where, and that an unregistered descriptor's
// events reach nobody.
public sealed class EventLoopTests : IDisposable
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(10);

    private readonly EventLoops _loops = new(2);

    public void Dispose() => _loops.Dispose();

    private sealed class Recorder : ILoopHandler
    {
        private readonly Lock _lock = new();
        private readonly List<(uint Events, bool OnLoop)> _calls = [];

        public EventLoop? Loop { get; init; }

        public int Count
        {
            get
            {
                lock (_lock)
                {
                    return _calls.Count;
                }
            }
        }

        public (uint Events, bool OnLoop) Last
        {
            get
            {
                lock (_lock)
                {
                    return _calls[^1];
                }
            }
        }

        public void OnEvents(uint events)
        {
            lock (_lock)
            {
                _calls.Add((events, Loop!.IsOnLoop));
            }
        }
    }

    // Nothing else happens on the loop: its epoll_wait must end for the timer, which then runs on the loop's thread,
    // not before its deadline. A cancelled one never runs.
    [Fact]
    public async Task ATimerArmedOnAnIdleLoop_WakesIt_AndRunsOnItsThread_NotBeforeItsDeadline()
    {
        var loop = _loops.All[1];
        var fired = new TaskCompletionSource<(long At, bool OnLoop)>(TaskCreationOptions.RunContinuationsAsynchronously);
        var timer = new LoopTimer(_ => fired.TrySetResult((System.Diagnostics.Stopwatch.GetTimestamp(), loop.IsOnLoop)), null);
        var cancelled = new LoopTimer(_ => fired.TrySetException(new InvalidOperationException("a cancelled timer ran")), null);
        long deadline = 0;
        await loop.InvokeAsync(() =>
        {
            deadline = System.Diagnostics.Stopwatch.GetTimestamp() + System.Diagnostics.Stopwatch.Frequency / 20;
            loop.ArmTimer(cancelled, deadline - System.Diagnostics.Stopwatch.Frequency / 100);
            loop.ArmTimer(timer, deadline);
            loop.CancelTimer(cancelled);
        }).WaitAsync(Bound);

        var (at, onLoop) = await fired.Task.WaitAsync(Bound);

        Assert.True(onLoop);
        Assert.True(at >= deadline, $"ran {(deadline - at) * 1000.0 / System.Diagnostics.Stopwatch.Frequency} ms early");
        Assert.Equal(1, loop.TimersFired);
    }

    [Fact]
    public async Task PostedWork_RunsOnTheLoopThread_InOrder()
    {
        var loop = _loops.All[0];
        Assert.False(loop.IsOnLoop);
        var seen = new List<(int Value, bool OnLoop)>();
        var done = new TaskCompletionSource();
        for (var i = 0; i < 100; i++)
        {
            loop.Post(s => seen.Add(((int)s!, loop.IsOnLoop)), i);
        }
        loop.Post(_ => done.SetResult(), null);
        await done.Task.WaitAsync(Bound);
        Assert.Equal(Enumerable.Range(0, 100), seen.Select(s => s.Value));
        Assert.All(seen, s => Assert.True(s.OnLoop));
    }

    // A relay awaiting Yield lets what the loop already queued (a connection's deferred send) run first, and goes on on
    // the loop; the default awaitable (no loop) does not wait.
    [Fact]
    public async Task Yield_ResumesOnTheLoop_AfterTheWorkQueuedBeforeIt()
    {
        var loop = _loops.All[0];
        var order = new List<string>();
        var done = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        loop.Post(_ => _ = Relay(), null);
        Assert.True(await done.Task.WaitAsync(Bound));
        Assert.Equal(["relay wrote", "queued send", "relay goes on"], order);
        Assert.True(default(EventLoop.LoopYield).IsCompleted);

        async Task Relay()
        {
            order.Add("relay wrote");
            loop.Post(_ => order.Add("queued send"), null);
            await loop.Yield();
            order.Add("relay goes on");
            done.SetResult(loop.IsOnLoop);
        }
    }

    [Fact]
    public async Task Schedule_RunsInlineOnTheLoop_AndPostsFromElsewhere()
    {
        var loop = _loops.All[1];
        var order = new List<string>();
        await loop.InvokeAsync(() =>
        {
            loop.Schedule(_ => order.Add("scheduled"), null);
            order.Add("after");
        }).WaitAsync(Bound);
        Assert.Equal(["scheduled", "after"], order);

        var ran = new TaskCompletionSource<bool>();
        loop.Schedule(_ => ran.SetResult(loop.IsOnLoop), null);
        Assert.True(await ran.Task.WaitAsync(Bound));
    }

    [Fact]
    public async Task AFailingWorkItem_DoesNotStopTheLoop()
    {
        var loop = _loops.All[0];
        loop.Post(_ => throw new InvalidOperationException("test"), null);
        await loop.InvokeAsync(() => { }).WaitAsync(Bound);
    }

    [Fact]
    public async Task ARegisteredDescriptor_IsReportedOnTheLoop_UntilUnregistered()
    {
        var loop = _loops.All[0];
        var fd = Native.EventFd();
        try
        {
            var handler = new Recorder { Loop = loop };
            var before = loop.Registered;
            long token = 0;
            await loop.InvokeAsync(() => token = loop.Register(fd, Native.EpollIn | Native.EpollEt, handler)).WaitAsync(Bound);
            Assert.Equal(before + 1, loop.Registered);

            Native.Signal(fd, new byte[8]);
            await WaitUntil(() => handler.Count == 1);
            Assert.True((handler.Last.Events & Native.EpollIn) != 0);
            Assert.True(handler.Last.OnLoop);

            await loop.InvokeAsync(() => loop.Unregister(fd, token)).WaitAsync(Bound);
            Assert.Equal(before, loop.Registered);
            Native.Drain(fd, new byte[8]);
            Native.Signal(fd, new byte[8]);
            // A round trip through the loop after the signal: had the event been delivered, it would have run first.
            await loop.InvokeAsync(() => { }).WaitAsync(Bound);
            Assert.Equal(1, handler.Count);
        }
        finally
        {
            Native.Close(fd);
        }
    }

    [Fact]
    public void RegisteringOffTheLoop_IsRefused()
    {
        var fd = Native.EventFd();
        try
        {
            Assert.Throws<InvalidOperationException>(() => _loops.All[0].Register(fd, Native.EpollIn, new Recorder()));
        }
        finally
        {
            Native.Close(fd);
        }
    }

    [Fact]
    public void LoopCountZero_MeansOnePerProcessor()
    {
        using var loops = new EventLoops(0);
        Assert.Equal(Environment.ProcessorCount, loops.All.Count);
        Assert.Equal(Enumerable.Range(0, loops.All.Count), loops.All.Select(l => l.Index));
    }

    private static async Task WaitUntil(Func<bool> condition)
    {
        var deadline = DateTime.UtcNow + Bound;
        while (!condition())
        {
            Assert.True(DateTime.UtcNow < deadline, "condition not met in time");
            await Task.Delay(5);
        }
    }
}
