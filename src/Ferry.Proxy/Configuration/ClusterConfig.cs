namespace Ferry.Configuration;

internal sealed record ClusterConfig(
    string ClusterId,
    IReadOnlyList<DestinationConfig> Destinations,
    string LoadBalancingPolicy,
    KeepAliveConfig KeepAlive,
    TimeoutsConfig Timeouts,
    LimitsConfig Limits,
    ForwardingConfig Forwarding,
    ReplayConfig Replay)
{
    public HealthCheckConfig HealthCheck { get; init; } = HealthCheckConfig.Default;

    // Zero: a destination that comes back takes its full share at once. nginx plus's slow_start defaults to 0 too.
    public TimeSpan SlowStart { get; init; }

    public PanicConfig Panic { get; init; } = PanicConfig.Default;
    public ConnectionLimitConfig ConnectionLimit { get; init; } = ConnectionLimitConfig.Default;
    public RetryConfig Retry { get; init; } = RetryConfig.Default;
    public HashConfig Hash { get; init; } = HashConfig.Default;

    // Local addresses new connections bind to in turn; empty: the kernel chooses. Each one is a 4-tuple space of its
    // own towards every destination address, so N of them multiply the local ports available by N.
    public IReadOnlyList<System.Net.IPAddress> SourceAddresses { get; init; } = [];

    public DnsConfig Dns { get; init; } = DnsConfig.Default;

    // Used by https destinations only.
    public TlsConfig Tls { get; init; } = TlsConfig.Default;

    /// <summary>A cluster with every setting at its default, as `ferry proxy --to` builds it.</summary>
    public static ClusterConfig WithDefaults(string clusterId, IReadOnlyList<DestinationConfig> destinations) =>
        new(clusterId, destinations, LoadBalancingPolicies.Default, KeepAliveConfig.Default, TimeoutsConfig.Default,
            LimitsConfig.Default, ForwardingConfig.Default, ReplayConfig.Default);
}

/// <summary>
/// An upstream server. <see cref="Host"/> is what to resolve or parse as an IP (IPv6 without brackets);
/// <see cref="Authority"/> is the Host header value when the client's Host is not preserved (port omitted when 80).
/// </summary>
internal sealed record DestinationConfig(string DestinationId, Uri Address, string Host, int Port, int Weight, bool Backup)
{
    public const int DefaultWeight = 1;

    public string Authority => Address.Authority;

    public bool IsHttps => Address.Scheme == Uri.UriSchemeHttps;

    // Destinations:<id>:Tls:ServerName: the name sent as SNI and checked against the certificate, when it is not the
    // host of the address (an address given as an IP, a certificate issued for another name).
    public string? ServerName { get; init; }
}

/// <summary>Policy names accepted in configuration, spelled as YARP spells them.</summary>
internal static class LoadBalancingPolicies
{
    public const string RoundRobin = "RoundRobin";
    public const string PowerOfTwoChoices = "PowerOfTwoChoices";
    public const string LeastRequests = "LeastRequests";
    public const string Random = "Random";
    public const string ConsistentHash = "ConsistentHash";

    // nginx's smooth weighted round robin: even spreading without any shared state beyond a counter per destination.
    public const string Default = RoundRobin;

    public static IReadOnlyList<string> All { get; } = [RoundRobin, PowerOfTwoChoices, LeastRequests, Random, ConsistentHash];
}

internal sealed record KeepAliveConfig(
    int MaxIdle,
    TimeSpan? IdleTimeout,
    TimeSpan AutoIdleTimeoutCap,
    int MaxRequests,
    TimeSpan MaxLifetime)
{
    // MaxIdle: idle connections kept whatever the traffic (until IdleTimeout); above it the pool follows the recent peak
    // of concurrent requests (LeaseDemand). A ceiling would repeat nginx's `keepalive N` churn: past N concurrent
    // requests every burst closes the surplus connections and opens new ones, filling the ephemeral port range with
    // TIME_WAIT.
    // IdleTimeout null = learn each destination's idle timeout (announced Keep-Alive: timeout=N, or observed idle closes).
    // AutoIdleTimeoutCap: the learned value never exceeds 60 s, nginx's default keepalive_timeout for upstreams.
    // MaxRequests 0 = unlimited: nginx's keepalive_requests 1000 exists to free nginx's own per-connection memory
    // allocations (its documentation says so); closing a healthy connection otherwise only costs a reconnect.
    // MaxLifetime 1 h: nginx's keepalive_time default; it lets DNS and load balancer changes take effect eventually.
    public static KeepAliveConfig Default { get; } = new(
        MaxIdle: 1024,
        IdleTimeout: null,
        AutoIdleTimeoutCap: TimeSpan.FromSeconds(60),
        MaxRequests: 0,
        MaxLifetime: TimeSpan.FromHours(1));
}

