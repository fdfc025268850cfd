using Ferry.Configuration;
using Ferry.Tests.Support;
using Microsoft.Extensions.Time.Testing;

namespace Ferry.Tests.LoadBalancing;

public sealed class ClusterBalancerTests
{
    [Fact]
    public void Backups_OnlyWhenNoPrimaryIsInRotation()
    {
        var clock = new FakeTimeProvider();
        var cluster = TestClusters.Build(clock, [("a", 1, false), ("b", 1, false), ("standby", 1, true)]);
        var (a, b, standby) = (cluster.Destinations[0], cluster.Destinations[1], cluster.Destinations[2]);

        Assert.DoesNotContain(Enumerable.Range(0, 10).Select(_ => cluster.Balancer.Pick(null, null, true).Destination), d => d == standby);

        a.ReportConnectFailure();
        b.ReportConnectFailure();
        var pick = cluster.Balancer.Pick(null, null, true);

        Assert.Same(standby, pick.Destination);
        Assert.False(pick.Panic);
    }

    [Fact]
    public void EverythingOutOfRotation_PanicRoutesToThemAnyway()
    {
        var clock = new FakeTimeProvider();
        var cluster = TestClusters.Build(clock, [("a", 1, false), ("b", 1, false), ("standby", 1, true)]);
        foreach (var d in cluster.Destinations)
        {
            d.ReportConnectFailure();
        }

        var picks = Enumerable.Range(0, 4).Select(_ => cluster.Balancer.Pick(null, null, panicAllowed: true)).ToArray();

        Assert.All(picks, p => Assert.True(p.Panic));
        // Primaries first, as without panic.
        Assert.Equal(["a", "b", "a", "b"], picks.Select(p => p.Destination!.Id));
        Assert.Equal("standby", cluster.Balancer.Pick([cluster.Destinations[0], cluster.Destinations[1]], null, true).Destination!.Id);
    }

    [Fact]
    public void PanicDisabled_NobodyIsPicked()
    {
        var clock = new FakeTimeProvider();
        var cluster = TestClusters.Build(clock, "a", "b");
        foreach (var d in cluster.Destinations)
        {
            d.ReportConnectFailure();
        }

        var pick = cluster.Balancer.Pick(null, null, panicAllowed: false);

        Assert.Null(pick.Destination);
        Assert.True(pick.Panic);
    }

    [Fact]
    public void TriedDestinations_AreNeverPickedAgain()
    {
        var clock = new FakeTimeProvider();
        var cluster = TestClusters.Build(clock, "a", "b", "c");
        var tried = new List<Ferry.Model.DestinationState>();

        for (var i = 0; i < 3; i++)
        {
            var pick = cluster.Balancer.Pick(tried, null, true).Destination!;
            Assert.DoesNotContain(pick, tried);
            tried.Add(pick);
        }

        Assert.Null(cluster.Balancer.Pick(tried, null, true).Destination);
    }

    [Theory]
    [InlineData(LoadBalancingPolicies.RoundRobin)]
    [InlineData(LoadBalancingPolicies.LeastRequests)]
    [InlineData(LoadBalancingPolicies.PowerOfTwoChoices)]
    [InlineData(LoadBalancingPolicies.Random)]
    [InlineData(LoadBalancingPolicies.ConsistentHash)]
    public void EveryPolicy_AvoidsADestinationOutOfRotation(string policy)
    {
        var clock = new FakeTimeProvider();
        var cluster = TestClusters.Build(clock, [("a", 1, false), ("b", 1, false)], c => c with { LoadBalancingPolicy = policy });
        cluster.Destinations[0].ReportConnectFailure();

        for (var i = 0; i < 50; i++)
        {
            Assert.Equal("b", cluster.Balancer.Pick(null, $"key{i}", true).Destination!.Id);
        }
    }
}
