using Ferry.Configuration;

namespace Ferry.Health;

// Whether one destination is in rotation, and why not: passive health (failures seen on real traffic, nginx's
// max_fails/fail_timeout) and active health (rise/fall of periodic checks) must both agree. Also tracks when the
// destination last came back, for slow start.
internal sealed class DestinationHealth
{
    private readonly PassiveHealthConfig _passive;
    private readonly ActiveHealthConfig _active;
    private readonly TimeSpan _slowStart;
    private readonly TimeProvider _time;
    private readonly Lock _lock = new();
    private int _failures;             // consecutive destination faults in the current window
    private long _windowStart;         // timestamp of the first of them
    private long _ejectedUntil;        // passive: out of rotation until this timestamp (0 = never ejected)
    private string _passiveReason = "";
    private bool _activeHealthy = true; // optimistic until Fall checks fail, so that a start does not empty the cluster
    private int _activeStreak;         // consecutive check results contradicting _activeHealthy
    private string _activeReason = "";
    private long _backSince;           // when the destination last rejoined the rotation (slow start)
    private long _trialAt;             // passive: while ejected, when the next trial request may go (0 = none)
    private long _trialStarted;        // when the trial request in flight was sent (0 = none in flight)
    private TimeSpan _trialDelay;      // the wait before the next trial, doubled by each failed one

    public DestinationHealth(PassiveHealthConfig passive, ActiveHealthConfig active, TimeSpan slowStart, TimeProvider time)
    {
        _passive = passive;
        _active = active;
        _slowStart = slowStart;
        _time = time;
        _backSince = time.GetTimestamp();
    }

    // In rotation: not ejected by passive health, healthy for active checks. What /status and the metrics show.
    public bool IsAvailable
    {
        get
        {
            var until = Volatile.Read(ref _ejectedUntil);
            return Volatile.Read(ref _activeHealthy) && (until == 0 || _time.GetTimestamp() >= until);
        }
    }

    // May the balancer pick it: in rotation, or ejected with its trial request due.
    public bool IsCandidate
    {
        get
        {
            if (!Volatile.Read(ref _activeHealthy))
            {
                return false;
            }
            var until = Volatile.Read(ref _ejectedUntil);
            if (until == 0)
            {
                return true;
            }
            var now = _time.GetTimestamp();
            return now >= until || IsTrialDue(now);
        }
    }

    // Half-open: an ejected destination is offered to the balancer again once its trial is due and no trial is in
    // flight, so that a restarted destination takes traffic within seconds instead of after the whole
    // ReactivationPeriod, even without active checks. Balancer picks race, so a few requests may go instead of one;
    // those that fail to connect move on to the next destination like any connect failure.
    private bool IsTrialDue(long now)
    {
        var at = Volatile.Read(ref _trialAt);
        if (at == 0 || now < at)
        {
            return false;
        }
        var started = Volatile.Read(ref _trialStarted);
        return started == 0 || _time.GetElapsedTime(started, now) >= TrialTimeout;
    }

    // A request is being sent to this destination: while ejected, it is the trial, and no other goes until it ends.
    public void OnRequestStarted()
    {
        if (Volatile.Read(ref _ejectedUntil) == 0)
        {
            return;
        }
        var now = _time.GetTimestamp();
        lock (_lock)
        {
            if (_ejectedUntil != 0 && now < _ejectedUntil && IsTrialDue(now))
            {
                Volatile.Write(ref _trialStarted, now);
            }
        }
    }

    public string Reason
    {
        get
        {
            lock (_lock)
            {
                if (!_activeHealthy)
                {
                    return $"active check failed {_active.Fall} times: {_activeReason}";
                }
                var now = _time.GetTimestamp();
                if (_ejectedUntil != 0 && now < _ejectedUntil)
                {
                    return _trialStarted != 0 && !IsTrialDue(now) ? $"passive: {_passiveReason} (trial request in flight)"
                        : IsTrialDue(now) ? $"passive: {_passiveReason} (trial request due)"
                        : $"passive: {_passiveReason}";
                }
                return SlowStartFactor() < 1 ? "ok (slow start)" : "ok";
            }
        }
    }

