namespace Ferry.Configuration;

/// <summary>The algorithms of System.Threading.RateLimiting, by the names ASP.NET Core's AddXxxLimiter methods use.</summary>
internal enum RateLimiterKind
{
    TokenBucket,
    FixedWindow,
    SlidingWindow,
    Concurrency,
}

/// <summary>What divides a policy's requests into partitions, each with its own budget.</summary>
internal enum RateLimiterKey
{
    ClientIp, // the client address Ferry uses everywhere (after TrustedProxies and the PROXY protocol)
    Header,   // the first value of the request header Name; requests without it share one partition
    Route,    // one budget per route that names the policy
}

/// <summary>
/// One entry of the root RateLimiterPolicies section. Option names are those of ASP.NET Core's
/// TokenBucketRateLimiterOptions, FixedWindowRateLimiterOptions, SlidingWindowRateLimiterOptions and
/// ConcurrencyLimiterOptions; <see cref="Limit"/> is TokenLimit for a token bucket and PermitLimit otherwise, and
/// <see cref="Period"/> is ReplenishmentPeriod for a token bucket and Window for the windows. Routes that name the
/// same policy share its partitions, as nginx locations that name the same limit_req zone share its states.
/// </summary>
internal sealed record RateLimiterPolicyConfig(string Name, RateLimiterKind Kind, int Limit)
{
    // Replenishment and windows advance on a 100 ms heartbeat (ASP.NET Core's partitioned limiter ticks at the same
    // rate): a shorter period could not be honoured. The token bucket refills in proportion to the time elapsed, so
    // 100 requests per second is TokensPerPeriod 10 per 100ms without loss.
    public static readonly TimeSpan MinPeriod = TimeSpan.FromMilliseconds(100);

    // Each partition costs 200 to 320 bytes of limiter, plus its key and its dictionary entry: 100 000 partitions are
    // a few tens of MB at most (docs/decisions/2026-12-02-rate-limits.md has the measured figure). nginx's 10m zone
    // holds about 160 000 $binary_remote_addr states.
    public const int DefaultMaxPartitions = 100_000;

    public RateLimiterKey Key { get; init; } = RateLimiterKey.ClientIp;

    // The header's name when Key is Header.
    public string? HeaderName { get; init; }

    public int TokensPerPeriod { get; init; }

    public TimeSpan Period { get; init; }

    public int SegmentsPerWindow { get; init; } = 1;

    public int QueueLimit { get; init; }

    public bool NewestFirst { get; init; }

    public int MaxPartitions { get; init; } = DefaultMaxPartitions;

    /// <summary>How the key reads in logs and error details: "ClientIp", "Route", "Header X-Api-Key".</summary>
    public string KeyDescription => Key == RateLimiterKey.Header ? $"Header {HeaderName}" : Key.ToString();
}
