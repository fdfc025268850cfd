using Ferry.Configuration;

namespace Ferry.Upstream;

// One connection as the keep-alive policy sees it (UpstreamConnection.KeepAlive): TimeProvider timestamps, the requests
// started on it, what its destination announced with "Keep-Alive: timeout=N, max=M" (-1: nothing), and whether it is
// a probe kept past a learned request limit.
internal readonly record struct ConnectionKeepAlive(
    long CreatedAt,
    long IdleSince,
    int Requests,
    int AnnouncedIdleTimeoutSeconds = -1,
    int AnnouncedMaxRequests = -1,
    bool BeyondLearnedLimit = false);

// What the sentinel showed so far (KeepAlivePolicy.WatchSentinel).
internal enum SentinelVerdict
{
    Watching,  // still within what the learned idle timeout explains: keep it idle
    Outlived,  // lived past the learned value (or the configured limit): retire it
    Forgotten, // and it was the last of KeepAliveLearner.OutlivedToForget in a row: the learned value is forgotten
}

// Every keep-alive decision for one destination (docs/architecture.md, "The keep-alive contract"): which idle timeout
// and request limit are in force (configured, announced by the destination, learned from its silent closes by
// KeepAliveLearner), the margin kept before each, when and why an idle connection expires, the idle time connections
// were seen to survive, which connection is kept as the sentinel or as a probe and what they show, and which idle
// connection a request that cannot be replayed may take. It touches no socket: the pool hands it what it knows of a
// connection and the time. Called from any thread, with and without the pool's lock held: the learner publishes what
// it learned for reads without a lock, and the counters here are Interlocked.
internal sealed class KeepAlivePolicy
{
    // Before anything is known about a destination's idle timeout, a request that cannot be replayed only takes a
    // connection idle for less than this: below gunicorn's 2 s keepalive, the shortest common server default.
    internal static readonly TimeSpan UnknownSafeIdle = TimeSpan.FromSeconds(1);

    // One connection in this many that reaches a learned request limit is kept as a probe, for requests that can be
    // replayed: if it answers one more, the destination has changed and the limit is forgotten.
    internal const int LearnedLimitProbeEvery = 16;

    private readonly KeepAliveConfig _config;
    private readonly TimeProvider _time;
    private long _provenIdleTicks;  // longest idle time a connection was seen to survive (nothing learned yet)
    private long _learnedLimitHits; // connections that reached a learned request limit
    private long _limitProbes;      // of those, the ones kept as probes

    public KeepAlivePolicy(KeepAliveConfig config, TimeProvider time)
    {
        _config = config;
        _time = time;
        Learner = new KeepAliveLearner(time);
    }

    public KeepAliveLearner Learner { get; }

    // Connections kept past a learned request limit: each may cost one replay when the limit still holds.
    public long LimitProbes => Interlocked.Read(ref _limitProbes);

    public TimeSpan ProvenIdle => TimeSpan.FromTicks(Interlocked.Read(ref _provenIdleTicks));

    // The configured idle timeout, or without one the automatic cap: no connection stays idle longer.
    public TimeSpan ConfiguredIdleTimeout => _config.IdleTimeout ?? _config.AutoIdleTimeoutCap;

    // The idle timeout in force for every request: the configured one (or the automatic cap), tightened by what was
    // learned from this destination, minus the margin.
    public TimeSpan IdleTimeout =>
        Learner.IdleTimeout is { } learned && learned - Margin(learned) < ConfiguredIdleTimeout
            ? learned - Margin(learned)
            : ConfiguredIdleTimeout;

    // Safety margin before a known limit: a quarter of it, at least 200 ms (scheduling and network delay), at most 2 s.
    public static TimeSpan Margin(TimeSpan limit) =>
        TimeSpan.FromTicks(Math.Clamp(limit.Ticks / 4, TimeSpan.FromMilliseconds(200).Ticks, TimeSpan.FromSeconds(2).Ticks));

    // "Keep-Alive: max=M" on the response to a connection's `requests`-th request counts the requests still allowed
    // after this one (RFC 2068 §19.7.1.1, Apache's behaviour): the connection may carry this many in all.
    public static int AnnouncedMaxRequests(int requests, int max) => requests + max;

    // Whether the connection has carried as many requests as a limit allows: the announced one, Ferry's own
    // (KeepAlive:MaxRequests), or a learned one, which a probe is past on purpose.
    public RetireReason? RequestLimitReason(in ConnectionKeepAlive c)
    {
        if (c.AnnouncedMaxRequests >= 0 && c.Requests >= c.AnnouncedMaxRequests)
        {
            return RetireReason.AnnouncedLimit;
        }
        if (_config.MaxRequests > 0 && c.Requests >= _config.MaxRequests)
        {
            return RetireReason.MaxRequests;
        }
        return Learner.MaxRequests is > 0 and var learned && c.Requests >= learned && !c.BeyondLearnedLimit
            ? RetireReason.LearnedLimit
            : null;
    }

