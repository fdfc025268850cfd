using System.Runtime.InteropServices;

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
    private int _threadId;

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

    /// <summary>The loop thread's id in the kernel (for its scheduler statistics); 0 until the loop runs.</summary>
    public int ThreadId => Volatile.Read(ref _threadId);

    /// <summary>Watchdog thread: whether the last check left a stall in progress.</summary>
    internal bool Stalling => _stallStart != 0;

    /// <summary>Stalls seen, counted when a batch passes the threshold (a loop stuck for good is counted).</summary>
    public long Stalls => Volatile.Read(ref _stalls);

    /// <summary>Time spent in stalls that have ended.</summary>
    public TimeSpan Stalled => TimeSpan.FromTicks(Volatile.Read(ref _stalledTicks));

    public TimeSpan Longest => TimeSpan.FromTicks(Volatile.Read(ref _longestTicks));

    /// <summary>How long the stall in progress has lasted so far; null when the loop is not stalled.</summary>
    public TimeSpan? StalledNow =>
        Volatile.Read(ref _stallStart) is var start and not 0 && Volatile.Read(ref _busySince) == start ? time.GetElapsedTime(start) : null;

    /// <summary>Loop thread, once when it starts.</summary>
    public void OnLoopThread() => Volatile.Write(ref _threadId, GetTid());

    [DllImport("libc", EntryPoint = "gettid")]
    private static extern int GetTid();

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
/// What the watchdog reads of the process and of a loop's thread, beyond the loop's own stamps; a test gives its own.
/// </summary>
internal class StallProbes
{
    public static StallProbes System { get; } = new();

    /// <summary>The process's garbage collection pauses so far.</summary>
    public virtual TimeSpan GcPauses() => GC.GetTotalPauseDuration();

    /// <summary>
    /// The kernel's account of a thread (/proc/self/task/ID/schedstat): time on a processor, and time runnable but
    /// waiting for one. Null where the file is missing or unreadable.
    /// </summary>
    public virtual (TimeSpan Running, TimeSpan Waiting)? Scheduling(int threadId)
    {
        if (threadId == 0)
        {
            return null;
        }
        try
        {
            var fields = File.ReadAllText($"/proc/self/task/{threadId}/schedstat").Split(' ');
            return fields.Length >= 2 && long.TryParse(fields[0], out var running) && long.TryParse(fields[1], out var waiting)
                ? (TimeSpan.FromTicks(running / 100), TimeSpan.FromTicks(waiting / 100))
                : null;
        }
        catch (IOException)
        {
            return null;
        }
        catch (UnauthorizedAccessException)
        {
            return null;
        }
    }
}

/// <summary>
/// One thread for all loops that reports a loop busy in one batch of work for longer than a threshold: whatever runs
/// there holds up every other connection of the loop (docs/architecture.md, "What may run on a loop"). A stall is
/// logged when it passes the threshold and again, with its final duration, when it ends; it is counted in
/// <see cref="LoopActivity"/> for the metrics and /status.
/// </summary>
internal sealed class LoopWatchdog : IDisposable
{
    private readonly IReadOnlyList<LoopActivity> _loops;
    private readonly TimeSpan _threshold;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly TimeSpan _period;
    private readonly StallProbes _probes;
    // Per loop, while it stalls: its thread's scheduling when the stall was seen first and when it was seen last.
    private readonly Sample?[] _first;
    private readonly Sample?[] _last;
    private volatile bool _stopping;
    private TimeSpan _gcBefore;
    private Thread? _thread;

    private readonly record struct Sample(long Timestamp, TimeSpan Running, TimeSpan Waiting);

