using System.Collections.Concurrent;
using Ferry.Loops;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Time.Testing;

namespace Ferry.Tests.Loops;

// The stall rule on a fake clock (a batch longer than the threshold is reported once, then its exact end), and the
// watchdog on real loops: one blocked on purpose is reported, one doing short work is not.
public sealed class LoopWatchdogTests
{
    private static readonly TimeSpan Threshold = TimeSpan.FromMilliseconds(10);
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(10);

    private readonly FakeTimeProvider _time = new();
    private readonly Lines _log = new();
    private readonly Probes _probes = new();

    // The process's garbage collection pauses and the loop thread's scheduling as the watchdog sees them: the test's.
    private sealed class Probes : StallProbes
    {
        public TimeSpan Gc { get; set; }

        public (TimeSpan Running, TimeSpan Waiting)? Thread { get; set; }

        public override TimeSpan GcPauses() => Gc;

        public override (TimeSpan Running, TimeSpan Waiting)? Scheduling(int threadId) => Thread;
    }

    private sealed class Lines : ILogger
    {
        public ConcurrentQueue<string> All { get; } = new();

        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
            All.Enqueue($"{logLevel}: {formatter(state, exception)}");
    }

    private static TimeSpan Ms(double milliseconds) => TimeSpan.FromMilliseconds(milliseconds);

    private LoopWatchdog Watchdog(params LoopActivity[] loops) => new(loops, Threshold, _time, _log, _probes);

    [Fact]
    public void ABatchLongerThanTheThreshold_IsReportedOnce_ThenItsEndWithTheExactDuration()
    {
        var quiet = new LoopActivity(0, _time);
        var busy = new LoopActivity(1, _time);
        var watchdog = Watchdog(quiet, busy);

        busy.Begin();
        _time.Advance(Ms(6));
        watchdog.Check();
        Assert.Empty(_log.All);

        _time.Advance(Ms(5));
        watchdog.Check();
        Assert.Equal(["Warning: Event loop 1 stalled: one batch of work has run for 11 ms (threshold 10 ms); no other connection of the loop is served meanwhile"], _log.All);
        Assert.Equal(1, busy.Stalls);
        Assert.Equal(Ms(11), busy.StalledNow);

        // Still the same batch: counted and logged once.
        _time.Advance(Ms(5));
        watchdog.Check();
        Assert.Single(_log.All);
        Assert.Equal(1, busy.Stalls);

        // It ends between two checks: the duration is the loop's own end, not the next check's time.
        _time.Advance(Ms(37));
        busy.End();
        _time.Advance(Ms(4));
        watchdog.Check();
        Assert.Equal("Warning: Event loop 1 stall ended after 53 ms, up to 0 ms of it in garbage collection pauses (stalls on this loop: 1)", _log.All.Last());
        Assert.Equal(Ms(53), busy.Stalled);
        Assert.Equal(Ms(53), busy.Longest);
        Assert.Null(busy.StalledNow);

        watchdog.Check();
        Assert.Equal(2, _log.All.Count);
        Assert.Equal(0, quiet.Stalls);
    }

    [Fact]
    public void BatchesUpToTheThreshold_AndTheIdleTimeBetweenThem_AreNoStall()
    {
        var loop = new LoopActivity(0, _time);
        var watchdog = Watchdog(loop);
        for (var i = 0; i < 10; i++)
        {
            loop.Begin();
            _time.Advance(Threshold);
            watchdog.Check();
            loop.End();
            _time.Advance(TimeSpan.FromSeconds(1));
            watchdog.Check();
        }
        Assert.Empty(_log.All);
        Assert.Equal(0, loop.Stalls);
        Assert.Equal(TimeSpan.Zero, loop.Longest);
    }

    [Fact]
    public void EachStall_IsCounted_AndTheLongestKept()
    {
        var loop = new LoopActivity(0, _time);
        var watchdog = Watchdog(loop);
        foreach (var length in new[] { 30, 80, 20 })
        {
            loop.Begin();
            _time.Advance(Ms(length));
            watchdog.Check();
            loop.End();
            // The next batch starts before the watchdog looks again and is short: only the end of the stall is seen.
            loop.Begin();
            watchdog.Check();
            loop.End();
        }
        Assert.Equal(3, loop.Stalls);
        Assert.Equal(Ms(130), loop.Stalled);
        Assert.Equal(Ms(80), loop.Longest);
        Assert.Equal(6, _log.All.Count);
    }

    [Fact]
    public void GarbageCollectionPausesDuringAStall_AreToldApart()
    {
        var loop = new LoopActivity(0, _time);
        var watchdog = Watchdog(loop);
        // A pause well before the batch is not its own.
        _probes.Gc += Ms(100);
        watchdog.Check();
        _time.Advance(Ms(5));
        watchdog.Check();

        loop.Begin();
        _time.Advance(Ms(2));
        watchdog.Check();
        _probes.Gc += Ms(30);
        _time.Advance(Ms(33));
        watchdog.Check();
        loop.End();
        watchdog.Check();

        Assert.Equal("Warning: Event loop 0 stall ended after 35 ms, up to 30 ms of it in garbage collection pauses (stalls on this loop: 1)", _log.All.Last());
    }

