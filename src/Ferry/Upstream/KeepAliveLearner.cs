namespace Ferry.Upstream;

// Learns the keep-alive limits a destination enforces without announcing them (gunicorn, Tomcat and most frameworks
// send no Keep-Alive header) from the closes the idle watch observes, so that Ferry retires connections before the
// destination closes them.
//
// Safety first: a lower idle-timeout sample is believed at once (the cost of a value too low is an extra connect, the
// cost of a value too high is a race). A value that is too low is corrected by the sentinel: one idle connection per
// destination is allowed to outlive the learned limit; if it survives well past it, the destination has changed and the
// value is forgotten, then learned again from the next closes.
internal sealed class KeepAliveLearner(TimeProvider time)
{
    // A close this soon after the end of a response ends a per-connection request limit (Tomcat's
    // maxKeepAliveRequests closes right after the last response), not an idle timeout.
    internal static readonly TimeSpan ImmediateClose = TimeSpan.FromMilliseconds(100);

    // A learned request limit is confirmed by a second close after the same number of requests; it is forgotten after
    // this long so that a changed destination is relearned (each relearning costs at most two replays).
    internal static readonly TimeSpan MaxRequestsLifetime = TimeSpan.FromMinutes(10);

    private readonly Lock _lock = new();
    private TimeSpan? _idleTimeout;  // learned idle timeout; null = unknown
    private int _maxRequests;        // learned requests per connection; 0 = unknown
    private long _maxRequestsSince;  // when _maxRequests was learned
    private int _candidateMaxRequests;
    private int _maxServed;          // most requests a connection has answered cleanly: no request limit can be below
    private long _idleSamples;       // idle closes taken into account
    private long _forgotten;         // learned idle timeouts dropped because the sentinel outlived them

    public TimeSpan? IdleTimeout { get { lock (_lock) { return _idleTimeout; } } }

    public int MaxRequests
    {
        get
        {
            lock (_lock)
            {
                if (_maxRequests > 0 && time.GetElapsedTime(_maxRequestsSince) >= MaxRequestsLifetime)
                {
                    _maxRequests = 0;
                }
                return _maxRequests;
            }
        }
    }

    public long IdleSamples => Interlocked.Read(ref _idleSamples);
    public long Forgotten => Interlocked.Read(ref _forgotten);

    // Safety margin before a known limit: a quarter of it, at least 200 ms (scheduling and network delay), at most 2 s.
    public static TimeSpan Margin(TimeSpan limit) =>
        TimeSpan.FromTicks(Math.Clamp(limit.Ticks / 4, TimeSpan.FromMilliseconds(200).Ticks, TimeSpan.FromSeconds(2).Ticks));

    // The destination closed a connection that had been idle for `idle` after serving `requests` requests.
    public void ObserveIdleClose(TimeSpan idle, int requests, bool sentinel)
    {
        lock (_lock)
        {
            if (idle < ImmediateClose)
            {
                if (requests < _maxServed)
                {
                    return; // other connections answered more requests than that: a restart, not a limit
                }
                if (requests == _candidateMaxRequests)
                {
                    _maxRequests = requests;
                    _maxRequestsSince = time.GetTimestamp();
                }
                _candidateMaxRequests = requests;
                return;
            }
            Interlocked.Increment(ref _idleSamples);
            // Only the sentinel can outlive the learned value, so only it can raise it: the destination's timeout grew.
            if (_idleTimeout is null || idle < _idleTimeout || sentinel)
            {
                _idleTimeout = idle;
            }
        }
    }

    // A connection answered its `requests`-th request cleanly. Past a learned request limit (a probe), it shows the
    // destination has changed and the limit is forgotten.
    public void NoteServed(int requests)
    {
        lock (_lock)
        {
            if (requests > _maxServed)
            {
                _maxServed = requests;
            }
            if (_maxRequests > 0 && requests > _maxRequests)
            {
                _maxRequests = 0;
                _candidateMaxRequests = 0;
            }
        }
    }

    // The sentinel is still open this long after it went idle: is the learned value too low?
    public bool IsOutlived(TimeSpan idle)
    {
        lock (_lock)
        {
            return _idleTimeout is { } learned && idle >= learned + learned / 2 + TimeSpan.FromSeconds(1);
        }
    }

    public void Forget()
    {
        lock (_lock)
        {
            _idleTimeout = null;
            Interlocked.Increment(ref _forgotten);
        }
    }
}
