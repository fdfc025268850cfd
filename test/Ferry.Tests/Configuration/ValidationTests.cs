using static Ferry.Tests.Configuration.ConfigTestJson;

namespace Ferry.Tests.Configuration;

public sealed class ValidationTests
{
    [Theory]
    [InlineData("\"Address\": \"htp://x\"", "Clusters:backend:Destinations:a:Address: 'htp://x' is not an http or https URI")]
    [InlineData("\"Address\": \"127.0.0.1:9000\"", "Clusters:backend:Destinations:a:Address: '127.0.0.1:9000' is not an http or https URI")]
    [InlineData("\"Address\": \"ftp://x\"", "Clusters:backend:Destinations:a:Address: 'ftp://x' is not an http or https URI")]
    [InlineData("\"Tls\": { \"ServerName\": \"10.0.0.1\" }", "Clusters:backend:Destinations:a:Tls:ServerName: '10.0.0.1' is not a DNS host name")]
    [InlineData("\"Address\": \"http://x/api\"",
        "Clusters:backend:Destinations:a:Address: 'http://x/api' has a path; a destination address is http[s]://host[:port] (path empty or '/')")]
    [InlineData("\"Address\": \"http://x/?a=1\"",
        "Clusters:backend:Destinations:a:Address: 'http://x/?a=1' has user info, a query or a fragment; a destination address is http[s]://host[:port]")]
    [InlineData("\"Address\": \"\"", "Clusters:backend:Destinations:a:Address: required")]
    [InlineData("\"Address\": { \"Host\": \"x\" }", "Clusters:backend:Destinations:a:Address: expected a value, found a section")]
    [InlineData("\"Weight\": 0", "Clusters:backend:Destinations:a:Weight: '0' must be between 1 and 1000")]
    [InlineData("\"Weight\": 1001", "Clusters:backend:Destinations:a:Weight: '1001' must be between 1 and 1000")]
    [InlineData("\"Weight\": \"heavy\"", "Clusters:backend:Destinations:a:Weight: 'heavy' is not an integer")]
    [InlineData("\"Weight\": 1.5", "Clusters:backend:Destinations:a:Weight: '1.5' is not an integer")]
    [InlineData("\"Backup\": \"yes\"", "Clusters:backend:Destinations:a:Backup: 'yes' is not a boolean (true or false)")]
    [InlineData("\"Backup\": true", "Clusters:backend:Destinations: every destination is a backup; at least one must not be")]
    public void DestinationErrors(string destination, string error)
    {
        var json = destination.StartsWith("\"Address\"", StringComparison.Ordinal)
            ? Minimal().Replace("\"Address\": \"http://127.0.0.1:9000\"", destination, StringComparison.Ordinal)
            : Minimal(destination: destination);
        AssertSingleError(json, error);
    }

