namespace Ferry.Loops;

/// <summary>
/// What one loop is doing, published for <see cref="LoopWatchdog"/>: the loop stamps the start of each batch of work
/// (the events and posted work between two epoll_waits) and clears it at the end. That is one clock read and two
/// plain stores per batch on the loop; everything else here is the watchdog's.
/// </summary>
internal sealed class LoopActivity(int index, TimeProvider time)
{
    // The timestamp at which the current batch began; 0 while the loop waits in epoll_wait.
    private long _busySince;
    // The batch the watchdog reported as a stall (its start): the loop stamps that batch's end, so that the final
    // duration is exact rather than rounded up to the watchdog's period, without reading the clock on other batches.
    private long _reported;
    private long _endedAt;

    // The watchdog's own: the batch it saw last and the process's garbage collection pauses until the check before
    // (a batch first seen now began after that check), the start of the stall it is following (0: none), and what
    // it counted.
    private long _seen;
    private TimeSpan _gcBefore;
    private long _stallStart;
    private long _stalls;
    private long _stalledTicks;
    private long _longestTicks;

    public int Index { get; } = index;

    /// <summary>Stalls seen, counted when a batch passes the threshold (a loop stuck for good is counted).</summary>
    public long Stalls => Volatile.Read(ref _stalls);

    /// <summary>Time spent in stalls that have ended.</summary>
    public TimeSpan Stalled => TimeSpan.FromTicks(Volatile.Read(ref _stalledTicks));

    public TimeSpan Longest => TimeSpan.FromTicks(Volatile.Read(ref _longestTicks));

    /// <summary>How long the stall in progress has lasted so far; null when the loop is not stalled.</summary>
    public TimeSpan? StalledNow =>
        Volatile.Read(ref _stallStart) is var start and not 0 && Volatile.Read(ref _busySince) == start ? time.GetElapsedTime(start) : null;

    /// <summary>Loop thread: a batch of work starts.</summary>
    public void Begin() => Volatile.Write(ref _busySince, time.GetTimestamp());

    /// <summary>Loop thread: the batch ends; the loop goes back to epoll_wait.</summary>
    public void End()
    {
        if (Volatile.Read(ref _reported) == _busySince)
        {
            Volatile.Write(ref _endedAt, time.GetTimestamp());
        }
        Volatile.Write(ref _busySince, 0);
    }

    /// <summary>
    /// Watchdog thread: follows this loop's stalls. Returns what happened since the previous call: a stall that ended
    /// (with its duration and how much of it the garbage collector paused the process) and a batch that has just
    /// passed <paramref name="threshold"/> (with how long it has run). <paramref name="gcPaused"/>: the process's
    /// pauses so far, <paramref name="gcPausedBefore"/>: at the previous call.
    /// </summary>
    internal (TimeSpan? Ended, TimeSpan InGc, TimeSpan? Started) Check(long now, TimeSpan threshold, TimeSpan gcPaused, TimeSpan gcPausedBefore)
    {
        TimeSpan? ended = null;
        var inGc = TimeSpan.Zero;
        TimeSpan? started = null;
        var since = Volatile.Read(ref _busySince);
        var stall = _stallStart;
        if (stall != 0 && since != stall)
        {
            // The end stamp is missing when the batch ended between this watchdog's reading of its start and its
            // asking for the stamp; the end is then known to this check's period only.
            var endedAt = Volatile.Read(ref _endedAt);
            var duration = time.GetElapsedTime(stall, endedAt > stall ? endedAt : now);
            // A pause up to one check before the stall counts too: the watchdog cannot tell, and says "up to".
            inGc = gcPaused - _gcBefore < duration ? gcPaused - _gcBefore : duration;
            Volatile.Write(ref _stalledTicks, _stalledTicks + duration.Ticks);
            if (duration.Ticks > _longestTicks)
            {
                Volatile.Write(ref _longestTicks, duration.Ticks);
            }
            Volatile.Write(ref _reported, 0);
            Volatile.Write(ref _stallStart, 0);
            ended = duration;
        }
        if (since != _seen)
        {
            _seen = since;
            _gcBefore = gcPausedBefore;
        }
        if (since != 0 && since != stall && time.GetElapsedTime(since, now) is var busy && busy > threshold)
        {
            Volatile.Write(ref _reported, since);
            Volatile.Write(ref _stallStart, since);
            Volatile.Write(ref _stalls, _stalls + 1);
            started = busy;
        }
        return (ended, inGc, started);
    }
}

