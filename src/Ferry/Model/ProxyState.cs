using Ferry.Configuration;
using Ferry.Routing;
using Ferry.Upstream;

namespace Ferry.Model;

// Everything a request needs, built once from a FerryConfig. Immutable apart from the live state it points to.
internal sealed class ProxyState : IAsyncDisposable
{
    private ProxyState(FerryConfig config, IReadOnlyDictionary<string, ClusterState> clusters, RouteTable routes)
    {
        Config = config;
        Clusters = clusters;
        Routes = routes;
    }

    public FerryConfig Config { get; }
    public IReadOnlyDictionary<string, ClusterState> Clusters { get; }
    public RouteTable Routes { get; }

    public static ProxyState Build(FerryConfig config, ConnectionPool.Factory poolFactory, TimeProvider time, DestinationResolver.Resolve? resolve = null)
    {
        var clusters = new Dictionary<string, ClusterState>(StringComparer.OrdinalIgnoreCase);
        foreach (var (id, cluster) in config.Clusters)
        {
            clusters[id] = new ClusterState(cluster, poolFactory, time, resolve);
        }
        return new ProxyState(config, clusters, new RouteTable(config.Routes, clusters));
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var cluster in Clusters.Values)
        {
            await cluster.DisposeAsync();
        }
    }
}
