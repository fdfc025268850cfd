using System.Net;
using Ferry.Configuration;
using static Ferry.Tests.Configuration.ConfigTestJson;

namespace Ferry.Tests.Configuration;

public sealed class HealthConfigTests
{
    [Fact]
    public void Defaults_NeverFailEveryone()
    {
        var cluster = LoadValid(Minimal()).Clusters["backend"];

        Assert.True(cluster.Panic.Enabled);
        Assert.Equal(PassiveHealthConfig.Default, cluster.HealthCheck.Passive);
        Assert.False(cluster.HealthCheck.Active.Enabled);
        Assert.Equal(0, cluster.ConnectionLimit.MaxConnections);
        // The adaptive limit is on: its queue sheds on a queue that does not drain, not on a cold start's burst.
        Assert.Equal(new AdaptiveLimitConfig(Enabled: true, Min: 1, Max: 1000, Initial: 1), cluster.ConnectionLimit.Adaptive);
        Assert.True(cluster.ConnectionLimit.Limited);
        Assert.Equal(TimeSpan.Zero, cluster.SlowStart);
    }

    [Fact]
    public void EverySettingIsRead()
    {
        var cluster = LoadValid(Minimal("""
            "LoadBalancingPolicy": "consistenthash",
            "Hash": { "Key": "header", "Name": "X-User", "VirtualNodes": 50 },
            "HealthCheck": {
              "Passive": { "MaxFailures": 3, "FailureWindow": "5s", "ReactivationPeriod": "30s", "FailureStatuses": [ 502, 503 ] },
              "Active": { "Enabled": true, "Interval": "10s", "Timeout": "1s", "Method": "head", "Path": "/healthz",
                          "ExpectedStatuses": [ "200-299", "302" ], "Rise": 1, "Fall": 5, "Jitter": 0.1 }
            },
            "SlowStart": "30s",
            "Panic": { "Enabled": false },
            "MaxConnections": 8,
            "Queue": { "Size": 50, "Timeout": "2s" },
            "AdaptiveLimit": { "Enabled": true, "Min": 2, "Max": 20, "Initial": 4 },
            "Retry": { "Tries": 2, "Timeout": "15s", "OnErrors": false, "Statuses": [ 502, 503, 503 ] },
            "SourceAddresses": [ "127.0.0.1", "::1" ],
            "Dns": { "RefreshInterval": "10s" }
            """)).Clusters["backend"];

        Assert.Equal(LoadBalancingPolicies.ConsistentHash, cluster.LoadBalancingPolicy);
        Assert.Equal(new HashConfig(HashKeyKind.Header, "X-User", 50), cluster.Hash);
        Assert.Equal(3, cluster.HealthCheck.Passive.MaxFailures);
        Assert.Equal([502, 503], cluster.HealthCheck.Passive.FailureStatuses);
        var active = cluster.HealthCheck.Active;
        Assert.Equal("HEAD", active.Method);
        Assert.True(active.Expects(204) && active.Expects(302) && !active.Expects(301));
        Assert.Equal((1, 5, 0.1), (active.Rise, active.Fall, active.Jitter));
        Assert.Equal(TimeSpan.FromSeconds(30), cluster.SlowStart);
        Assert.False(cluster.Panic.Enabled);
        Assert.Equal(new ConnectionLimitConfig(8, 50, TimeSpan.FromSeconds(2)) { Adaptive = new(true, 2, 20, 4) }, cluster.ConnectionLimit);
        // MaxConnections stays the hard cap: the adaptive limit never goes above it.
        Assert.Equal(8, cluster.ConnectionLimit.AdaptiveMax);
        var retry = cluster.Retry;
        Assert.Equal((2, TimeSpan.FromSeconds(15), false), (retry.Tries, retry.Timeout, retry.OnErrors));
        Assert.Equal([502, 503], retry.Statuses);
        Assert.Equal([IPAddress.Loopback, IPAddress.IPv6Loopback], cluster.SourceAddresses);
        Assert.Equal(TimeSpan.FromSeconds(10), cluster.Dns.RefreshInterval);
    }

