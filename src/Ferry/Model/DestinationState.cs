using System.Net;
using Ferry.Configuration;
using Ferry.Upstream;

namespace Ferry.Model;

// Live state of one destination: its pool, its load and its availability.
internal sealed class DestinationState
{
    // How long a destination stays out of rotation after a connect failure. nginx's fail_timeout default (10 s);
    // unlike nginx, an all-down cluster still routes (panic), so this can never turn into "no live upstreams".
    internal static readonly TimeSpan FailTimeout = TimeSpan.FromSeconds(10);

    private readonly TimeProvider _time;
    private long _unavailableUntil; // TimeProvider timestamp; 0 = available
    private int _inFlight;          // requests currently using this destination (attempts, not connections)
    private long _replays;          // requests sent again after a keep-alive race on a reused connection

    public DestinationState(ClusterState cluster, DestinationConfig config, ConnectionPool.Factory poolFactory, TimeProvider time)
    {
        Cluster = cluster;
        Config = config;
        _time = time;
        NextHop = config.Address.Authority.Contains(':', StringComparison.Ordinal) ? config.Address.Authority : $"{config.Address.Authority}:{config.Port}";
        EndPoint = IPAddress.TryParse(config.Host, out var ip)
            ? new IPEndPoint(ip, config.Port)
            : new DnsEndPoint(config.Host, config.Port);
        Pool = poolFactory(this);
    }

    public ClusterState Cluster { get; }
    public DestinationConfig Config { get; }
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

    public bool IsAvailable
    {
        get
        {
            var until = Volatile.Read(ref _unavailableUntil);
            return until == 0 || _time.GetTimestamp() >= until;
        }
    }

    public string HealthReason => IsAvailable ? "ok" : "connect failed recently";

    public void ReportConnectFailure() =>
        Volatile.Write(ref _unavailableUntil, _time.GetTimestamp() + (long)(FailTimeout.TotalSeconds * _time.TimestampFrequency));

    public void ReportSuccess()
    {
        if (Volatile.Read(ref _unavailableUntil) != 0)
        {
            Volatile.Write(ref _unavailableUntil, 0);
        }
    }

    public void EnterRequest() => Interlocked.Increment(ref _inFlight);

    public void LeaveRequest() => Interlocked.Decrement(ref _inFlight);
}
