using Ferry.Configuration;
using Ferry.Model;
using Ferry.Tests.Support;
using Microsoft.Extensions.Time.Testing;

namespace Ferry.Tests.LoadBalancing;

public sealed class ConsistentHashTests
{
    private const int Keys = 20_000;

    private static ClusterState Cluster(params (string Id, int Weight)[] destinations) =>
        TestClusters.Build(new FakeTimeProvider(), destinations.Select(d => (d.Id, d.Weight, false)),
            c => c with { LoadBalancingPolicy = LoadBalancingPolicies.ConsistentHash });

    private static string[] Assign(ClusterState cluster) =>
        Enumerable.Range(0, Keys).Select(i => cluster.Balancer.Pick(null, $"user-{i}", true).Destination!.Id).ToArray();

    [Fact]
    public void SameKey_SameDestination()
    {
        var first = Assign(Cluster(("a", 1), ("b", 1), ("c", 1)));
        var second = Assign(Cluster(("a", 1), ("b", 1), ("c", 1)));

        Assert.Equal(first, second);
    }

    [Fact]
    public void AddingADestination_MovesAboutOneNthOfTheKeys_AllToIt()
    {
        var before = Assign(Cluster(("a", 1), ("b", 1), ("c", 1), ("d", 1)));
        var after = Assign(Cluster(("a", 1), ("b", 1), ("c", 1), ("d", 1), ("e", 1)));

        var moved = Enumerable.Range(0, Keys).Where(i => before[i] != after[i]).ToArray();

        // Ideal: 1/5 of the keys. Virtual nodes keep it within a few percent.
        Assert.InRange(moved.Length / (double)Keys, 0.16, 0.24);
        Assert.All(moved, i => Assert.Equal("e", after[i]));
    }

    [Fact]
    public void ADestinationOutOfRotation_HandsOnlyItsOwnKeysOver()
    {
        var cluster = Cluster(("a", 1), ("b", 1), ("c", 1), ("d", 1));
        var before = Assign(cluster);
        cluster.Destinations.Single(d => d.Id == "b").ReportConnectFailure();

        var after = Assign(cluster);

        for (var i = 0; i < Keys; i++)
        {
            if (before[i] != "b")
            {
                Assert.Equal(before[i], after[i]);
            }
            else
            {
                Assert.NotEqual("b", after[i]);
            }
        }
    }

    [Fact]
    public void Weights_AreRespected()
    {
        var counts = Assign(Cluster(("a", 2), ("b", 1), ("c", 1))).GroupBy(id => id).ToDictionary(g => g.Key, g => g.Count());

        Assert.InRange(counts["a"] / (double)Keys, 0.45, 0.55);
        Assert.InRange(counts["b"] / (double)Keys, 0.20, 0.30);
        Assert.InRange(counts["c"] / (double)Keys, 0.20, 0.30);
    }
}
