using Ferry.Lab;

namespace Ferry.Incidents;

/// <summary>A classic production incident: a misbehaving upstream, the load that makes proxies fail in front of it,
/// and the one-way network delay between proxy and upstream it needs to show (zero: straight over loopback).</summary>
internal sealed record Incident(string Name, string Description, LabUpstreamOptions Upstream, LoadShape Load, TimeSpan DefaultLatency = default)
{
    /// <summary>Also run Ferry with its adaptive concurrency limit switched off: the incident is the one it answers.</summary>
    public bool CompareAdaptiveLimit { get; init; }

    /// <summary>gunicorn's default keepalive: the shortest common server idle timeout, and the classic race.</summary>
    private static readonly TimeSpan ShortIdle = TimeSpan.FromSeconds(2);

    public static IReadOnlyList<Incident> All { get; } =
    [
        new("keepalive-race",
            "the upstream closes idle connections after 2 s without announcing it; bursts arrive every ~2 s, so the proxy reuses connections just as they close",
            new LabUpstreamOptions { Name = "keepalive-race", IdleTimeout = ShortIdle },
            // Waves every 2 s, each connection's burst within ±40 ms of it: the bursts overlap, so the proxy keeps many
            // upstream connections busy together and reuses them ~2 s later, some right at the moment the upstream closes
            // (with ±100 ms the bursts spread out, the proxy serves them on fewer connections, and races are rarer). Half the requests are POSTs:
            // nginx replays a failed cached connection only for idempotent methods (proxy_next_upstream, since 1.9.13),
            // so the race shows as 502s on POSTs.
            new LoadShape(Connections: 32, BurstRequests: 4, Pause: ShortIdle, Jitter: 0.02, PostShare: 0.5, Waves: true),
            // On loopback the FIN arrives within microseconds and a proxy watching its idle connections almost never
            // loses the race; on a LAN it travels 0.1–2 ms.
            DefaultLatency: TimeSpan.FromMilliseconds(1)),
        new("max-requests",
            "the upstream closes every connection after 100 requests without Connection: close (silent close)",
            new LabUpstreamOptions { Name = "max-requests", MaxRequestsPerConnection = 100, AnnounceLastRequest = false },
            // Two busy connections: each upstream connection reaches its 100th request within the first few hundred.
            new LoadShape(Connections: 2, BurstRequests: 50, Pause: TimeSpan.FromMilliseconds(20), Jitter: 0.5)),
        new("backlog",
            "a single-threaded upstream (one request at a time, 20 ms each, no keep-alive, like a gunicorn sync worker) with a listen backlog of 1; bursts of 16 concurrent requests overflow it",
            new LabUpstreamOptions
            {
                Name = "backlog", Backlog = 1, MaxConcurrentRequests = 1, HandlerDelay = TimeSpan.FromMilliseconds(20), KeepAlive = false,
            },
            new LoadShape(Connections: 16, BurstRequests: 1, Pause: TimeSpan.FromMilliseconds(500), Jitter: 0.2))
        {
            CompareAdaptiveLimit = true,
        },
    ];

    public static Incident? Find(string name) => All.FirstOrDefault(i => i.Name.Equals(name, StringComparison.OrdinalIgnoreCase));
}