/// <summary>SendRequest and BodyInactivity of zero mean "no timeout"; Connect and ResponseHead are always positive.</summary>
internal sealed record TimeoutsConfig(TimeSpan Connect, TimeSpan SendRequest, TimeSpan ResponseHead, TimeSpan BodyInactivity)
{
    // Connect 10 s instead of nginx's proxy_connect_timeout 60 s: Linux retransmits a lost SYN after 1, 3 and 7 s
    // (initial RTO 1 s, doubling), so 10 s lets three retries get an answer; beyond that the destination is not taking
    // connections and the client is better served by a 504 and another destination.
    // SendRequest, ResponseHead, BodyInactivity 60 s: nginx's proxy_send_timeout and proxy_read_timeout defaults.
    public static TimeoutsConfig Default { get; } = new(
        Connect: TimeSpan.FromSeconds(10),
        SendRequest: TimeSpan.FromSeconds(60),
        ResponseHead: TimeSpan.FromSeconds(60),
        BodyInactivity: TimeSpan.FromSeconds(60));

    // Longest silence in both directions of an upgraded connection (a WebSocket) before it is closed. 60 s: nginx's
    // proxy_read_timeout, which applies to its tunnels as well. Zero: no limit.
    public TimeSpan TunnelIdle { get; init; } = TimeSpan.FromSeconds(60);
}

internal sealed record LimitsConfig(int MaxResponseHeaderBytes, int MaxResponseHeaderCount)
{
    // 64 KiB: SocketsHttpHandler's MaxResponseHeadersLength default. 100 headers: Kestrel's MaxRequestHeaderCount.
    public static LimitsConfig Default { get; } = new(MaxResponseHeaderBytes: 64 * 1024, MaxResponseHeaderCount: 100);
}

internal sealed record ForwardingConfig(bool PreserveHost, bool XForwarded)
{
    // PreserveHost: YARP's and HAProxy's default; backends building absolute URLs need the client's host.
    // XForwarded: YARP's default; without it backends see only Ferry's address.
    public static ForwardingConfig Default { get; } = new(PreserveHost: true, XForwarded: true);
}

/// <summary>When a request that failed on a reused connection before any response byte may be sent again (docs/replay.md).</summary>
internal sealed record ReplayConfig(int MaxBodySize, bool NonIdempotent)
{
    // MaxBodySize 64 KiB: request bodies up to this size are buffered so that they can be replayed; most API requests
    // fit, and 64 KiB per request in flight is a bounded cost. Larger bodies stream and are never replayed.
    // NonIdempotent false: a POST or PATCH is replayed only when Ferry can show the destination never received it
    // (Linux TCP_INFO evidence) or when the client sent an Idempotency-Key; never on a guess.
    public static ReplayConfig Default { get; } = new(MaxBodySize: 64 * 1024, NonIdempotent: false);
}

/// <summary>
/// Destinations given by host name are resolved again every <see cref="RefreshInterval"/> (from <see cref="Floor"/> to
/// <see cref="Ceiling"/>). .NET's Dns API exposes no TTL, so the interval stands in for it.
/// </summary>
internal sealed record DnsConfig(TimeSpan RefreshInterval)
{
    // 30 s: half the 60 s TTL AWS publishes for its load balancers' names, whose addresses change as they scale, so
    // a vanished address stops getting connections within one TTL; one query per destination every 30 s is nothing.
    public static DnsConfig Default { get; } = new(TimeSpan.FromSeconds(30));

    // Below 1 s the resolver would be queried faster than any record changes; above 1 h a moved backend is lost for
    // longer than KeepAlive:MaxLifetime already allows.
    public static TimeSpan Floor { get; } = TimeSpan.FromSeconds(1);
    public static TimeSpan Ceiling { get; } = TimeSpan.FromHours(1);
}

/// <summary>
/// How Ferry speaks TLS to a cluster's https destinations (Clusters:&lt;id&gt;:Tls). Everything a handshake needs from
/// files is read at load time, so an unreadable CA bundle or client certificate is a configuration error, never a 502.
/// </summary>
internal sealed record TlsConfig(
    string? ServerName,
    System.Security.Cryptography.X509Certificates.X509Certificate2Collection? TrustedCertificates,
    System.Net.Security.SslStreamCertificateContext? ClientCertificate,
    bool DangerousAcceptAnyServerCertificate)
{
    // The system trust store, SNI and name check against the destination's host, no client certificate.
    public static TlsConfig Default { get; } = new(null, null, null, false);
}
