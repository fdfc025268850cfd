using Ferry.Lab;

namespace Ferry.Incidents;

/// <summary>A classic production incident: a misbehaving upstream and the load that makes proxies fail in front of it.</summary>
internal sealed record Incident(string Name, string Description, LabUpstreamOptions Upstream, LoadShape Load)
{
    /// <summary>gunicorn's default keepalive: the shortest common server idle timeout, and the classic race.</summary>
    private static readonly TimeSpan ShortIdle = TimeSpan.FromSeconds(2);

    public static IReadOnlyList<Incident> All { get; } =
    [
        new("keepalive-race",
            "the upstream closes idle connections after 2 s without announcing it; bursts arrive every ~2 s, so the proxy reuses connections just as they close",
            new LabUpstreamOptions { Name = "keepalive-race", IdleTimeout = ShortIdle },
            // Pauses jittered ±10 % around the idle timeout put some reuses right at the moment the upstream closes.
            new LoadShape(Connections: 8, BurstRequests: 4, Pause: ShortIdle, Jitter: 0.1)),
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
            new LoadShape(Connections: 16, BurstRequests: 1, Pause: TimeSpan.FromMilliseconds(500), Jitter: 0.2)),
    ];

    public static Incident? Find(string name) => All.FirstOrDefault(i => i.Name.Equals(name, StringComparison.OrdinalIgnoreCase));
}
