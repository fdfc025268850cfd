namespace Ferry.Upstream;

// Learns the keep-alive limits a destination enforces without announcing them (gunicorn, Tomcat and most frameworks
// send no Keep-Alive header) from the closes the idle watch observes, so that KeepAlivePolicy retires connections
// before the destination closes them.
//
// Safety first: the learned idle timeout is the earliest close seen. A lower sample is believed at once (the cost of a
// value too low is an extra connect, the cost of a value too high is a race); a later one is no evidence that longer
// idle times are safe, because real servers close late as often as not (gunicorn's event loop closes anywhere between
// its 2 s and 3 s, depending on other traffic). A value that is too low is corrected by the sentinel: one idle
// connection per destination is allowed to outlive the learned limit; when sentinels survive well past it several times
// in a row, the destination has changed and the value is forgotten, then learned again from the next closes.
internal sealed class KeepAliveLearner(TimeProvider time)
{
    // A close this soon after the end of a response ends a per-connection request limit (Tomcat's
    // maxKeepAliveRequests closes right after the last response), not an idle timeout.
    internal static readonly TimeSpan ImmediateClose = TimeSpan.FromMilliseconds(100);

    // A learned request limit is confirmed by a second close after the same number of requests; it is forgotten after
    // this long so that a changed destination is relearned (each relearning costs at most two replays).
    internal static readonly TimeSpan MaxRequestsLifetime = TimeSpan.FromMinutes(10);

    // Sentinels that must outlive the learned idle timeout in a row, with no close below their threshold in between,
    // before it is forgotten. One survival can be a server whose close loop was late once (a busy event loop, a
    // stalled worker); three, each on its own connection and several seconds apart, are a destination that changed.
    internal const int OutlivedToForget = 3;

    // Idle closes seen since the value was (re)learned before it governs requests that cannot be replayed on its own:
    // the first close may be a late one (gunicorn: up to 1 s late under traffic), and the margin covers only a quarter.
    internal const int SettledAfter = 3;

    // Changes are made under the lock; what every lease and release reads (the idle timeout, whether it settled, the
    // request limit, the most requests served) is published in fields read without it, so that requests on different
    // event loops do not meet on this lock.
    private readonly Lock _lock = new();
    private TimeSpan? _idleTimeout;  // learned idle timeout; null = unknown
    private long _idleTimeoutTicks = -1; // _idleTimeout as published; -1 = unknown
    private volatile bool _settled;  // IdleTimeoutSettled as published
    private int _maxRequests;        // learned requests per connection; 0 = unknown; written after _maxRequestsSince
    private long _maxRequestsSince;  // when _maxRequests was learned
    private int _candidateMaxRequests;
    private int _maxServed;          // most requests a connection has answered cleanly (no request limit is below); CAS
    private long _idleSamples;       // idle closes taken into account
    private int _samplesSinceLearned; // idle closes since the value was last forgotten
    private int _outlivedInARow;     // sentinels that outlived the learned value since the last close below it
    private long _forgotten;         // learned idle timeouts dropped because the sentinel outlived them

    public TimeSpan? IdleTimeout => Volatile.Read(ref _idleTimeoutTicks) is var ticks and >= 0 ? TimeSpan.FromTicks(ticks) : null;

    // Whether enough closes were seen for the learned idle timeout alone to decide which connections a request that
    // cannot be replayed may take (see SettledAfter).
    public bool IdleTimeoutSettled => _settled;

    public int MaxRequests
    {
        get
        {
            var max = Volatile.Read(ref _maxRequests);
            if (max == 0 || time.GetElapsedTime(Volatile.Read(ref _maxRequestsSince)) < MaxRequestsLifetime)
            {
                return max;
            }
            lock (_lock)
            {
                if (_maxRequests > 0 && time.GetElapsedTime(_maxRequestsSince) >= MaxRequestsLifetime)
                {
                    Volatile.Write(ref _maxRequests, 0);
                }
                return _maxRequests;
            }
        }
    }

    public long IdleSamples => Interlocked.Read(ref _idleSamples);
    public long Forgotten => Interlocked.Read(ref _forgotten);

    // The destination closed a connection that had been idle for `idle` after serving `requests` requests.
    public void ObserveIdleClose(TimeSpan idle, int requests)
    {
        lock (_lock)
        {
            if (idle < ImmediateClose)
            {
                if (requests < Volatile.Read(ref _maxServed))
                {
                    return; // other connections answered more requests than that: a restart, not a limit
                }
                if (requests == _candidateMaxRequests)
                {
                    // The time first: a reader that sees the new limit sees when it was learned.
                    Volatile.Write(ref _maxRequestsSince, time.GetTimestamp());
                    Volatile.Write(ref _maxRequests, requests);
                }
                _candidateMaxRequests = requests;
                return;
            }
            Interlocked.Increment(ref _idleSamples);
            _samplesSinceLearned++;
            _outlivedInARow = 0; // the destination still closes idle connections before a sentinel's threshold
            if (_idleTimeout is null || idle < _idleTimeout)
            {
                _idleTimeout = idle;
            }
            Publish();
        }
    }

    // Under the lock.
    private void Publish()
    {
        Volatile.Write(ref _idleTimeoutTicks, _idleTimeout?.Ticks ?? -1);
        _settled = _idleTimeout is not null && _samplesSinceLearned >= SettledAfter;
    }

    // A connection answered its `requests`-th request cleanly. Past a learned request limit (a probe), it shows the
    // destination has changed and the limit is forgotten.
    public void NoteServed(int requests)
    {
        int served;
        while (requests > (served = Volatile.Read(ref _maxServed)) && Interlocked.CompareExchange(ref _maxServed, requests, served) != served)
        {
        }
        if (Volatile.Read(ref _maxRequests) is var max and > 0 && requests > max)
        {
            lock (_lock)
            {
                if (_maxRequests > 0 && requests > _maxRequests)
                {
                    Volatile.Write(ref _maxRequests, 0);
                    _candidateMaxRequests = 0;
                }
            }
        }
    }

    // The sentinel is still open this long after it went idle: is the learned value too low?
    public bool IsOutlived(TimeSpan idle) => IdleTimeout is { } learned && idle >= learned + learned / 2 + TimeSpan.FromSeconds(1);

    // A sentinel outlived the learned value. True when it was the last of OutlivedToForget in a row: the value is
    // forgotten and learned again.
    public bool SentinelOutlived()
    {
        lock (_lock)
        {
            if (++_outlivedInARow < OutlivedToForget)
            {
                return false;
            }
            _outlivedInARow = 0;
            _idleTimeout = null;
            _samplesSinceLearned = 0;
            Publish();
            Interlocked.Increment(ref _forgotten);
            return true;
        }
    }
}
