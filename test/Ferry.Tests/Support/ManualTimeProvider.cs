namespace Ferry.Tests.Support;

// The functional tests use this instead of FakeTimeProvider, which serves the unit tests: a test that drives a live
// server must wait until the server has armed its timer before advancing (WaitForTimersAsync, ScheduledTimers), which
// FakeTimeProvider cannot tell. Advance also fires a periodic timer once, where FakeTimeProvider fires it once per
// period passed, and a timer due now fires on the next Advance, where FakeTimeProvider fires it inside CreateTimer.
// The file is linked into Ferry.FunctionalTests.
/// <summary>A TimeProvider whose clock moves only when a test calls <see cref="Advance"/>.</summary>
internal sealed class ManualTimeProvider : TimeProvider
{
    private readonly Lock _lock = new();
    private readonly List<ManualTimer> _timers = [];
    private readonly List<TaskCompletionSource> _timerWaiters = [];
    private DateTimeOffset _now = new(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);

    // Timestamps follow the manual clock too, so elapsed-time arithmetic (pool expiry) never sees real time.
    public override long TimestampFrequency => TimeSpan.TicksPerSecond;

    public override long GetTimestamp() => GetUtcNow().UtcTicks;

    public override DateTimeOffset GetUtcNow()
    {
        lock (_lock)
        {
            return _now;
        }
    }

    public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
    {
        var timer = new ManualTimer(this, callback, state);
        timer.Change(dueTime, period);
        return timer;
    }

    /// <summary>Timers that will fire if time advances far enough.</summary>
    public int ScheduledTimers
    {
        get
        {
            lock (_lock)
            {
                return _timers.Count;
            }
        }
    }

    /// <summary>Completes once at least <paramref name="count"/> timers are scheduled (bounded by the caller's WaitAsync).</summary>
    public async Task WaitForTimersAsync(int count)
    {
        while (true)
        {
            Task next;
            lock (_lock)
            {
                if (_timers.Count >= count)
                {
                    return;
                }
                var waiter = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                _timerWaiters.Add(waiter);
                next = waiter.Task;
            }
            await next;
        }
    }

    /// <summary>Moves the clock and runs, on the calling thread, every timer that falls due.</summary>
    public void Advance(TimeSpan by)
    {
        List<ManualTimer> due;
        lock (_lock)
        {
            _now += by;
            due = _timers.Where(t => t.DueAt <= _now).ToList();
            foreach (var timer in due)
            {
                _timers.Remove(timer);
            }
        }
        foreach (var timer in due)
        {
            timer.Fire();
        }
    }

    private void Schedule(ManualTimer timer, bool scheduled)
    {
        List<TaskCompletionSource> waiters = [];
        lock (_lock)
        {
            _timers.Remove(timer);
            if (scheduled)
            {
                _timers.Add(timer);
                waiters.AddRange(_timerWaiters);
                _timerWaiters.Clear();
            }
        }
        foreach (var waiter in waiters)
        {
            waiter.TrySetResult();
        }
    }

    private sealed class ManualTimer(ManualTimeProvider owner, TimerCallback callback, object? state) : ITimer
    {
        private TimeSpan _period = Timeout.InfiniteTimeSpan;

        public DateTimeOffset DueAt { get; private set; }

        public bool Change(TimeSpan dueTime, TimeSpan period)
        {
            _period = period;
            bool scheduled = dueTime != Timeout.InfiniteTimeSpan;
            if (scheduled)
            {
                DueAt = owner.GetUtcNow() + dueTime;
            }
            owner.Schedule(this, scheduled);
            return true;
        }

        public void Fire()
        {
            callback(state);
            if (_period != Timeout.InfiniteTimeSpan && _period > TimeSpan.Zero)
            {
                Change(_period, _period);
            }
        }

        public void Dispose() => owner.Schedule(this, scheduled: false);

        public ValueTask DisposeAsync()
        {
            Dispose();
            return ValueTask.CompletedTask;
        }
    }
}
