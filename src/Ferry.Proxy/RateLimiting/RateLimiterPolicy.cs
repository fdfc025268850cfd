using System.Collections.Concurrent;
using System.Security.Cryptography;
using System.Text;
using System.Threading.RateLimiting;
using Ferry.Configuration;

namespace Ferry.RateLimiting;

/// <summary>
/// One entry of RateLimiterPolicies at run time: a System.Threading.RateLimiting limiter per partition key, at most
/// <see cref="RateLimiterPolicyConfig.MaxPartitions"/> of them (docs/decisions/2026-12-02-rate-limits.md).
/// A partition that is idle (its limiter is full again, nothing leased or queued) is indistinguishable from a new
/// one, so dropping it loses nothing: idle partitions are dropped after <see cref="IdleTimeout"/>, and at once when
/// the policy is full. When every partition is busy and the policy is full, new keys share one overflow partition with
/// the same limits: a client spraying addresses or header values gets one budget for all its new keys, and the memory
/// stays bounded.
/// </summary>
internal sealed class RateLimiterPolicy : IDisposable
{
    // ASP.NET Core's partitioned limiter uses the same heartbeat and idle time.
    public static readonly TimeSpan Heartbeat = TimeSpan.FromMilliseconds(100);
    public static readonly TimeSpan IdleTimeout = TimeSpan.FromSeconds(10);

    // Header values up to Kestrel's 32 KiB would make partitions' keys, not their limiters, the memory that counts:
    // longer values are keyed by their SHA-256.
    public const int MaxKeyLength = 64;

    // A full policy sweeps for idle partitions at most this often: under a spray every new key would otherwise scan all.
    private static readonly TimeSpan FullSweepInterval = TimeSpan.FromSeconds(1);

    private readonly ConcurrentDictionary<string, RateLimiter> _partitions = new(StringComparer.Ordinal);
    private readonly Lock _lock = new(); // adds and removes, so that the count stays exact
    private readonly TimeProvider _time;
    private readonly ITimer _timer;
    private int _count;
    private int _ticks;
    private long _lastFullSweep;
    private RateLimiter? _overflow;
    private bool _disposed;

    public RateLimiterPolicy(RateLimiterPolicyConfig config, TimeProvider time)
    {
        Config = config;
        _time = time;
        _lastFullSweep = time.GetTimestamp() - (long)(FullSweepInterval.TotalSeconds * time.TimestampFrequency);
        _timer = time.CreateTimer(static s => ((RateLimiterPolicy)s!).Tick(), this, Heartbeat, Heartbeat);
    }

    public RateLimiterPolicyConfig Config { get; }

    public string Name => Config.Name;

    /// <summary>Partitions currently held, not counting the overflow partition.</summary>
    public int Partitions => Volatile.Read(ref _count);

    /// <summary>Whether new keys currently share the overflow partition.</summary>
    public bool Overflowing { get; private set; }

    private int _overflowReported; // 1 once the current overflow has been reported

    /// <summary>True once when the policy starts sharing the overflow partition, for a single log line.</summary>
    public bool TakeOverflowStart() =>
        Overflowing && Volatile.Read(ref _overflowReported) == 0 && Interlocked.Exchange(ref _overflowReported, 1) == 0;

    /// <summary>
    /// Acquires one permit for the request's partition, waiting in the partition's queue when QueueLimit allows.
    /// Completes synchronously, without allocating, when a token bucket or window has a permit.
    /// </summary>
    public ValueTask<RateLimitLease> AcquireAsync(string key, CancellationToken aborted)
    {
        try
        {
            var limiter = Partition(key);
            return Config.QueueLimit == 0 ? new ValueTask<RateLimitLease>(limiter.AttemptAcquire()) : QueueAsync(limiter, aborted);
        }
        catch (ObjectDisposedException) when (_disposed)
        {
            return new ValueTask<RateLimitLease>(Unlimited.Lease);
        }
    }

    private async ValueTask<RateLimitLease> QueueAsync(RateLimiter limiter, CancellationToken aborted)
    {
        try
        {
            return await limiter.AcquireAsync(1, aborted);
        }
        catch (ObjectDisposedException) when (_disposed)
        {
            return Unlimited.Lease;
        }
    }

    /// <summary>The partition key of a header value: the value itself, or its hash when it is long.</summary>
    public static string HeaderKey(string? value)
    {
        if (value is null || value.Length <= MaxKeyLength)
        {
            return value ?? "";
        }
        return "sha256:" + Convert.ToBase64String(SHA256.HashData(Encoding.UTF8.GetBytes(value)));
    }

