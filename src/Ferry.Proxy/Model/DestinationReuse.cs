using Ferry.Configuration;

namespace Ferry.Model;

// When a reload keeps a destination's live state (pool and its connections, health, learned keep-alive limits,
// adaptive limit, counters) instead of starting it afresh. A destination is unchanged when it has the same cluster id
// and destination id, the same address (scheme, host, port, TLS server name), and its cluster has the same values for
// every setting the pool, the resolver, the TLS handshake and the health state are built from: KeepAlive,
// Timeouts:Connect, MaxConnections, Queue, AdaptiveLimit, SourceAddresses, Dns, Tls (for https destinations),
// HealthCheck and SlowStart. Everything else may change without touching the live state: Weight and Backup, the
// cluster's LoadBalancingPolicy, Hash, Retry, Panic, Replay, Forwarding, Limits and the other timeouts (read per
// request from the cluster's configuration), and every route setting (match, transforms, body limit).
// docs/decisions/2026-12-02-config-reload.md.
internal static class DestinationReuse
{
    public static DestinationState? Find(ClusterState before, ClusterConfig cluster, DestinationConfig destination)
    {
        foreach (var d in before.Destinations)
        {
            if (CanKeep(before.Config, d.Config, cluster, destination))
            {
                return d;
            }
        }
        return null;
    }

    public static bool CanKeep(ClusterConfig beforeCluster, DestinationConfig before, ClusterConfig cluster, DestinationConfig destination) =>
        string.Equals(beforeCluster.ClusterId, cluster.ClusterId, StringComparison.OrdinalIgnoreCase)
        && string.Equals(before.DestinationId, destination.DestinationId, StringComparison.OrdinalIgnoreCase)
        && before.Address == destination.Address
        && before.Host == destination.Host
        && before.Port == destination.Port
        && before.ServerName == destination.ServerName
        && SamePoolSettings(beforeCluster, cluster, destination.IsHttps);

    internal static bool SamePoolSettings(ClusterConfig before, ClusterConfig cluster, bool https) =>
        before.KeepAlive == cluster.KeepAlive
        && before.Timeouts.Connect == cluster.Timeouts.Connect
        && before.ConnectionLimit == cluster.ConnectionLimit
        && before.SourceAddresses.SequenceEqual(cluster.SourceAddresses)
        && before.Dns == cluster.Dns
        && before.SlowStart == cluster.SlowStart
        && SameHealth(before.HealthCheck, cluster.HealthCheck)
        && (!https || SameTls(before.Tls, cluster.Tls));

    // Records compare their lists by reference; a reload reads new lists, so they are compared by content here.
    private static bool SameHealth(HealthCheckConfig a, HealthCheckConfig b) =>
        a.Passive with { FailureStatuses = b.Passive.FailureStatuses } == b.Passive
        && a.Passive.FailureStatuses.SequenceEqual(b.Passive.FailureStatuses)
        && a.Active with { ExpectedStatuses = b.Active.ExpectedStatuses } == b.Active
        && a.Active.ExpectedStatuses.SequenceEqual(b.Active.ExpectedStatuses);

    // Certificates are read from their files on every load: equal when they are the same certificates (thumbprints).
    private static bool SameTls(TlsConfig a, TlsConfig b) =>
        a.ServerName == b.ServerName
        && a.DangerousAcceptAnyServerCertificate == b.DangerousAcceptAnyServerCertificate
        && Thumbprints(a.TrustedCertificates).SequenceEqual(Thumbprints(b.TrustedCertificates))
        && a.ClientCertificate?.TargetCertificate.Thumbprint == b.ClientCertificate?.TargetCertificate.Thumbprint;

    private static IEnumerable<string> Thumbprints(System.Security.Cryptography.X509Certificates.X509Certificate2Collection? certificates) =>
        certificates is null ? [] : certificates.Select(c => c.Thumbprint);
}
