using System.Net;
using Ferry.Configuration;
using Ferry.Health;
using Ferry.Upstream;

namespace Ferry.Model;

// Live state of one destination: its pool, its load and its availability.
internal sealed class DestinationState
{
    private int _inFlight;          // requests currently using this destination (attempts, not connections)
    private long _replays;          // requests sent again after a keep-alive race on a reused connection

    public DestinationState(ClusterState cluster, DestinationConfig config, ConnectionPool.Factory poolFactory, TimeProvider time,
        DestinationResolver.Resolve? resolve = null)
    {
        _cluster = cluster;
        _config = config;
        var health = cluster.Config.HealthCheck;
        Health = new DestinationHealth(health.Passive, health.Active, cluster.Config.SlowStart, time);
        Authority = config.Authority;
        NextHop = Authority.Contains(':', StringComparison.Ordinal) ? Authority : $"{Authority}:{config.Port}";
        if (IPAddress.TryParse(config.Host, out var ip))
        {
            EndPoint = new IPEndPoint(ip, config.Port);
        }
        else
        {
            EndPoint = new DnsEndPoint(config.Host, config.Port);
            Resolver = new DestinationResolver(config.Host, config.Port, cluster.Config.Dns.RefreshInterval, cluster.Config.Timeouts.Connect,
                resolve ?? DestinationResolver.Default, time);
        }
        if (config.IsHttps)
        {
            Tls = new UpstreamTls(cluster.Config.Tls, config.Host, config.ServerName);
        }
        Pool = poolFactory(this);
        if (Resolver is not null)
        {
            Resolver.Changed = Pool.RetireGoneAddresses;
        }
    }

    // The Host header sent when the client's is not preserved, read for every request: Uri.Authority builds a new
    // string on every call.
    public string Authority { get; }

    // For a destination given by host name: its addresses, resolved again periodically; null for an IP address.
    public DestinationResolver? Resolver { get; }

    // For an https destination: the handshake every new connection makes; null for http.
    public UpstreamTls? Tls { get; }

    // Both replaced when a reload keeps this destination (Adopt): the cluster it now belongs to, and its configuration,
    // which may differ from the previous one in what DestinationReuse allows (weight, backup).
    public ClusterState Cluster { get => Volatile.Read(ref _cluster); private set => Volatile.Write(ref _cluster, value); }
    public DestinationConfig Config { get => Volatile.Read(ref _config); private set => Volatile.Write(ref _config, value); }

    private ClusterState _cluster;
    private DestinationConfig _config;

    // A reload kept this destination: it moves to the new cluster state with its pool, health and learned limits.
    // Requests in flight on the previous state see the new weight too; they only read it to pick a retry.
    public DestinationState Adopt(ClusterState cluster, DestinationConfig config)
    {
        Cluster = cluster;
        Config = config;
        return this;
    }
    public string Id => Config.DestinationId;
    public EndPoint EndPoint { get; }
    public ConnectionPool Pool { get; }

    // "host:port" as shown in Proxy-Status next-hop and logs.
    public string NextHop { get; }

    public int InFlight => Volatile.Read(ref _inFlight);

    public long Replays => Interlocked.Read(ref _replays);

    public void CountReplay() => Interlocked.Increment(ref _replays);

    // Smooth weighted round robin's running weight; guarded by the cluster balancer's lock.
    internal long CurrentWeight;

    public DestinationHealth Health { get; }

    public bool IsAvailable => Health.IsAvailable;

    // What the balancer asks: also true for an ejected destination whose trial request is due (Health/DestinationHealth).
    public bool IsCandidate => Health.IsCandidate;

    public string HealthReason => Health.Reason;

    // The weight weighted policies use: the configured one, scaled down while the destination slow-starts. In
    // hundredths, so that a ramp has steps even for weight 1.
    public long EffectiveWeight => Math.Max(1, (long)Math.Round(Config.Weight * 100 * Health.SlowStartFactor()));

    public void ReportConnectFailure(string details = "connect failed") => Health.ReportFailure(details);

    public void ReportSuccess() => Health.ReportSuccess();

    public void EnterRequest()
    {
        Interlocked.Increment(ref _inFlight);
        Health.OnRequestStarted();
    }

    public void LeaveRequest() => Interlocked.Decrement(ref _inFlight);
}
