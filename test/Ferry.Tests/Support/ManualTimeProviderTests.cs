namespace Ferry.Tests.Support;

// What the functional tests rely on when they drive a live server with ManualTimeProvider.
public sealed class ManualTimeProviderTests
{
    [Fact]
    public void Advance_RunsTheTimersDueOnTheCallingThread_BeforeItReturns()
    {
        var time = new ManualTimeProvider();
        int? firedOn = null;
        var later = false;
        using var due = time.CreateTimer(_ => firedOn = Environment.CurrentManagedThreadId, null, TimeSpan.FromSeconds(1), Timeout.InfiniteTimeSpan);
        using var notDue = time.CreateTimer(_ => later = true, null, TimeSpan.FromSeconds(2), Timeout.InfiniteTimeSpan);

        time.Advance(TimeSpan.FromMilliseconds(999));
        Assert.Null(firedOn);

        time.Advance(TimeSpan.FromMilliseconds(1));
        Assert.Equal(Environment.CurrentManagedThreadId, firedOn);
        Assert.False(later);
        Assert.Equal(1, time.ScheduledTimers);
    }

    [Fact]
    public void PeriodicTimer_FiresOncePerAdvance_ThenAPeriodAfterIt()
    {
        var time = new ManualTimeProvider();
        var fired = 0;
        using var timer = time.CreateTimer(_ => fired++, null, TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(1));

        time.Advance(TimeSpan.FromSeconds(10));
        Assert.Equal(1, fired);

        time.Advance(TimeSpan.FromMilliseconds(999));
        Assert.Equal(1, fired);
        time.Advance(TimeSpan.FromMilliseconds(1));
        Assert.Equal(2, fired);
    }

    [Fact]
    public void TimerDueNow_FiresOnTheNextAdvance_NotWhenCreated()
    {
        var time = new ManualTimeProvider();
        var fired = false;
        using var timer = time.CreateTimer(_ => fired = true, null, TimeSpan.Zero, Timeout.InfiniteTimeSpan);
        Assert.False(fired);

        time.Advance(TimeSpan.Zero);
        Assert.True(fired);
    }

    [Fact]
    public async Task WaitForTimers_CompletesOnceTheTimersAreArmed()
    {
        var time = new ManualTimeProvider();
        using var first = time.CreateTimer(_ => { }, null, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
        var armed = time.WaitForTimersAsync(1);
        Assert.False(armed.IsCompleted);

        first.Change(TimeSpan.FromSeconds(1), Timeout.InfiniteTimeSpan);
        await armed.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(1, time.ScheduledTimers);

        first.Dispose();
        Assert.Equal(0, time.ScheduledTimers);
    }

    [Fact]
    public void Timestamps_FollowTheClock()
    {
        var time = new ManualTimeProvider();
        var start = time.GetTimestamp();
        var now = time.GetUtcNow();

        time.Advance(TimeSpan.FromSeconds(90));

        Assert.Equal(TimeSpan.FromSeconds(90), time.GetElapsedTime(start));
        Assert.Equal(now + TimeSpan.FromSeconds(90), time.GetUtcNow());
    }
}
