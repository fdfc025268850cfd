using Ferry.Configuration;
using Ferry.RateLimiting;
using Ferry.Routing;
using Ferry.Upstream;

namespace Ferry.Model;

// Everything a request needs, built once from a FerryConfig. Immutable apart from the live state it points to.
// A reload builds a new one that takes over the DestinationStates that did not change (DestinationReuse); the
// requests counted here started on this one and finish on it.
internal sealed class ProxyState : IAsyncDisposable
{
    private int _requests; // requests that captured this state and have not finished (ProxyStateHolder.Acquire)

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

    public int Requests => Volatile.Read(ref _requests);

    internal void Enter() => Interlocked.Increment(ref _requests);

    internal void Leave() => Interlocked.Decrement(ref _requests);

    public IEnumerable<DestinationState> Destinations => Clusters.Values.SelectMany(c => c.Destinations);

    public static ProxyState Build(FerryConfig config, ConnectionPool.Factory poolFactory, TimeProvider time, DestinationResolver.Resolve? resolve = null,
        ProxyState? previous = null)
    {
        var clusters = new Dictionary<string, ClusterState>(StringComparer.OrdinalIgnoreCase);
        foreach (var (id, cluster) in config.Clusters)
        {
            var before = previous is not null && previous.Clusters.TryGetValue(id, out var b) ? b : null;
            clusters[id] = new ClusterState(cluster, poolFactory, time, resolve,
                before is null ? null : d => DestinationReuse.Find(before, cluster, d));
        }
        // Only the policies some route names: an unused one would run its heartbeat for nothing. A policy whose settings
        // did not change keeps its partitions across a reload, as nginx keeps a limit_req zone: a reload is no reset of
        // every client's budget.
        var rateLimiters = new Dictionary<string, RateLimiterPolicy>(StringComparer.OrdinalIgnoreCase);
        foreach (var route in config.Routes)
        {
            if (route.RateLimiterPolicy is { } name && !rateLimiters.ContainsKey(name))
            {
                var policy = config.RateLimiterPolicies[name];
                rateLimiters[name] = previous?.RateLimiters.GetValueOrDefault(name) is { } running && running.Config == policy
                    ? running
                    : new RateLimiterPolicy(policy, time);
            }
        }
        return new ProxyState(config, clusters, new RouteTable(config.Routes, clusters, rateLimiters), rateLimiters);
    }

    // The destinations of this state that `next` did not take over: nothing new reaches them once `next` is current.
    public IReadOnlyList<DestinationState> RetiredBy(ProxyState next)
    {
        var kept = next.Destinations.ToHashSet();
        return Destinations.Where(d => !kept.Contains(d)).ToArray();
    }

    // The rate limiter policies of this state that `next` did not keep.
    public IReadOnlyList<RateLimiterPolicy> RateLimitersRetiredBy(ProxyState next) =>
        RateLimiters.Values.Where(p => !next.RateLimiters.Values.Contains(p)).ToArray();

    // Stops what belongs to this state alone: the active health checkers. Pools may live on in a newer state.
    public async ValueTask StopHealthChecksAsync()
    {
        foreach (var cluster in Clusters.Values)
        {
            await cluster.StopHealthChecksAsync();
        }
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
