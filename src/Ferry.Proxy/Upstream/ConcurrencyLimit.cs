namespace Ferry.Upstream;

// How many requests one destination serves at once before its latency rises: a Vegas-style estimate (Netflix's
// concurrency-limits, Envoy's adaptive concurrency filter) from the time to the response head against the lowest
// recent one. A destination that queues requests internally (a listen backlog, a worker pool) answers slower as the
// concurrency passes its capacity; keeping the concurrency at the point where latency starts to rise moves the queue
// into Ferry, where it is FIFO, bounded and visible, instead of the backend's accept queue, where an overflow drops the
// SYN and costs the client a retransmission of 1, 3, 7 s.
//
// Pitfalls of the known algorithms, and what this one does about them:
// - A baseline taken while the backend queues is inflated, and one that ages out under load is replaced by queued
//   latencies: the limit then creeps up without end (Vegas's known drift). So the limit starts low (Initial 1), where
//   the latency is the unqueued one, and the baseline only falls with new samples. Envoy re-measures its minimum by
//   cutting every destination's concurrency periodically, which costs a fast destination throughput; here the cut
//   happens only when needed: a destination that became slower for good (a deploy, a bigger dataset) drives the limit
//   down to Min, and latency that stays risen there for RebaseAfter is the destination's new unqueued latency: it
//   becomes the baseline and the limit grows back.
// - Relative noise on a fast destination (0.1 ms doubling to 0.2 ms because of a thread-pool hop or a GC pause) is
//   not congestion: latency counts as risen only past Tolerance × baseline plus NoiseFloor.
// - A limit that is not reached says nothing about capacity: it grows only when the window's peak in flight reached
//   half of it, so an idle or lightly used destination keeps its limit (Netflix's "app-limited" check).
// - One slow window must not collapse the limit: a decrease is at most a halving, at most once per Window.
// - Latency is not the only evidence: a connect that took a SYN retransmission (≥ 1 s) means the listen queue was full,
//   and a refused connect while other connections to the same destination work means the same on a server that
//   answers an overflow with RST (tcp_abort_on_overflow). Both halve the limit from what was in flight.
internal sealed class ConcurrencyLimit
{
    // Samples are judged together, over at least this long: one sample is noise, and a window this short still
    // follows a destination that changes within a second.
    public static readonly TimeSpan Window = TimeSpan.FromMilliseconds(100);

    // How long latency must stay risen with the limit at Min before it is taken as the destination's new baseline.
    public static readonly TimeSpan RebaseAfter = TimeSpan.FromSeconds(1);

    // Latency up to Tolerance × baseline + NoiseFloor is "not risen". Twice the baseline lets a serial backend keep one
    // request waiting behind the one it serves (it never idles between them); the floor covers the scheduling noise of a
    // loaded machine, which matters only for destinations answering in under a few milliseconds.
    public const double Tolerance = 2.0;
    public static readonly TimeSpan NoiseFloor = TimeSpan.FromMilliseconds(10);

    // Below this × baseline (plus what the baseline lacks of NoiseFloor), latency is at its baseline and the limit grows
    // by half instead of by one: a fast destination reaches what its traffic needs within a few windows.
    public const double Headroom = 1.5;

    // A connect that took this long had its SYN retransmitted: Linux's initial retransmission timeout is 1 s.
    public static readonly TimeSpan SlowConnect = TimeSpan.FromSeconds(1);

    private readonly TimeProvider _time;
    private readonly Lock _lock = new();
    private int _limit;
    private long _windowStart;
    private int _windowCount;
    private long _windowTicks;      // sum of the window's latencies
    private int _windowPeak;        // most requests in flight seen in the window
    private long _windowConnecting; // ticks; longest a connect had been pending at a sample of the window
    private long _windowMin = long.MaxValue;  // ticks; lowest latency of the window
    private long _baseline = long.MaxValue;   // ticks; lowest latency seen (since the last rebase)
    private long _atMinSince = -1;            // since when latency stayed risen with the limit at Min
    private long _atMinLowest = long.MaxValue; // ticks; lowest latency since then
    private long _lastDecrease;
    private long _lastIncrease;
    private long _lastAverage = -1;    // ticks; the last window's average latency
    private long _increases, _decreases, _overloads, _rebases;
    private int _reported;          // the limit last reported as a move (or the initial one)
    private LimitMove? _move;