    [Theory]
    [InlineData("\"LoadBalancingPolicy\": \"Fastest\"",
        "Clusters:backend:LoadBalancingPolicy: 'Fastest' is not a load balancing policy (RoundRobin, PowerOfTwoChoices, LeastRequests, Random, ConsistentHash)")]
    [InlineData("\"KeepAlive\": { \"MaxIdle\": -1 }", "Clusters:backend:KeepAlive:MaxIdle: '-1' must be >= 0")]
    [InlineData("\"KeepAlive\": { \"MaxIdle\": \"many\" }", "Clusters:backend:KeepAlive:MaxIdle: 'many' is not an integer")]
    [InlineData("\"KeepAlive\": { \"MaxRequests\": -1 }", "Clusters:backend:KeepAlive:MaxRequests: '-1' must be >= 0")]
    [InlineData("\"KeepAlive\": { \"IdleTimeout\": \"soon\" }",
        "Clusters:backend:KeepAlive:IdleTimeout: 'soon' is not a duration (e.g. 250ms, 5s, 1.5s, 2m, 1h, 00:00:05)")]
    [InlineData("\"KeepAlive\": { \"IdleTimeout\": \"-2s\" }", "Clusters:backend:KeepAlive:IdleTimeout: '-2s' must not be negative")]
    [InlineData("\"KeepAlive\": { \"AutoIdleTimeoutCap\": 0 }", "Clusters:backend:KeepAlive:AutoIdleTimeoutCap: '0' must be greater than zero")]
    [InlineData("\"KeepAlive\": { \"MaxLifetime\": \"-1h\" }", "Clusters:backend:KeepAlive:MaxLifetime: '-1h' must not be negative")]
    [InlineData("\"KeepAlive\": 5", "Clusters:backend:KeepAlive: expected a section, found the value '5'")]
    [InlineData("\"Timeouts\": { \"Connect\": \"0s\" }", "Clusters:backend:Timeouts:Connect: '0s' must be greater than zero")]
    [InlineData("\"Timeouts\": { \"ResponseHead\": 0 }", "Clusters:backend:Timeouts:ResponseHead: '0' must be greater than zero")]
    [InlineData("\"Timeouts\": { \"SendRequest\": \"-1\" }", "Clusters:backend:Timeouts:SendRequest: '-1' must not be negative")]
    [InlineData("\"Timeouts\": { \"BodyInactivity\": \"1 minute\" }",
        "Clusters:backend:Timeouts:BodyInactivity: '1 minute' is not a duration (e.g. 250ms, 5s, 1.5s, 2m, 1h, 00:00:05)")]
    [InlineData("\"Limits\": { \"MaxResponseHeaderBytes\": 0 }", "Clusters:backend:Limits:MaxResponseHeaderBytes: '0' must be >= 1")]
    [InlineData("\"Limits\": { \"MaxResponseHeaderCount\": \"x\" }", "Clusters:backend:Limits:MaxResponseHeaderCount: 'x' is not an integer")]
    [InlineData("\"Forwarding\": { \"PreserveHost\": \"1\" }", "Clusters:backend:Forwarding:PreserveHost: '1' is not a boolean (true or false)")]
    [InlineData("\"Forwarding\": { \"XForwarded\": \"no\" }", "Clusters:backend:Forwarding:XForwarded: 'no' is not a boolean (true or false)")]
    public void ClusterErrors(string cluster, string error) => AssertSingleError(Minimal(cluster: cluster), error);

    [Theory]
    [InlineData("\"Order\": \"first\"", "Routes:api:Order: 'first' is not an integer")]
    [InlineData("\"Match\": { \"Path\": \"/a\", \"PathPrefix\": \"/b\" }", "Routes:api:Match: Path and PathPrefix cannot both be set")]
    [InlineData("\"Match\": { \"Path\": \"exact\" }", "Routes:api:Match:Path: 'exact' must start with '/'")]
    [InlineData("\"Match\": { \"PathPrefix\": \"api\" }", "Routes:api:Match:PathPrefix: 'api' must start with '/'")]
    [InlineData("\"Match\": { \"Path\": \"/a?b=1\" }", "Routes:api:Match:Path: '/a?b=1' must not contain '?' or '#' (routes match the path only)")]
    [InlineData("\"Match\": { \"PathPrefix\": \"/api\" }, \"PathRemovePrefix\": \"/v2\"",
        "Routes:api:PathRemovePrefix: '/v2' is not a prefix of Match:PathPrefix '/api'")]
    [InlineData("\"Match\": { \"PathPrefix\": \"/apix\" }, \"PathRemovePrefix\": \"/api\"",
        "Routes:api:PathRemovePrefix: '/api' is not a prefix of Match:PathPrefix '/apix'")]
    [InlineData("\"Match\": { \"Path\": \"/v1/x\" }, \"PathRemovePrefix\": \"/v2\"",
        "Routes:api:PathRemovePrefix: '/v2' is not a prefix of Match:Path '/v1/x'")]
    [InlineData("\"PathRemovePrefix\": \"/api\"", "Routes:api:PathRemovePrefix: '/api' requires Match:PathPrefix (or Match:Path) starting with it")]
    [InlineData("\"Match\": { \"PathPrefix\": \"/api\" }, \"PathRemovePrefix\": \"api\"", "Routes:api:PathRemovePrefix: 'api' must start with '/'")]
    [InlineData("\"Match\": { \"PathPrefix\": \"/api\" }, \"PathRemovePrefix\": \"/\"",
        "Routes:api:PathRemovePrefix: '/' removes nothing; a prefix to remove has at least one segment")]
    [InlineData("\"Match\": { \"Hosts\": [ \"example.com:8080\" ] }",
        "Routes:api:Match:Hosts:0: 'example.com:8080' must not include a port (hosts are matched without their port)")]
    [InlineData("\"Match\": { \"Hosts\": [ \"ok.com\", \"a..com\" ] }",
        "Routes:api:Match:Hosts:1: 'a..com' is not a host name (letters, digits, '-', '.', optionally a leading '*.')")]
    [InlineData("\"Match\": { \"Hosts\": [ \"a.*.com\" ] }",
        "Routes:api:Match:Hosts:0: 'a.*.com' is not a host name (letters, digits, '-', '.', optionally a leading '*.')")]
    [InlineData("\"Match\": { \"Hosts\": [ \"\" ] }", "Routes:api:Match:Hosts:0: empty value")]
    [InlineData("\"Match\": { \"Methods\": [ \"GET\", \"GE T\" ] }", "Routes:api:Match:Methods:1: 'GE T' is not an HTTP method")]
    [InlineData("\"Match\": { \"Methods\": { \"first\": \"GET\" } }", "Routes:api:Match:Methods:first: expected a list item")]
    public void RouteErrors(string route, string error) => AssertSingleError(Minimal(route: route), error);