    [Theory]
    [InlineData("\"HealthCheck\": { \"Passive\": { \"MaxFailures\": 0 } }",
        "Clusters:backend:HealthCheck:Passive:MaxFailures: '0' must be >= 1")]
    [InlineData("\"HealthCheck\": { \"Passive\": { \"FailureStatuses\": [ 404 ] } }",
        "Clusters:backend:HealthCheck:Passive:FailureStatuses:0: '404' is not a status code from 500 to 599")]
    [InlineData("\"HealthCheck\": { \"Active\": { \"Interval\": \"1s\", \"Timeout\": \"2s\" } }",
        "Clusters:backend:HealthCheck:Active:Timeout: must not exceed Interval")]
    [InlineData("\"HealthCheck\": { \"Active\": { \"ExpectedStatuses\": [ \"399-200\" ] } }",
        "Clusters:backend:HealthCheck:Active:ExpectedStatuses:0: '399-200' is not a status code or range from 100 to 599 (e.g. 200 or 200-399)")]
    [InlineData("\"HealthCheck\": { \"Active\": { \"Jitter\": 0.9 } }",
        "Clusters:backend:HealthCheck:Active:Jitter: '0.9' must be a number between 0 and 0.5 (a fraction of Interval)")]
    [InlineData("\"MaxConnections\": -1", "Clusters:backend:MaxConnections: '-1' must be >= 0")]
    [InlineData("\"MaxConnections\": 4, \"Queue\": { \"Timeout\": \"0s\" }", "Clusters:backend:Queue:Timeout: '0s' must be greater than zero")]
    [InlineData("\"AdaptiveLimit\": { \"Min\": 10, \"Max\": 5 }", "Clusters:backend:AdaptiveLimit: Max (5) is below Min (10)")]
    [InlineData("\"AdaptiveLimit\": { \"Min\": 0 }", "Clusters:backend:AdaptiveLimit:Min: '0' must be between 1 and 100000")]
    [InlineData("\"Retry\": { \"Tries\": 0 }", "Clusters:backend:Retry:Tries: '0' must be between 1 and 100")]
    [InlineData("\"Retry\": { \"Statuses\": [ 503, 302 ] }", "Clusters:backend:Retry:Statuses:1: '302' is not a status code from 400 to 599")]
    [InlineData("\"SourceAddresses\": [ \"10.0.0.5\", \"eth0\" ]", "Clusters:backend:SourceAddresses:1: 'eth0' is not a local IP address")]
    [InlineData("\"SourceAddresses\": [ \"0.0.0.0\" ]", "Clusters:backend:SourceAddresses:0: '0.0.0.0' is not a local IP address")]
    [InlineData("\"Dns\": { \"RefreshInterval\": \"500ms\" }", "Clusters:backend:Dns:RefreshInterval: must be between 1s and 1h")]
    [InlineData("\"Dns\": { \"RefreshInterval\": \"2h\" }", "Clusters:backend:Dns:RefreshInterval: must be between 1s and 1h")]
    [InlineData("\"LoadBalancingPolicy\": \"ConsistentHash\", \"Hash\": { \"Key\": \"Cookie\" }", "Clusters:backend:Hash:Name: required when Key is Cookie")]
    [InlineData("\"LoadBalancingPolicy\": \"ConsistentHash\", \"Hash\": { \"Key\": \"Url\" }",
        "Clusters:backend:Hash:Key: 'Url' is not a hash key (ClientIp, Header, Cookie)")]
    public void Errors_NameTheirPath(string cluster, string error) =>
        Assert.Equal([error], Load(Minimal(cluster)).Errors);

    [Fact]
    public void SettingsWithoutEffect_AreWarnings()
    {
        var result = Load(Minimal("\"Queue\": { \"Size\": 10 }, \"AdaptiveLimit\": { \"Enabled\": false }, \"Hash\": { \"Key\": \"ClientIp\" }"));

        Assert.True(result.IsValid);
        Assert.Equal(
            [
                "Clusters:backend:Queue: has no effect without MaxConnections or AdaptiveLimit",
                "Clusters:backend:Hash: has no effect unless LoadBalancingPolicy is ConsistentHash",
            ],
            result.Warnings);
    }
}
