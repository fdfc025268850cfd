using Ferry.Configuration;
using Ferry.LoadBalancing;
using Ferry.Model;
using Ferry.Tests.Support;
using Microsoft.Extensions.Time.Testing;

namespace Ferry.Tests.LoadBalancing;

public sealed class PolicyTests
{
    [Fact]
    public void RoundRobin_IsSmoothAndWeighted()
    {
        var cluster = TestClusters.Build(new FakeTimeProvider(), [("a", 5, false), ("b", 1, false), ("c", 1, false)]);

        var sequence = string.Concat(Enumerable.Range(0, 7).Select(_ => cluster.Balancer.Pick(null, null, true).Destination!.Id));

        Assert.Equal("aabacaa", sequence);
    }

    [Fact]
    public void RoundRobin_GivesASlowStartingDestinationAGrowingShare()
    {
        var clock = new FakeTimeProvider();
        var cluster = TestClusters.Build(clock, [("a", 1, false), ("b", 1, false)], c => c with
        {
            SlowStart = TimeSpan.FromSeconds(100),
            HealthCheck = c.HealthCheck with { Passive = c.HealthCheck.Passive with { MaxFailures = 1, ReactivationPeriod = TimeSpan.FromSeconds(10) } },
        });
        clock.Advance(TimeSpan.FromSeconds(100));
        var b = cluster.Destinations[1];
        b.ReportConnectFailure();
        clock.Advance(TimeSpan.FromSeconds(10));

        int ShareOfB() => Enumerable.Range(0, 1000).Count(_ => cluster.Balancer.Pick(null, null, true).Destination == b);

        var early = ShareOfB();
        clock.Advance(TimeSpan.FromSeconds(50));
        var half = ShareOfB();
        clock.Advance(TimeSpan.FromSeconds(50));
        var full = ShareOfB();

        Assert.InRange(early, 85, 95);    // weight 0.1 against 1
        Assert.InRange(half, 330, 337);   // 0.5 against 1
        Assert.Equal(500, full);
    }

    [Fact]
    public void LeastRequests_PicksTheLeastLoadedPerUnitOfWeight()
    {
        var cluster = TestClusters.Build(new FakeTimeProvider(), [("a", 1, false), ("b", 2, false), ("c", 1, false)]);
        var (a, b, c) = (cluster.Destinations[0], cluster.Destinations[1], cluster.Destinations[2]);
        Load(a, 2);
        Load(b, 3);
        Load(c, 1);

        // Scores (in flight + 1) / weight: a 3, b 2, c 2 → b or c; with c at 2 requests b wins alone.
        Load(c, 1);
        Assert.Same(b, cluster.Balancer.Pick(null, null, true).Destination);
    }

    [Fact]
    public void LeastRequests_SpreadsAnIdleCluster()
    {
        var cluster = TestClusters.Build(new FakeTimeProvider(), [("a", 1, false), ("b", 1, false), ("c", 1, false)], c => c with
        {
            LoadBalancingPolicy = LoadBalancingPolicies.LeastRequests,
        });

        var picked = Enumerable.Range(0, 3).Select(_ => cluster.Balancer.Pick(null, null, true).Destination!.Id).ToHashSet();

        Assert.Equal(3, picked.Count);
    }

    [Fact]
    public void PowerOfTwoChoices_NeverPicksTheBusierOfTwo()
    {
        var cluster = TestClusters.Build(new FakeTimeProvider(), [("a", 1, false), ("b", 1, false)]);
        var policy = new PowerOfTwoChoicesPolicy(new Random(1));
        Load(cluster.Destinations[0], 5);

        for (var i = 0; i < 100; i++)
        {
            Assert.Same(cluster.Destinations[1], policy.Choose(cluster.Destinations.ToArray(), null));
        }
    }

    [Fact]
    public void Random_RespectsWeights()
    {
        var cluster = TestClusters.Build(new FakeTimeProvider(), [("a", 3, false), ("b", 1, false)]);
        var policy = new RandomPolicy(new Random(42));
        var candidates = cluster.Destinations.ToArray();

        var a = Enumerable.Range(0, 10_000).Count(_ => policy.Choose(candidates, null) == cluster.Destinations[0]);

        Assert.InRange(a, 7300, 7700);
    }

    private static void Load(DestinationState destination, int requests)
    {
        for (var i = 0; i < requests; i++)
        {
            destination.EnterRequest();
        }
    }
}