    // Counts one failure that was the destination's fault (the Health column of ProxyErrorTable).
    public void ReportFailure(string reason)
    {
        if (!_passive.Enabled)
        {
            return;
        }
        var now = _time.GetTimestamp();
        lock (_lock)
        {
            if (_ejectedUntil != 0 && now < _ejectedUntil)
            {
                // Already out. A failed trial keeps it out and doubles the wait for the next one; the failures of
                // requests sent before the ejection say nothing new.
                if (_trialStarted != 0)
                {
                    _passiveReason = $"trial request failed: {reason}";
                    _trialDelay = Min(_trialDelay * 2, MaxTrialDelay, _passive.ReactivationPeriod);
                    Volatile.Write(ref _trialAt, now + Ticks(_trialDelay));
                    Volatile.Write(ref _trialStarted, 0);
                    var extended = now + Ticks(_passive.ReactivationPeriod);
                    Volatile.Write(ref _ejectedUntil, Math.Max(_ejectedUntil, extended));
                    _backSince = _ejectedUntil;
                }
                return;
            }
            if (_failures == 0 || _time.GetElapsedTime(_windowStart, now) > _passive.FailureWindow)
            {
                _failures = 0;
                _windowStart = now;
            }
            _failures++;
            if (_failures < _passive.MaxFailures)
            {
                return;
            }
            _failures = 0;
            _passiveReason = _passive.MaxFailures == 1 ? reason : $"{_passive.MaxFailures} failures in a row, the last: {reason}";
            var until = now + Ticks(_passive.ReactivationPeriod);
            Volatile.Write(ref _ejectedUntil, until);
            _trialDelay = Min(FirstTrialDelay, MaxTrialDelay, _passive.ReactivationPeriod);
            Volatile.Write(ref _trialAt, now + Ticks(_trialDelay));
            Volatile.Write(ref _trialStarted, 0);
            // Slow start begins when the ejection ends.
            _backSince = until;
        }
    }

    // A success breaks a run of failures (nginx resets max_fails on a successful response) and, when the destination
    // was ejected (a request reached it in panic), brings it back at once.
    public void ReportSuccess()
    {
        if (Volatile.Read(ref _failures) == 0 && Volatile.Read(ref _ejectedUntil) == 0)
        {
            return;
        }
        lock (_lock)
        {
            _failures = 0;
            if (_ejectedUntil != 0)
            {
                var now = _time.GetTimestamp();
                if (now < _ejectedUntil)
                {
                    _backSince = now;
                }
                Volatile.Write(ref _ejectedUntil, 0);
                ClearTrial();
            }
        }
    }

    // One active check result. Returns true when it changed the destination's state (for logging).
    public bool ReportCheck(bool passed, string reason)
    {
        lock (_lock)
        {
            if (passed == _activeHealthy)
            {
                _activeStreak = 0;
                return false;
            }
            _activeStreak++;
            _activeReason = reason;
            if (_activeStreak < (passed ? _active.Rise : _active.Fall))
            {
                return false;
            }
            _activeStreak = 0;
            Volatile.Write(ref _activeHealthy, passed);
            if (passed)
            {
                _backSince = _time.GetTimestamp();
                // A destination the checks just proved healthy is not held out by an older passive ejection.
                Volatile.Write(ref _ejectedUntil, 0);
                ClearTrial();
                _failures = 0;
            }
            return true;
        }
    }

    // 1 when fully in rotation; during slow start the share of its weight a destination gets, rising linearly from
    // 10 % (nginx plus ramps from zero, which starves a destination that is the only candidate of nothing, but makes
    // weighted choices between ramping destinations meaningless at the first instant).
    public double SlowStartFactor()
    {
        if (_slowStart <= TimeSpan.Zero)
        {
            return 1;
        }
        var since = Volatile.Read(ref _backSince);
        var now = _time.GetTimestamp();
        if (now <= since)
        {
            return MinSlowStartFactor;
        }
        var elapsed = _time.GetElapsedTime(since, now);
        return elapsed >= _slowStart ? 1 : Math.Max(MinSlowStartFactor, elapsed / _slowStart);
    }

    private void ClearTrial()
    {
        Volatile.Write(ref _trialAt, 0);
        Volatile.Write(ref _trialStarted, 0);
    }

    private long Ticks(TimeSpan span) => (long)(span.TotalSeconds * _time.TimestampFrequency);

    private static TimeSpan Min(TimeSpan a, TimeSpan b, TimeSpan c) => TimeSpan.FromTicks(Math.Min(a.Ticks, Math.Min(b.Ticks, c.Ticks)));

    internal const double MinSlowStartFactor = 0.1;

    // The first trial comes 1 s after an ejection; each failed one doubles the wait, up to 2 s: a restarted
    // destination is back within about 2 s, and one that stays down costs one failed connect every 2 s.
    internal static readonly TimeSpan FirstTrialDelay = TimeSpan.FromSeconds(1);
    internal static readonly TimeSpan MaxTrialDelay = TimeSpan.FromSeconds(2);

    // A trial that has not ended after this long (a client that left, a destination that accepts and never answers)
    // no longer holds the next one back.
    internal static readonly TimeSpan TrialTimeout = TimeSpan.FromSeconds(5);
}