    internal RateLimiter Partition(string key)
    {
        if (_partitions.TryGetValue(key, out var limiter))
        {
            return limiter;
        }
        lock (_lock)
        {
            if (_partitions.TryGetValue(key, out limiter))
            {
                return limiter;
            }
            if (_count >= Config.MaxPartitions && _time.GetElapsedTime(_lastFullSweep) >= FullSweepInterval)
            {
                _lastFullSweep = _time.GetTimestamp();
                SweepLocked(TimeSpan.Zero);
            }
            if (_count >= Config.MaxPartitions)
            {
                Overflowing = true;
                return _overflow ??= Create();
            }
            limiter = Create();
            _partitions[key] = limiter;
            _count++;
            return limiter;
        }
    }

    private RateLimiter Create()
    {
        var order = Config.NewestFirst ? QueueProcessingOrder.NewestFirst : QueueProcessingOrder.OldestFirst;
        // AutoReplenishment off: one heartbeat per policy replenishes every partition, instead of a timer per partition.
        return Config.Kind switch
        {
            RateLimiterKind.TokenBucket => new TokenBucketRateLimiter(new TokenBucketRateLimiterOptions
            {
                TokenLimit = Config.Limit,
                TokensPerPeriod = Config.TokensPerPeriod,
                ReplenishmentPeriod = Config.Period,
                QueueLimit = Config.QueueLimit,
                QueueProcessingOrder = order,
                AutoReplenishment = false,
            }),
            RateLimiterKind.FixedWindow => new FixedWindowRateLimiter(new FixedWindowRateLimiterOptions
            {
                PermitLimit = Config.Limit,
                Window = Config.Period,
                QueueLimit = Config.QueueLimit,
                QueueProcessingOrder = order,
                AutoReplenishment = false,
            }),
            RateLimiterKind.SlidingWindow => new SlidingWindowRateLimiter(new SlidingWindowRateLimiterOptions
            {
                PermitLimit = Config.Limit,
                Window = Config.Period,
                SegmentsPerWindow = Config.SegmentsPerWindow,
                QueueLimit = Config.QueueLimit,
                QueueProcessingOrder = order,
                AutoReplenishment = false,
            }),
            _ => new ConcurrencyLimiter(new ConcurrencyLimiterOptions
            {
                PermitLimit = Config.Limit,
                QueueLimit = Config.QueueLimit,
                QueueProcessingOrder = order,
            }),
        };
    }

    // Each limiter replenishes only once its period has elapsed by its own clock, whatever the heartbeat's timing.
    internal void Tick()
    {
        if (_disposed)
        {
            return;
        }
        if (Config.Kind != RateLimiterKind.Concurrency)
        {
            foreach (var (_, limiter) in _partitions)
            {
                ((ReplenishingRateLimiter)limiter).TryReplenish();
            }
            (_overflow as ReplenishingRateLimiter)?.TryReplenish();
        }
        if (++_ticks % (int)(IdleTimeout / Heartbeat) == 0)
        {
            lock (_lock)
            {
                SweepLocked(IdleTimeout);
                if (_count < Config.MaxPartitions && _overflow?.IdleDuration is not null)
                {
                    Overflowing = false;
                    _overflow = null;
                    Volatile.Write(ref _overflowReported, 0);
                }
            }
        }
    }

    // A request may still hold a partition it looked up just before the sweep dropped it, and take its permit from
    // the dropped limiter: at most one request per such race escapes its new partition's count. Dropped limiters are
    // not disposed for that reason; with AutoReplenishment off they own no timer and the GC collects them.
    private void SweepLocked(TimeSpan idleFor)
    {
        foreach (var (key, limiter) in _partitions)
        {
            if (limiter.IdleDuration is { } idle && idle >= idleFor && _partitions.TryRemove(new KeyValuePair<string, RateLimiter>(key, limiter)))
            {
                _count--;
            }
        }
    }

    // What a request gets from a policy whose configuration was replaced or is shutting down: its limits no longer apply.
    private sealed class Unlimited : RateLimitLease
    {
        public static readonly Unlimited Lease = new();

        public override bool IsAcquired => true;

        public override IEnumerable<string> MetadataNames => [];

        public override bool TryGetMetadata(string metadataName, out object? metadata)
        {
            metadata = null;
            return false;
        }

        protected override void Dispose(bool disposing)
        {
        }
    }

    public void Dispose()
    {
        lock (_lock)
        {
            if (_disposed)
            {
                return;
            }
            _disposed = true;
        }
        _timer.Dispose();
        // Requests still queued are refused (429) rather than left waiting for a heartbeat that no longer comes.
        foreach (var (_, limiter) in _partitions)
        {
            limiter.Dispose();
        }
        _overflow?.Dispose();
    }
}