    // Why an idle connection must not be used any more at `now`, or null. Idle limits the destination announced or
    // that were learned retire it a margin before the destination would close it.
    public RetireReason? ExpiryReason(in ConnectionKeepAlive c, long now)
    {
        if (RequestLimitReason(c) is { } limit)
        {
            return limit;
        }
        if (_config.MaxLifetime > TimeSpan.Zero && _time.GetElapsedTime(c.CreatedAt, now) >= _config.MaxLifetime)
        {
            return RetireReason.Lifetime;
        }
        var idle = _time.GetElapsedTime(c.IdleSince, now);
        if (c.AnnouncedIdleTimeoutSeconds >= 0)
        {
            var announced = TimeSpan.FromSeconds(c.AnnouncedIdleTimeoutSeconds);
            if (idle >= announced - Margin(announced))
            {
                return RetireReason.AnnouncedLimit;
            }
        }
        if (idle >= ConfiguredIdleTimeout)
        {
            return RetireReason.IdleTimeout;
        }
        return Learner.IdleTimeout is { } learned && idle >= learned - Margin(learned)
            ? RetireReason.LearnedLimit
            : null;
    }

    // A connection came back from an exchange that completed cleanly: null keeps it, else the request limit it reached.
    // One in LearnedLimitProbeEvery that reaches a learned limit is kept anyway as a probe (`probe`), for requests that
    // can be replayed only.
    public RetireReason? Released(in ConnectionKeepAlive c, out bool probe)
    {
        // Before NoteServed: a connection that carried more requests than a limit learned while it was in use retires,
        // even as its answer makes the learner forget that limit.
        var reason = RequestLimitReason(c);
        Learner.NoteServed(c.Requests);
        probe = reason == RetireReason.LearnedLimit && Interlocked.Increment(ref _learnedLimitHits) % LearnedLimitProbeEvery == 0;
        if (probe)
        {
            Interlocked.Increment(ref _limitProbes);
            return null;
        }
        return reason;
    }

    // The destination closed the idle connection (a FIN or RST, not a stray byte) at `now`.
    public void ObserveIdleClose(in ConnectionKeepAlive c, long now) =>
        Learner.ObserveIdleClose(_time.GetElapsedTime(c.IdleSince, now), c.Requests);

    // The connection is still idle and open at `now` (no close from its idle watch): the destination tolerates that
    // idle time.
    public void NoteSurvived(in ConnectionKeepAlive c, long now)
    {
        var idle = _time.GetElapsedTime(c.IdleSince, now);
        long seen;
        while (idle.Ticks > (seen = Interlocked.Read(ref _provenIdleTicks))
            && Interlocked.CompareExchange(ref _provenIdleTicks, idle.Ticks, seen) != seen)
        {
        }
    }

    // Known limits (announced, learned from enough closes, configured) already retire connections with a margin. Before
    // that, the safe idle time is what connections were seen to survive, minus the margin, and at least UnknownSafeIdle.
    // A probe is never safe: it may be past a limit that still holds.
    public bool IsSafeForNonReplayable(in ConnectionKeepAlive c, long now)
    {
        if (c.BeyondLearnedLimit)
        {
            return false;
        }
        if (c.AnnouncedIdleTimeoutSeconds >= 0 || Learner.IdleTimeoutSettled || _config.IdleTimeout is not null)
        {
            return true;
        }
        var proven = ProvenIdle;
        var safe = proven - Margin(proven);
        return _time.GetElapsedTime(c.IdleSince, now) < (safe > UnknownSafeIdle ? safe : UnknownSafeIdle);
    }

    // A connection that expired for `reason` becomes the sentinel when none is kept (`sentinelKept`) and it expired at a
    // learned idle timeout: idle and out of reach of requests, it shows whether the destination still closes there.
    public bool KeepsAsSentinel(RetireReason reason, bool sentinelKept) =>
        reason == RetireReason.LearnedLimit && !sentinelKept && Learner.IdleTimeout is not null;

    // The sentinel at `now`. Still open well past the learned value (or at the configured limit, which nothing outlives)
    // it retires, and counts toward forgetting the value; once the value is forgotten, so is the idle time connections
    // were seen to survive under it.
    public SentinelVerdict WatchSentinel(in ConnectionKeepAlive sentinel, long now)
    {
        var idle = _time.GetElapsedTime(sentinel.IdleSince, now);
        if (!Learner.IsOutlived(idle) && idle < ConfiguredIdleTimeout)
        {
            return SentinelVerdict.Watching;
        }
        if (!Learner.SentinelOutlived())
        {
            return SentinelVerdict.Outlived;
        }
        Interlocked.Exchange(ref _provenIdleTicks, 0);
        return SentinelVerdict.Forgotten;
    }
}
