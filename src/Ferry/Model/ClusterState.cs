using Ferry.Configuration;
using Ferry.Http1;
using Ferry.LoadBalancing;
using Ferry.Upstream;

namespace Ferry.Model;

internal sealed class ClusterState
{
    public ClusterState(ClusterConfig config, ConnectionPool.Factory poolFactory, TimeProvider time)
    {
        Config = config;
        Limits = new Http1Limits
        {
            MaxResponseHeaderBytes = config.Limits.MaxResponseHeaderBytes,
            MaxResponseHeaderCount = config.Limits.MaxResponseHeaderCount,
        };
        Destinations = config.Destinations.Select(d => new DestinationState(this, d, poolFactory, time)).ToArray();
        Balancer = new RoundRobinPolicy(Destinations);
    }

    public ClusterConfig Config { get; }
    public string Id => Config.ClusterId;
    public Http1Limits Limits { get; }
    public IReadOnlyList<DestinationState> Destinations { get; }
    public RoundRobinPolicy Balancer { get; }
}