/// <summary>
/// One thread for all loops that reports a loop busy in one batch of work for longer than a threshold: whatever runs
/// there blocks every other connection of the loop (docs/architecture.md, "Event loops"). A stall is logged when it
/// passes the threshold and again, with its final duration, when it ends; it is counted in <see cref="LoopActivity"/>
/// for the metrics and /status.
/// </summary>
internal sealed class LoopWatchdog : IDisposable
{
    private readonly IReadOnlyList<LoopActivity> _loops;
    private readonly TimeSpan _threshold;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly TimeSpan _period;
    private readonly Func<TimeSpan> _gcPauses;
    private readonly ManualResetEventSlim _stop = new();
    private TimeSpan _gcBefore;
    private Thread? _thread;

    /// <param name="gcPauses">The process's garbage collection pauses so far (a test's own figures).</param>
    public LoopWatchdog(IReadOnlyList<LoopActivity> loops, TimeSpan threshold, TimeProvider time, ILogger logger, Func<TimeSpan>? gcPauses = null)
    {
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(threshold, TimeSpan.Zero);
        _loops = loops;
        _threshold = threshold;
        _time = time;
        _logger = logger;
        _gcPauses = gcPauses ?? GC.GetTotalPauseDuration;
        _gcBefore = _gcPauses();
        // A stall is seen between one and one and a half thresholds into it; 1 ms is about what a sleep can promise.
        _period = TimeSpan.FromTicks(Math.Max(threshold.Ticks / 2, TimeSpan.TicksPerMillisecond));
    }

    public TimeSpan Threshold => _threshold;

    /// <summary>
    /// Starts the thread. Its own thread rather than a timer: a timer's callback waits in the thread pool's queue, and
    /// a stall that ends while the check waits there goes unseen.
    /// </summary>
    public void Start()
    {
        _thread = new Thread(Run) { IsBackground = true, Name = "ferry-loop-watchdog" };
        _thread.Start();
    }

    private void Run()
    {
        while (!_stop.Wait(_period))
        {
            Check();
        }
    }

    /// <summary>Looks at every loop once: what the thread does each period.</summary>
    public void Check()
    {
        var now = _time.GetTimestamp();
        var gc = _gcPauses();
        foreach (var loop in _loops)
        {
            var (ended, inGc, started) = loop.Check(now, _threshold, gc, _gcBefore);
            if (ended is { } duration)
            {
                // The pauses tell a stall that code on the loop caused from one the garbage collector imposed on every thread.
                _logger.LogWarning("Event loop {Loop} stall ended after {Milliseconds} ms, up to {GcMilliseconds} ms of it in garbage collection pauses: nothing else on the loop ran meanwhile (stalls on this loop: {Stalls})",
                    loop.Index, Milliseconds(duration), Milliseconds(inGc), loop.Stalls);
            }
            if (started is { } busy)
            {
                _logger.LogWarning("Event loop {Loop} stalled: one batch of work has run for {Milliseconds} ms (threshold {Threshold} ms); something blocks on the loop",
                    loop.Index, Milliseconds(busy), Milliseconds(_threshold));
            }
        }
        _gcBefore = gc;
    }

    private static double Milliseconds(TimeSpan duration) => Math.Round(duration.TotalMilliseconds, 1);

    public void Dispose()
    {
        _stop.Set();
        _thread?.Join();
        _stop.Dispose();
    }
}
