using Ferry.Configuration;
using Ferry.Health;
using Ferry.Http1;
using Ferry.LoadBalancing;
using Ferry.Upstream;

namespace Ferry.Model;

internal sealed class ClusterState : IAsyncDisposable
{
    private int _panicking; // 1 while the last pick found every destination out of rotation

    // `resolve`: how destinations given by host name are resolved (tests change the answer); Dns by default.
    // `reuse`: on a reload, the live state a destination takes over from the running configuration (DestinationReuse),
    // null for a new one.
    public ClusterState(ClusterConfig config, ConnectionPool.Factory poolFactory, TimeProvider time, DestinationResolver.Resolve? resolve = null,
        Func<DestinationConfig, DestinationState?>? reuse = null)
    {
        Config = config;
        Limits = new Http1Limits
        {
            MaxResponseHeaderBytes = config.Limits.MaxResponseHeaderBytes,
            MaxResponseHeaderCount = config.Limits.MaxResponseHeaderCount,
        };
        Destinations = config.Destinations.Select(d => reuse?.Invoke(d)?.Adopt(this, d) ?? new DestinationState(this, d, poolFactory, time, resolve)).ToArray();
        Balancer = new ClusterBalancer(Destinations, LoadBalancingPolicy.Create(config, Destinations));
        HealthChecker = config.HealthCheck.Active.Enabled ? new ActiveHealthChecker(this, time) : null;
    }

    public ClusterConfig Config { get; }
    public string Id => Config.ClusterId;
    public Http1Limits Limits { get; }
    public IReadOnlyList<DestinationState> Destinations { get; }
    public ClusterBalancer Balancer { get; }
    public ActiveHealthChecker? HealthChecker { get; }

    public bool Panicking => Volatile.Read(ref _panicking) != 0;

    // Records whether the latest pick was in panic; true when that changed, so that entering and leaving panic are
    // logged once each instead of once per request.
    public bool NotePanic(bool panic) => Interlocked.Exchange(ref _panicking, panic ? 1 : 0) != (panic ? 1 : 0);

    public async ValueTask StopHealthChecksAsync()
    {
        if (HealthChecker is not null)
        {
            await HealthChecker.DisposeAsync();
        }
    }

    public async ValueTask DisposeAsync()
    {
        await StopHealthChecksAsync();
        foreach (var destination in Destinations)
        {
            destination.Resolver?.Dispose();
            await destination.Pool.DisposeAsync();
        }
    }
}
