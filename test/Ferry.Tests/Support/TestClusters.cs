using Ferry.Configuration;
using Ferry.Model;
using Ferry.Upstream;

namespace Ferry.Tests.Support;

// Cluster state built from configuration records, without sockets: pools exist but nothing connects.
internal static class TestClusters
{
    public static ClusterState Build(TimeProvider time, IEnumerable<(string Id, int Weight, bool Backup)> destinations,
        Func<ClusterConfig, ClusterConfig>? configure = null)
    {
        var list = destinations.Select((d, i) =>
        {
            var uri = new Uri($"http://127.0.0.1:{10000 + i}/");
            return new DestinationConfig(d.Id, uri, "127.0.0.1", uri.Port, d.Weight, d.Backup);
        }).ToArray();
        var config = ClusterConfig.WithDefaults("c", list);
        config = configure?.Invoke(config) ?? config;
        return new ClusterState(config, d => new ConnectionPool(d, config.KeepAlive, config.Timeouts.Connect, time), time);
    }

    public static ClusterState Build(TimeProvider time, params string[] ids) =>
        Build(time, ids.Select(id => (id, 1, false)));
}
