using Ferry.Configuration;
using Ferry.RateLimiting;
using Ferry.Routing;
using Ferry.Upstream;

namespace Ferry.Model;

// Everything a request needs, built once from a FerryConfig. Immutable apart from the live state it points to.
internal sealed class ProxyState : IAsyncDisposable
{
    private ProxyState(FerryConfig config, IReadOnlyDictionary<string, ClusterState> clusters, RouteTable routes,
        IReadOnlyDictionary<string, RateLimiterPolicy> rateLimiters)
    {
        Config = config;
        Clusters = clusters;
        Routes = routes;
        RateLimiters = rateLimiters;
    }

    public FerryConfig Config { get; }
    public IReadOnlyDictionary<string, ClusterState> Clusters { get; }
    public RouteTable Routes { get; }
    public IReadOnlyDictionary<string, RateLimiterPolicy> RateLimiters { get; }

    public static ProxyState Build(FerryConfig config, ConnectionPool.Factory poolFactory, TimeProvider time, DestinationResolver.Resolve? resolve = null)
    {
        var clusters = new Dictionary<string, ClusterState>(StringComparer.OrdinalIgnoreCase);
        foreach (var (id, cluster) in config.Clusters)
        {
            clusters[id] = new ClusterState(cluster, poolFactory, time, resolve);
        }
        // Only the policies some route names: an unused one would run its heartbeat for nothing.
        var rateLimiters = new Dictionary<string, RateLimiterPolicy>(StringComparer.OrdinalIgnoreCase);
        foreach (var route in config.Routes)
        {
            if (route.RateLimiterPolicy is { } name && !rateLimiters.ContainsKey(name))
            {
                rateLimiters[name] = new RateLimiterPolicy(config.RateLimiterPolicies[name], time);
            }
        }
        return new ProxyState(config, clusters, new RouteTable(config.Routes, clusters, rateLimiters), rateLimiters);
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var policy in RateLimiters.Values)
        {
            policy.Dispose();
        }
        foreach (var cluster in Clusters.Values)
        {
            await cluster.DisposeAsync();
        }
    }
}
