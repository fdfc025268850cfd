namespace Ferry.Configuration;

/// <summary>Clusters:&lt;id&gt;:HealthCheck — how a destination leaves and rejoins the rotation (docs/health.md).</summary>
internal sealed record HealthCheckConfig(PassiveHealthConfig Passive, ActiveHealthConfig Active)
{
    public static HealthCheckConfig Default { get; } = new(PassiveHealthConfig.Default, ActiveHealthConfig.Default);
}

/// <summary>
/// Passive health, with nginx's max_fails/fail_timeout semantics: <see cref="MaxFailures"/> consecutive failures that
/// are the destination's fault, within <see cref="FailureWindow"/>, take it out of rotation for
/// <see cref="ReactivationPeriod"/>. <see cref="FailureStatuses"/>: upstream statuses that also count (none by default).
/// </summary>
internal sealed record PassiveHealthConfig(
    bool Enabled, int MaxFailures, TimeSpan FailureWindow, TimeSpan ReactivationPeriod, IReadOnlyList<int> FailureStatuses)
{
    // nginx's defaults (max_fails=1, fail_timeout=10s, which is both the window and the time out of rotation). One
    // failure is enough because Ferry only counts failures that are the destination's own (never a client abort, a
    // local port shortage or a keep-alive race) and because panic keeps an all-down cluster routing.
    public static PassiveHealthConfig Default { get; } = new(
        Enabled: true, MaxFailures: 1, FailureWindow: TimeSpan.FromSeconds(10), ReactivationPeriod: TimeSpan.FromSeconds(10), FailureStatuses: []);
}

/// <summary>
/// Active HTTP checks on connections of their own. A destination turns unhealthy after <see cref="Fall"/> failed checks
/// in a row and healthy again after <see cref="Rise"/> passed ones (HAProxy's rise/fall).
/// </summary>
internal sealed record ActiveHealthConfig(
    bool Enabled, TimeSpan Interval, TimeSpan Timeout, string Method, string Path, IReadOnlyList<StatusRange> ExpectedStatuses,
    int Rise, int Fall, double Jitter)
{
    // Interval 5 s, Timeout 2 s, Rise 2, Fall 3: HAProxy's inter 2 s / rise 2 / fall 3 and Envoy's typical 5 s
    // interval. Expected 200-399: HAProxy's httpchk accepts 2xx and 3xx. Jitter 0.2: each wait is drawn from
    // [interval × 0.8, interval × 1.2] so that a fleet of proxies restarted together does not probe in lockstep.
    public static ActiveHealthConfig Default { get; } = new(
        Enabled: false, Interval: TimeSpan.FromSeconds(5), Timeout: TimeSpan.FromSeconds(2), Method: "GET", Path: "/",
        ExpectedStatuses: [new StatusRange(200, 399)], Rise: 2, Fall: 3, Jitter: 0.2);

    public bool Expects(int status) => ExpectedStatuses.Any(r => r.Contains(status));
}

internal readonly record struct StatusRange(int From, int To)
{
    public bool Contains(int status) => status >= From && status <= To;

    public override string ToString() => From == To ? $"{From}" : $"{From}-{To}";
}

/// <summary>When every primary and backup destination is out of rotation.</summary>
internal sealed record PanicConfig(bool Enabled)
{
    // Enabled: route to them anyway (Envoy's panic threshold, HAProxy's behaviour with all servers down and no backup),
    // because answering everyone "no live upstreams" is the collapse this proxy exists to avoid.
    public static PanicConfig Default { get; } = new(Enabled: true);
}

/// <summary>
/// Per destination: at most <see cref="MaxConnections"/> connections in use at once (0 = no hard cap), and with
/// <see cref="Adaptive"/> at most as many as the destination serves before its latency rises; further requests wait in a
/// FIFO queue of <see cref="QueueSize"/> for at most <see cref="QueueTimeout"/>.
/// </summary>
internal sealed record ConnectionLimitConfig(int MaxConnections, int QueueSize, TimeSpan QueueTimeout)
{
    // No hard cap by default: only the operator knows a backend's capacity; the adaptive limit finds it instead.
    // QueueSize 1000 and QueueTimeout 10 s: nginx plus's `queue` directive has no default size, and its timeout defaults
    // to 60 s, too long for an interactive client; 10 s matches the connect timeout, the longest a request otherwise
    // waits for a connection.
    public static ConnectionLimitConfig Default { get; } = new(MaxConnections: 0, QueueSize: 1000, QueueTimeout: TimeSpan.FromSeconds(10));

    public AdaptiveLimitConfig Adaptive { get; init; } = AdaptiveLimitConfig.Default;

    // Whether requests take a slot at all: with neither limit, the queue is never used.
    public bool Limited => MaxConnections > 0 || Adaptive.Enabled;

    // The adaptive limit's ceiling: MaxConnections when it is lower.
    public int AdaptiveMax => MaxConnections > 0 ? Math.Min(MaxConnections, Adaptive.Max) : Adaptive.Max;
}

/// <summary>The adaptive concurrency limit per destination (ConcurrencyLimit): on by default (its queue sheds on a
/// standing queue, not on a cold start's burst), between <see cref="Min"/> and <see cref="Max"/>, starting at <see cref="Initial"/>.</summary>
internal sealed record AdaptiveLimitConfig(bool Enabled, int Min, int Max, int Initial)
{
    // Initial 1: the first latencies are then the unqueued ones, the baseline everything else is judged against (a
    // baseline taken at a higher concurrency may already include the backend's queue); the limit grows by half every
    // 100 ms window while latency stays at the baseline, to 64 in about a second. Max 1000: the queue's size; a
    // destination serving more than that at once is past what the limit is for. Min 1: a destination is never starved.
    public static AdaptiveLimitConfig Default { get; } = new(Enabled: true, Min: 1, Max: 1000, Initial: 1);
}

/// <summary>
/// Moving on to another destination (nginx proxy_next_upstream). Connect failures always move on; other failures
/// before any response byte (<see cref="OnErrors"/>) and responses with one of <see cref="Statuses"/> only for requests
/// that can be sent again. <see cref="Tries"/> counts destinations tried, <see cref="Timeout"/> bounds the time spent
/// (zero = no bound); keep-alive replays count in neither.
/// </summary>
internal sealed record RetryConfig(int Tries, TimeSpan Timeout, bool OnErrors, IReadOnlyList<int> Statuses)
{
    // Tries 5 and no time bound: what Ferry did before the setting existed (each connect is bounded by its timeout).
    // OnErrors true: nginx's default proxy_next_upstream "error timeout", limited to replayable requests.
    // Statuses empty: nginx's default too (http_502, http_503... must be listed); a status is the destination's
    // answer, and only the operator knows which ones another destination might answer better.
    public static RetryConfig Default { get; } = new(Tries: 5, Timeout: TimeSpan.Zero, OnErrors: true, Statuses: []);
}

internal enum HashKeyKind { ClientIp, Header, Cookie }

/// <summary>What the ConsistentHash policy hashes; requests without the header or cookie hash their client address.</summary>
internal sealed record HashConfig(HashKeyKind Key, string? Name, int VirtualNodes)
{
    // 160 virtual nodes per unit of weight: Ketama's (libketama, nginx's `hash ... consistent`) count, which keeps the
    // spread of keys per destination within a few percent.
    public static HashConfig Default { get; } = new(HashKeyKind.ClientIp, null, VirtualNodes: 160);
}
