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

    public DestinationHealth(PassiveHealthConfig passive, ActiveHealthConfig active, TimeSpan slowStart, TimeProvider time)
    {
        _passive = passive;
        _active = active;
        _slowStart = slowStart;
        _time = time;
        _backSince = time.GetTimestamp();
    }

    public bool IsAvailable
    {
        get
        {
            var until = Volatile.Read(ref _ejectedUntil);
            return Volatile.Read(ref _activeHealthy) && (until == 0 || _time.GetTimestamp() >= until);
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
                if (_ejectedUntil != 0 && _time.GetTimestamp() < _ejectedUntil)
                {
                    return $"passive: {_passiveReason}";
                }
                return SlowStartFactor() < 1 ? "ok (slow start)" : "ok";
            }
        }
    }

    // Counts one failure that was the destination's fault (see FailureClassifier).
    public void ReportFailure(string reason)
    {
        if (!_passive.Enabled)
        {
            return;
        }
        var now = _time.GetTimestamp();
        lock (_lock)
        {
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
            var until = now + (long)(_passive.ReactivationPeriod.TotalSeconds * _time.TimestampFrequency);
            Volatile.Write(ref _ejectedUntil, until);
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

    internal const double MinSlowStartFactor = 0.1;
}