    [Fact]
    public void RouteMustNameACluster()
    {
        AssertSingleError(Minimal().Replace("\"ClusterId\": \"backend\"", "\"ClusterId\": \"backnd\"", StringComparison.Ordinal),
            "Routes:api:ClusterId: 'backnd' is not a cluster (did you mean 'backend'?)",
            "Clusters:backend: not used by any route");
        AssertSingleError(Minimal().Replace("\"ClusterId\": \"backend\"", "\"ClusterId\": \"payments\"", StringComparison.Ordinal),
            "Routes:api:ClusterId: 'payments' is not a cluster",
            "Clusters:backend: not used by any route");
        AssertSingleError(Minimal().Replace("\"ClusterId\": \"backend\"", "\"Order\": 1", StringComparison.Ordinal),
            "Routes:api:ClusterId: required",
            "Clusters:backend: not used by any route");
    }

    [Fact]
    public void ClusterIdIsCaseInsensitiveAndNormalized()
    {
        var config = LoadValid(Minimal().Replace("\"ClusterId\": \"backend\"", "\"ClusterId\": \"BackEnd\"", StringComparison.Ordinal));
        Assert.Equal("backend", config.Routes[0].ClusterId);
    }

    [Fact]
    public void ClusterNeedsDestinations()
    {
        AssertSingleError("""
            { "Listeners": { "l": { "Address": "127.0.0.1:1" } },
              "Routes": { "r": { "ClusterId": "c" } },
              "Clusters": { "c": { "Destinations": {}, "LoadBalancingPolicy": "Random" } } }
            """, "Clusters:c:Destinations: at least one destination is required");
        AssertSingleError("""
            { "Listeners": { "l": { "Address": "127.0.0.1:1" } },
              "Routes": { "r": { "ClusterId": "c" } },
              "Clusters": { "c": { "LoadBalancingPolicy": "Random" } } }
            """, "Clusters:c:Destinations: at least one destination is required");
    }

    [Theory]
    [InlineData("\"a\": { \"Address\": \"127.0.0.1:8080\" }, \"b\": { \"Address\": \"127.0.0.1:8080\" }",
        "Listeners:b:Address: '127.0.0.1:8080' is already used by Listeners:a:Address")]
    [InlineData("\"a\": { \"Address\": \"127.0.0.1:8080\" }, \"b\": { \"Address\": \"*:8080\" }",
        "Listeners:b:Address: '*:8080' overlaps Listeners:a:Address ('127.0.0.1:8080'): both cannot be bound")]
    [InlineData("\"a\": { \"Address\": \"127.0.0.1:9901\" }",
        "Admin:Address: '127.0.0.1:9901' is already used by Listeners:a:Address")]
    [InlineData("\"a\": { \"Address\": \"example.com:80\" }",
        "Listeners:a:Address: 'example.com:80' is not a listen address (host:port, [ipv6]:port or *:port, with an IP address host)")]
    [InlineData("\"a\": { }", "Listeners:a:Address: required")]
    [InlineData("\"a\": \"127.0.0.1:8080\"", "Listeners:a: expected a section, found the value '127.0.0.1:8080'")]
    [InlineData("\"a\": { \"Address\": \"127.0.0.1:8080\", \"ProxyProtocol\": true }",
        "Listeners:a:ProxyProtocol: requires TrustedProxies: the addresses of the load balancers that send the header")]
    [InlineData("\"a\": { \"Address\": \"127.0.0.1:8080\", \"TrustedProxies\": [ \"10.0.0.0/8\", \"lb.internal\" ] }",
        "Listeners:a:TrustedProxies:1: 'lb.internal' is not an IP address or CIDR block")]
    [InlineData("\"a\": { \"Address\": \"127.0.0.1:8080\", \"TrustedProxies\": \"10.0.0.1/8\" }",
        "Listeners:a:TrustedProxies: '10.0.0.1/8' is not a CIDR block (e.g. 10.0.0.0/8) with no bits set after the prefix")]
    [InlineData("\"a\": { \"Address\": \"127.0.0.1:8080\", \"AmbiguousPaths\": \"Forward\" }",
        "Listeners:a:AmbiguousPaths: 'Forward' is not an ambiguous path action (Reject, Normalize)")]
    public void ListenerErrors(string listeners, string error) =>
        AssertSingleError(Minimal().Replace("\"public\": { \"Address\": \"127.0.0.1:8080\" }", listeners, StringComparison.Ordinal), error);