    public ConcurrencyLimit(TimeProvider time, int min, int max, int initial)
    {
        if (min < 1 || max < min)
        {
            throw new ArgumentOutOfRangeException(nameof(min), $"need 1 <= min ({min}) <= max ({max})");
        }
        _time = time;
        Min = min;
        Max = max;
        _limit = _reported = Math.Clamp(initial, min, max);
        _windowStart = time.GetTimestamp();
        _lastDecrease = _windowStart - time.TimestampFrequency; // no decrease yet: the first evidence counts at once
        _lastIncrease = _lastDecrease;

    }

    public int Min { get; }
    public int Max { get; }
    public int Limit => Volatile.Read(ref _limit);

    // The estimate's inputs, for /status.
    public TimeSpan? Baseline { get { lock (_lock) { return _baseline == long.MaxValue ? null : TimeSpan.FromTicks(_baseline); } } }
    public long Rebases => Interlocked.Read(ref _rebases);
    public TimeSpan? LastLatency { get { lock (_lock) { return _lastAverage < 0 ? null : TimeSpan.FromTicks(_lastAverage); } } }
    public long Increases => Interlocked.Read(ref _increases);
    public long Decreases => Interlocked.Read(ref _decreases);
    public long Overloads => Interlocked.Read(ref _overloads); // slow or refused connects that cut the limit

    // A move by more than half of the limit since the last one taken: the caller logs it.
    public LimitMove? TakeMove() => Volatile.Read(ref _move) is null ? null : Interlocked.Exchange(ref _move, null);

    // One request's time from its connect (if it made one) to the response head, with `inFlight` requests holding a
    // slot, and a connect to it pending for `connecting` at the time (zero when none is).
    public void Sample(TimeSpan latency, int inFlight, TimeSpan connecting = default)
    {
        lock (_lock)
        {
            var now = _time.GetTimestamp();
            var ticks = Math.Max(0, latency.Ticks);
            _baseline = Math.Min(_baseline, ticks);
            if (_time.GetElapsedTime(_lastDecrease, now) < latency)
            {
                // Sent before the limit last fell: it says how the higher limit did, and would cut again for it.
                // Samples from before a rise are kept: a higher limit only queues more than the lower one did.
                return;
            }
            if (_time.GetElapsedTime(_lastIncrease, now) < latency)
            {
                // Sent before the limit last rose: it cannot say whether the higher limit queues, and growing on it
                // again overshot (a serial backend's round at limit 7 lasts longer than a window).
                _windowPeak = Math.Max(_windowPeak, inFlight);
                return;
            }
            _windowMin = Math.Min(_windowMin, ticks);
            _windowTicks += ticks;
            _windowCount++;
            _windowPeak = Math.Max(_windowPeak, inFlight);
            _windowConnecting = Math.Max(_windowConnecting, connecting.Ticks);
            // A window needs a round of samples, as many as the limit up to 16: the first answers of a round are the
            // ones that queued least, and a window of them alone would grow the limit again and again.
            if (_time.GetElapsedTime(_windowStart, now) < Window || _windowCount < Math.Min(_limit, 16))
            {
                return;
            }
            var average = _windowTicks / _windowCount;
            _lastAverage = average;
            var windowMin = _windowMin;
            var peak = _windowPeak;
            var longestConnect = _windowConnecting;
            ResetWindow(now);
            var risen = Tolerance * _baseline + NoiseFloor.Ticks;
            if (average > risen)
            {
                if (_limit == Min && Rebase(now, windowMin))
                {
                    return;
                }
                if (_time.GetElapsedTime(_lastDecrease, now) >= Window)
                {
                    // In proportion to how far latency rose past the tolerance, at most by half.
                    var next = (int)(_limit * Math.Max(0.5, risen / average));
                    SetLimit(Math.Min(next, _limit - 1), now, decrease: true, $"latency rose: {Ms(average)} against {Ms(_baseline)}");
                }
                return;
            }
            _atMinSince = -1;
            // A connect pending for longer than a risen request takes is a request the destination has not accepted
            // in time: its latency is not in the window yet, and it may be waiting for a retransmitted SYN. No growth
            // in a window that saw one. Any connect pending at all was the rule once: against a destination that
            // closes its connections every 100 or 1,000 requests (Tomcat's maxKeepAliveRequests, nginx's
            // keepalive_requests) a window always saw one of its quick reconnects, and a fresh start under load kept
            // the limit at 2 or 3 for good, with every other request queued.
            if (peak * 2 >= _limit && longestConnect <= risen)
            {
                // Growth by half needs latency at the baseline; the noise floor only helps a destination answering faster
                // than the floor itself (at 20 ms, two requests queued in a serial backend already make 40 ms).
                var atBaseline = Headroom * _baseline + Math.Max(0, NoiseFloor.Ticks - _baseline);
                var grow = average <= atBaseline ? Math.Max(1, _limit / 2) : 1;
                SetLimit(_limit + grow, now, decrease: false, $"latency steady: {Ms(average)} against {Ms(_baseline)}");
            }
        }
    }