    public LoopWatchdog(IReadOnlyList<LoopActivity> loops, TimeSpan threshold, TimeProvider time, ILogger logger, StallProbes? probes = null)
    {
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(threshold, TimeSpan.Zero);
        _loops = loops;
        _threshold = threshold;
        _time = time;
        _logger = logger;
        _probes = probes ?? StallProbes.System;
        _first = new Sample?[loops.Count];
        _last = new Sample?[loops.Count];
        _gcBefore = _probes.GcPauses();
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
        try
        {
            while (!_stopping)
            {
                // A plain sleep: waiting on an event instead (to be woken at once on dispose) cost the thread more
                // per wake-up, measured; Dispose interrupts the sleep.
                Thread.Sleep(_period);
                Check();
            }
        }
        catch (ThreadInterruptedException)
        {
            // Disposed.
        }
    }

    /// <summary>Looks at every loop once: what the thread does each period.</summary>
    public void Check()
    {
        var now = _time.GetTimestamp();
        var gc = _probes.GcPauses();
        for (var i = 0; i < _loops.Count; i++)
        {
            var loop = _loops[i];
            var (ended, inGc, started) = loop.Check(now, _threshold, gc, _gcBefore);
            if (ended is { } duration)
            {
                LogEnd(loop, duration, inGc, _first[i], _last[i]);
                _first[i] = _last[i] = null;
            }
            if (started is { } busy)
            {
                _logger.LogWarning("Event loop {Loop} stalled: one batch of work has run for {Milliseconds} ms (threshold {Threshold} ms); no other connection of the loop is served meanwhile",
                    loop.Index, Milliseconds(busy), Milliseconds(_threshold));
            }
            if (loop.Stalling)
            {
                // Read only while a loop stalls: the split of the stall's time costs nothing otherwise.
                var sample = _probes.Scheduling(loop.ThreadId) is { } scheduling ? new Sample(now, scheduling.Running, scheduling.Waiting) : (Sample?)null;
                _first[i] ??= sample;
                _last[i] = sample;
            }
        }
        _gcBefore = gc;
    }

    // Where the loop's thread was between the first and the last time the watchdog saw the stall (both within it): on
    // a processor (work that computes), waiting for one (a saturated machine), or neither (blocked in a system call,
    // a sleep, a lock, or suspended by the garbage collector).
    private void LogEnd(LoopActivity loop, TimeSpan duration, TimeSpan inGc, Sample? first, Sample? last)
    {
        if (first is { } a && last is { } b && b.Timestamp != a.Timestamp)
        {
            // The kernel adds to a thread's times when it is switched, so a sample can be behind by the interval in
            // progress: the parts are kept within what was watched.
            var watched = _time.GetElapsedTime(a.Timestamp, b.Timestamp);
            var running = Clamp(b.Running - a.Running, watched);
            var waiting = Clamp(b.Waiting - a.Waiting, watched - running);
            var blocked = watched - running - waiting;
            _logger.LogWarning("Event loop {Loop} stall ended after {Milliseconds} ms, up to {GcMilliseconds} ms of it in garbage collection pauses; over {Watched} ms of it the loop's thread ran {Running} ms, waited {Waiting} ms for a processor and was blocked {Blocked} ms (stalls on this loop: {Stalls})",
                loop.Index, Milliseconds(duration), Milliseconds(inGc), Milliseconds(watched), Milliseconds(running), Milliseconds(waiting),
                Milliseconds(blocked), loop.Stalls);
        }
        else
        {
            _logger.LogWarning("Event loop {Loop} stall ended after {Milliseconds} ms, up to {GcMilliseconds} ms of it in garbage collection pauses (stalls on this loop: {Stalls})",
                loop.Index, Milliseconds(duration), Milliseconds(inGc), loop.Stalls);
        }
    }

    private static double Milliseconds(TimeSpan duration) => Math.Round(duration.TotalMilliseconds, 1);

    private static TimeSpan Clamp(TimeSpan value, TimeSpan max) => value < TimeSpan.Zero ? TimeSpan.Zero : value > max ? max : value;

    public void Dispose()
    {
        _stopping = true;
        _thread?.Interrupt();
        _thread?.Join();
    }
}
