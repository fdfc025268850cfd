using System.Diagnostics;
using Ferry.Configuration;
using Ferry.Model;

namespace Ferry.Upstream;

// Keep-alive connections to one destination: a LIFO stack of idle connections (the warmest first, so the coldest age
// out), limited by MaxIdle, IdleTimeout, MaxRequests and MaxLifetime, like nginx's keepalive, keepalive_timeout,
// keepalive_requests and keepalive_time.
internal sealed class ConnectionPool : IAsyncDisposable
{
    public delegate ConnectionPool Factory(DestinationState destination);

    // Connections whose announced Keep-Alive timeout is this close are retired rather than reused: the request
    // would otherwise cross the destination's close on the wire.
    internal static readonly TimeSpan AnnouncedTimeoutMargin = TimeSpan.FromSeconds(1);

    // How often idle connections are checked for expiry and for a close seen while idle.
    internal static readonly TimeSpan ScavengePeriod = TimeSpan.FromSeconds(1);

    private readonly DestinationState _destination;
    private readonly KeepAliveConfig _config;
    private readonly TimeSpan _connectTimeout;
    private readonly TimeProvider _time;
    private readonly Lock _lock = new();
    private readonly List<UpstreamConnection> _idle = []; // index 0 = oldest idle, last = warmest
    private readonly ITimer _scavenger;
    private readonly long[] _retired = new long[Enum.GetValues<RetireReason>().Length]; // by reason
    private long _opened;      // connections established
    private long _reused;      // leases served by an idle connection
    private int _active;       // connections leased to an exchange right now
    private bool _disposed;

    public ConnectionPool(DestinationState destination, KeepAliveConfig config, TimeSpan connectTimeout, TimeProvider time)
    {
        _destination = destination;
        _config = config;
        _connectTimeout = connectTimeout;
        _time = time;
        _scavenger = time.CreateTimer(static s => ((ConnectionPool)s!).Scavenge(), this, ScavengePeriod, ScavengePeriod);
    }

    public long Opened => Interlocked.Read(ref _opened);
    public long Reused => Interlocked.Read(ref _reused);
    public int Active => Volatile.Read(ref _active);
    public int Idle { get { lock (_lock) { return _idle.Count; } } }
    public long Retired(RetireReason reason) => Interlocked.Read(ref _retired[(int)reason]);

    // The idle timeout in force: the configured one, or under "auto" the cap (learning tightens it per destination).
    public TimeSpan IdleTimeout => _config.IdleTimeout ?? _config.AutoIdleTimeoutCap;

    // A live connection: the warmest idle one that is still within every limit, else a new one.
    public async ValueTask<(UpstreamConnection Connection, bool Reused)> AcquireAsync(Http1.Http1Limits limits, CancellationToken requestAborted)
    {
        var now = _time.GetTimestamp();
        while (true)
        {
            UpstreamConnection? candidate;
            lock (_lock)
            {
                if (_idle.Count == 0)
                {
                    break;
                }
                candidate = _idle[^1];
                _idle.RemoveAt(_idle.Count - 1);
            }
            if (ExpiryReason(candidate, now) is { } reason)
            {
                Retire(candidate, reason);
                continue;
            }
            Interlocked.Increment(ref _active);
            Interlocked.Increment(ref _reused);
            return (candidate, true);
        }

        var socket = await Connector.ConnectAsync(_destination.EndPoint, _connectTimeout, _time, requestAborted);
        Interlocked.Increment(ref _opened);
        Interlocked.Increment(ref _active);
        return (new UpstreamConnection(_destination, socket, limits, _time.GetTimestamp()), false);
    }

    // Called exactly once per lease. `retire` null: the exchange completed cleanly and the connection may be reused.
    public void Release(UpstreamConnection connection, RetireReason? retire)
    {
        Interlocked.Decrement(ref _active);
        var now = _time.GetTimestamp();
        var reason = retire ?? ExpiryReason(connection, now);
        if (reason is null)
        {
            connection.IdleSince = now;
            lock (_lock)
            {
                if (!_disposed && _idle.Count < _config.MaxIdle)
                {
                    _idle.Add(connection);
                    return;
                }
                reason = _disposed ? RetireReason.Shutdown : RetireReason.PoolFull;
            }
        }
        Retire(connection, reason.Value);
    }

    private RetireReason? ExpiryReason(UpstreamConnection c, long now)
    {
        if (c.AnnouncedMaxRequests >= 0 && c.RequestCount >= c.AnnouncedMaxRequests)
        {
            return RetireReason.AnnouncedLimit;
        }
        if (_config.MaxRequests > 0 && c.RequestCount >= _config.MaxRequests)
        {
            return RetireReason.MaxRequests;
        }
        if (_config.MaxLifetime > TimeSpan.Zero && _time.GetElapsedTime(c.CreatedAt, now) >= _config.MaxLifetime)
        {
            return RetireReason.Lifetime;
        }
        var idle = _time.GetElapsedTime(c.IdleSince, now);
        if (c.AnnouncedIdleTimeoutSeconds >= 0 && idle >= TimeSpan.FromSeconds(c.AnnouncedIdleTimeoutSeconds) - AnnouncedTimeoutMargin)
        {
            return RetireReason.AnnouncedLimit;
        }
        if (idle >= IdleTimeout)
        {
            return RetireReason.IdleTimeout;
        }
        return c.IsReadableWhileIdle() ? RetireReason.ClosedWhileIdle : null;
    }

    private void Retire(UpstreamConnection connection, RetireReason reason)
    {
        Interlocked.Increment(ref _retired[(int)reason]);
        connection.Dispose();
    }

    private void Scavenge()
    {
        var now = _time.GetTimestamp();
        List<(UpstreamConnection, RetireReason)>? expired = null;
        lock (_lock)
        {
            for (var i = _idle.Count - 1; i >= 0; i--)
            {
                if (ExpiryReason(_idle[i], now) is { } reason)
                {
                    (expired ??= []).Add((_idle[i], reason));
                    _idle.RemoveAt(i);
                }
            }
        }
        if (expired is not null)
        {
            foreach (var (connection, reason) in expired)
            {
                Retire(connection, reason);
            }
        }
    }

    public ValueTask DisposeAsync()
    {
        _scavenger.Dispose();
        UpstreamConnection[] idle;
        lock (_lock)
        {
            _disposed = true;
            idle = [.. _idle];
            _idle.Clear();
        }
        foreach (var c in idle)
        {
            Retire(c, RetireReason.Shutdown);
        }
        Debug.Assert(Idle == 0);
        return ValueTask.CompletedTask;
    }
}