    [Fact]
    public void PortZeroListenersDoNotConflict() =>
        LoadValid(Minimal().Replace("\"public\": { \"Address\": \"127.0.0.1:8080\" }",
            "\"a\": { \"Address\": \"127.0.0.1:0\" }, \"b\": { \"Address\": \"127.0.0.1:0\" }", StringComparison.Ordinal));

    [Fact]
    public void DisabledAdminDoesNotConflict() =>
        LoadValid(Minimal().Replace("127.0.0.1:8080", "127.0.0.1:9901", StringComparison.Ordinal)
            .Replace("\"Listeners\"", "\"Admin\": { \"Enabled\": false }, \"Listeners\"", StringComparison.Ordinal));

    [Fact]
    public void AdminErrors()
    {
        var result = Load("""{ "Admin": { "Address": "9901", "Enabled": "on" } }""");
        Assert.Equal(
            [
                "Admin:Enabled: 'on' is not a boolean (true or false)",
                "Admin:Address: '9901' is not a listen address (host:port, [ipv6]:port or *:port, with an IP address host)",
            ],
            result.Errors);
    }

    [Fact]
    public void RoutesNeedAListener()
    {
        var json = Minimal().Replace("\"public\": { \"Address\": \"127.0.0.1:8080\" }", "", StringComparison.Ordinal);
        AssertSingleError(json, "Listeners: at least one listener is required when routes are defined");
    }

    [Fact]
    public void CollectsEveryError()
    {
        var result = Load("""
            {
              "Listeners": { "a": { "Address": "nowhere" } },
              "ProxyStatus": { "IncludeDetails": "maybe" },
              "Routes": {
                "r1": { "ClusterId": "missing", "Match": { "Path": "x", "PathPrefix": "/y" } },
                "r2": { "ClusterId": "c", "Order": "last" }
              },
              "Clusters": {
                "c": {
                  "LoadBalancingPolicy": "Fastest",
                  "Destinations": { "d1": { "Address": "htp://x", "Weight": 0 }, "d2": { "Address": "https://y" } },
                  "KeepAlive": { "MaxIdle": -1, "IdleTimeout": "later" },
                  "Timeouts": { "Connect": 0 }
                }
              }
            }
            """);

        Assert.False(result.IsValid);
        Assert.Null(result.Config);
        Assert.Equal(
            [
                "Listeners:a:Address: 'nowhere' is not a listen address (host:port, [ipv6]:port or *:port, with an IP address host)",
                "ProxyStatus:IncludeDetails: 'maybe' is not a boolean (true or false)",
                "Clusters:c:LoadBalancingPolicy: 'Fastest' is not a load balancing policy (RoundRobin, PowerOfTwoChoices, LeastRequests, Random, ConsistentHash)",
                "Clusters:c:Destinations:d1:Weight: '0' must be between 1 and 1000",
                "Clusters:c:Destinations:d1:Address: 'htp://x' is not an http or https URI",
                "Clusters:c:KeepAlive:IdleTimeout: 'later' is not a duration (e.g. 250ms, 5s, 1.5s, 2m, 1h, 00:00:05)",
                "Clusters:c:KeepAlive:MaxIdle: '-1' must be >= 0",
                "Clusters:c:Timeouts:Connect: '0' must be greater than zero",
                "Routes:r1:ClusterId: 'missing' is not a cluster",
                "Routes:r1:Match:Path: 'x' must start with '/'",
                "Routes:r2:Order: 'last' is not an integer",
            ],
            result.Errors);
    }

    private static void AssertSingleError(string json, string error, params string[] warnings)
    {
        var result = Load(json);
        Assert.False(result.IsValid);
        Assert.Null(result.Config);
        Assert.Equal([error], result.Errors);
        Assert.Equal(warnings, result.Warnings);
    }
}