    [Fact]
    public void WhereTheLoopThreadWasWhileItStalled_IsSplitFromTheChecksWithinTheStall()
    {
        var loop = new LoopActivity(0, _time);
        var watchdog = Watchdog(loop);
        _probes.Thread = (Ms(500), Ms(70));
        loop.Begin();
        _time.Advance(Ms(12));
        watchdog.Check();
        // 20 ms between the first and the last check that saw the stall: 3 ms on a processor, 5 ms waiting for one.
        _time.Advance(Ms(20));
        _probes.Thread = (Ms(503), Ms(75));
        watchdog.Check();
        _time.Advance(Ms(3));
        loop.End();
        _probes.Thread = (Ms(504), Ms(75));
        _time.Advance(Ms(2));
        watchdog.Check();

        Assert.Equal("Warning: Event loop 0 stall ended after 35 ms, up to 0 ms of it in garbage collection pauses; over 20 ms of it the loop's thread ran 3 ms, waited 5 ms for a processor and was blocked 12 ms (stalls on this loop: 1)", _log.All.Last());

        // The kernel's account lags by the interval in progress: what exceeds the time watched is cut to it.
        _probes.Thread = (Ms(600), Ms(100));
        loop.Begin();
        _time.Advance(Ms(12));
        watchdog.Check();
        _time.Advance(Ms(20));
        _probes.Thread = (Ms(601), Ms(130));
        watchdog.Check();
        loop.End();
        watchdog.Check();
        Assert.Equal("Warning: Event loop 0 stall ended after 32 ms, up to 0 ms of it in garbage collection pauses; over 20 ms of it the loop's thread ran 1 ms, waited 19 ms for a processor and was blocked 0 ms (stalls on this loop: 2)", _log.All.Last());
    }

    [Fact]
    public void TheThreadChecksOnItsOwn_AndStopsWhenDisposed()
    {
        var loop = new LoopActivity(2, _time);
        var watchdog = Watchdog(loop);
        watchdog.Start();
        loop.Begin();
        _time.Advance(Ms(15));
        SpinUntil(() => loop.Stalls == 1);
        watchdog.Dispose();
        Assert.StartsWith("Warning: Event loop 2 stalled", _log.All.Single());
    }

    [Fact]
    public async Task ARealLoopBlockedOnPurpose_IsReported()
    {
        using var loops = new EventLoops(2);
        loops.Watch(Threshold, _log);
        var blocked = loops.All[1].Activity;

        // A saturated machine can keep the watchdog's own thread off the processors for the whole 50 ms, and a stall
        // that ends unseen is never reported: it is tried again then.
        for (var attempt = 0; attempt < 5 && blocked.Stalls == 0; attempt++)
        {
            await loops.All[1].InvokeAsync(() => Thread.Sleep(50)).WaitAsync(Bound);
            await Task.Delay(100);
        }

        SpinUntil(() => blocked.Longest > TimeSpan.Zero);
        Assert.Equal(1, blocked.Stalls);
        Assert.True(blocked.Longest >= Ms(50), $"stall timed at {blocked.Longest}");
        Assert.Equal(0, loops.All[0].Activity.Stalls);
        Assert.Contains(_log.All, l => l.StartsWith("Warning: Event loop 1 stalled: one batch of work has run for ", StringComparison.Ordinal));
        Assert.Contains(_log.All, l => l.StartsWith("Warning: Event loop 1 stall ended after ", StringComparison.Ordinal));
    }

    [Fact]
    public void TheKernelsAccountOfALoopThread_IsRead()
    {
        var activity = new LoopActivity(0, TimeProvider.System);
        Assert.Null(StallProbes.System.Scheduling(activity.ThreadId));
        activity.OnLoopThread();
        Assert.NotEqual(0, activity.ThreadId);
        var scheduling = StallProbes.System.Scheduling(activity.ThreadId);
        Assert.NotNull(scheduling);
        Assert.True(scheduling.Value.Running > TimeSpan.Zero, $"{scheduling}");
    }

    [Fact]
    public async Task ARealLoopDoingShortWork_IsNotReported()
    {
        // A threshold far above the work, so that a busy machine preempting the loop mid-batch is no stall; the work
        // lasts several thresholds in all, so that time counted across batches, or idle time, would be one.
        var threshold = TimeSpan.FromMilliseconds(200);
        using var loops = new EventLoops(1);
        loops.Watch(threshold, _log);
        var started = DateTime.UtcNow;
        while (DateTime.UtcNow - started < 4 * threshold)
        {
            await loops.All[0].InvokeAsync(() => Thread.Sleep(1)).WaitAsync(Bound);
            await Task.Delay(2);
        }
        Assert.Equal(0, loops.All[0].Activity.Stalls);
        Assert.Empty(_log.All);
    }

    private static void SpinUntil(Func<bool> condition) =>
        Assert.True(SpinWait.SpinUntil(condition, Bound), "condition not met in time");
}