    // Latency stays risen with the limit at Min: after RebaseAfter, the lowest latency seen meanwhile is the
    // destination's unqueued latency now.
    private bool Rebase(long now, long windowMin)
    {
        if (_atMinSince < 0)
        {
            _atMinSince = now;
            _atMinLowest = windowMin;
            return false;
        }
        _atMinLowest = Math.Min(_atMinLowest, windowMin);
        if (_time.GetElapsedTime(_atMinSince, now) < RebaseAfter)
        {
            return false;
        }
        _baseline = _atMinLowest;
        _atMinSince = -1;
        Interlocked.Increment(ref _rebases);
        return true;
    }

    // A connect that took a retransmitted SYN, or was refused while other connections work: the destination's listen
    // queue overflowed with `inFlight` requests holding a slot.
    public void Overload(int inFlight, string reason)
    {
        lock (_lock)
        {
            var now = _time.GetTimestamp();
            Interlocked.Increment(ref _overloads);
            if (_time.GetElapsedTime(_lastDecrease, now) < Window)
            {
                return; // one overflow usually drops several SYNs at once: one cut for all of them
            }
            SetLimit(Math.Min(_limit - 1, Math.Min(_limit, inFlight) / 2), now, decrease: true, reason);
            // Latencies measured during the overflow are not the ones the new limit will see.
            ResetWindow(now);
        }
    }

    private static string Ms(long ticks) => $"{TimeSpan.FromTicks(ticks).TotalMilliseconds:0.#} ms";

    private void ResetWindow(long now)
    {
        _windowStart = now;
        _windowCount = 0;
        _windowTicks = 0;
        _windowPeak = 0;
        _windowConnecting = 0;
        _windowMin = long.MaxValue;
    }

    private void SetLimit(int value, long now, bool decrease, string reason)
    {
        var next = Math.Clamp(value, Min, Max);
        var previous = _limit;
        if (next == previous)
        {
            return;
        }
        Volatile.Write(ref _limit, next);
        if (decrease)
        {
            _lastDecrease = now;
            Interlocked.Increment(ref _decreases);
        }
        else
        {
            _lastIncrease = now;
            Interlocked.Increment(ref _increases);
        }
        // Relative to the limit last reported, so that a slide by small steps is reported too.
        var reported = _reported;
        if (Math.Abs(next - reported) * 2 > reported)
        {
            _reported = next;
            Volatile.Write(ref _move, new LimitMove(reported, next, reason));
        }
    }
}

internal sealed record LimitMove(int From, int To, string Reason);
