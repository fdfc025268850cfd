using Ferry.Configuration;
using Ferry.Forwarding;
using Ferry.Hosting;
using Ferry.Model;
using Ferry.Tests.Configuration;

namespace Ferry.Tests.Model;

// Which destinations a reload keeps (pool, health, learned limits) and which it starts afresh (DestinationReuse).
public sealed class DestinationReuseTests
{
    private static ProxyState Build(string json, ProxyState? previous = null)
    {
        var result = ConfigTestJson.Load(json);
        Assert.True(result.IsValid, string.Join("\n", result.Errors));
        return ProxyState.Build(result.Config!, FerryServer.PoolFactory(TimeProvider.System), TimeProvider.System, previous: previous);
    }

    private static DestinationState A(ProxyState state) => state.Clusters["backend"].Destinations.Single(d => d.Id == "a");

    [Theory]
    [InlineData("", "", "\"Weight\": 5")]
    [InlineData("", "", "\"Backup\": false")]
    [InlineData("\"LoadBalancingPolicy\": \"LeastRequests\"", "", "")]
    [InlineData("\"Retry\": { \"Tries\": 1 }", "", "")]
    [InlineData("\"Panic\": { \"Enabled\": false }", "", "")]
    [InlineData("\"Replay\": { \"MaxBodySize\": 1024 }", "", "")]
    [InlineData("\"Forwarding\": { \"PreserveHost\": false }", "", "")]
    [InlineData("\"Limits\": { \"MaxResponseHeaderCount\": 50 }", "", "")]
    [InlineData("\"Timeouts\": { \"ResponseHead\": \"5s\", \"SendRequest\": \"5s\", \"BodyInactivity\": \"5s\" }", "", "")]
    [InlineData("", "\"Transforms\": [ { \"RequestHeader\": \"X-Env\", \"Set\": \"prod\" } ]", "")]
    [InlineData("", "\"Match\": { \"PathPrefix\": \"/api\" }", "")]
    [InlineData("\"HealthCheck\": { \"Passive\": { \"FailureStatuses\": [ 502, 503 ] } }", "", "")] // same lists as before, read again
    public void SettingsReadPerRequest_KeepTheDestination(string cluster, string route, string destination)
    {
        var baseline = cluster.Contains("FailureStatuses", StringComparison.Ordinal) ? cluster : "";
        var before = Build(ConfigTestJson.Minimal(baseline));
        var after = Build(ConfigTestJson.Minimal(cluster, route, destination), before);

        Assert.Same(A(before), A(after));
        Assert.Same(A(before).Pool, A(after).Pool);
        Assert.Same(after.Clusters["backend"], A(after).Cluster);
        Assert.Empty(before.RetiredBy(after));
    }

    [Theory]
    [InlineData("\"KeepAlive\": { \"MaxIdle\": 8 }", "")]
    [InlineData("\"Timeouts\": { \"Connect\": \"2s\" }", "")]
    [InlineData("\"MaxConnections\": 10", "")]
    [InlineData("\"Queue\": { \"Size\": 10 }", "")]
    [InlineData("\"AdaptiveLimit\": { \"Enabled\": false }", "")]
    [InlineData("\"SourceAddresses\": [ \"127.0.0.1\" ]", "")]
    [InlineData("\"Dns\": { \"RefreshInterval\": \"5s\" }", "")]
    [InlineData("\"SlowStart\": \"10s\"", "")]
    [InlineData("\"HealthCheck\": { \"Passive\": { \"MaxFailures\": 3 } }", "")]
    [InlineData("\"HealthCheck\": { \"Passive\": { \"FailureStatuses\": [ 502 ] } }", "")]
    [InlineData("\"HealthCheck\": { \"Active\": { \"Enabled\": true } }", "")]
    [InlineData("", "\"Tls\": { \"ServerName\": \"other.example\" }")]
    public void PoolOrHealthSettingsOrAddress_StartTheDestinationAfresh(string cluster, string destination)
    {
        var before = Build(ConfigTestJson.Minimal());
        var after = Build(ConfigTestJson.Minimal(cluster, destination: destination), before);

        Assert.NotSame(A(before), A(after));
        Assert.Equal([A(before)], before.RetiredBy(after));
    }

    [Fact]
    public void AnotherAddress_UnderTheSameId_IsANewDestination()
    {
        var before = Build(ConfigTestJson.Minimal());
        var after = Build(ConfigTestJson.Minimal().Replace("127.0.0.1:9000", "127.0.0.1:9001"), before);

        Assert.NotSame(A(before), A(after));
        Assert.Equal(9001, A(after).Config.Port);
    }

    [Fact]
    public void TheSameDestinationInAnotherCluster_IsANewDestination()
    {
        var before = Build(ConfigTestJson.Minimal());
        var after = Build(ConfigTestJson.Minimal().Replace("\"backend\"", "\"other\""), before);

        Assert.NotSame(A(before), after.Clusters["other"].Destinations.Single());
        Assert.Equal([A(before)], before.RetiredBy(after));
    }

    [Fact]
    public void AddedAndRemovedDestinations_LeaveTheOthersAlone()
    {
        var before = Build(ConfigTestJson.Minimal(destination: "\"Weight\": 1 } , \"b\": { \"Address\": \"http://127.0.0.1:9002\""));
        var after = Build(ConfigTestJson.Minimal(destination: "\"Weight\": 2 } , \"c\": { \"Address\": \"http://127.0.0.1:9003\""), before);

        Assert.Same(A(before), A(after));
        Assert.Equal(2, A(after).Config.Weight);
        Assert.Equal(["b"], before.RetiredBy(after).Select(d => d.Id));
        Assert.Equal(["a", "c"], after.Clusters["backend"].Destinations.Select(d => d.Id));
    }

    [Fact]
    public void Acquire_CountsRequestsOnTheStateTheyStartedWith_AcrossASwap()
    {
        var first = Build(ConfigTestJson.Minimal());
        var holder = new ProxyStateHolder(first);
        var second = Build(ConfigTestJson.Minimal(destination: "\"Weight\": 2"), first);

        var inFlight = holder.Acquire();
        Assert.Same(first, holder.Swap(second));
        var next = holder.Acquire();

        Assert.Same(first, inFlight);
        Assert.Same(second, next);
        Assert.Equal(1, first.Requests);
        inFlight.Leave();
        next.Leave();
        Assert.Equal(0, first.Requests);
        Assert.Equal(0, second.Requests);
    }

    private static string WithPolicy(string policy) =>
        ConfigTestJson.Minimal(route: "\"RateLimiterPolicy\": \"p\"").Replace("\"Listeners\":",
            $"\"RateLimiterPolicies\": {{ \"p\": {{ {policy} }} }},\n  \"Listeners\":", StringComparison.Ordinal);

    [Fact]
    public void AnUnchangedRateLimiterPolicy_KeepsItsPartitions_AChangedOneStartsAfresh()
    {
        const string policy = "\"Kind\": \"TokenBucket\", \"TokenLimit\": 10, \"TokensPerPeriod\": 1, \"ReplenishmentPeriod\": \"1s\"";
        var first = Build(WithPolicy(policy));
        var same = Build(WithPolicy(policy), first);
        var changed = Build(WithPolicy(policy.Replace("10", "20", StringComparison.Ordinal)), same);

        Assert.Same(first.RateLimiters["p"], same.RateLimiters["p"]);
        Assert.Empty(first.RateLimitersRetiredBy(same));
        Assert.NotSame(same.RateLimiters["p"], changed.RateLimiters["p"]);
        Assert.Equal([same.RateLimiters["p"]], same.RateLimitersRetiredBy(changed));
    }
}
