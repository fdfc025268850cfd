using System.Net;
using System.Security.Cryptography.X509Certificates;
using Ferry.Configuration;
using Microsoft.Extensions.Configuration;
using static Ferry.Tests.Configuration.ConfigTestJson;

namespace Ferry.Tests.Configuration;

public sealed class FerryConfigLoaderTests
{
    [Fact]
    public void ListenerTrustAndPathSettings()
    {
        var config = LoadValid(Minimal().Replace("\"public\": { \"Address\": \"127.0.0.1:8080\" }", """
            "public": { "Address": "127.0.0.1:8080", "TrustedProxies": [ "10.0.0.0/8", "192.0.2.7", "fd00::/8" ],
                        "ProxyProtocol": true, "AmbiguousPaths": "normalize" }
            """, StringComparison.Ordinal));

        var listener = Assert.Single(config.Listeners);
        Assert.True(listener.ProxyProtocol);
        Assert.Equal(AmbiguousPaths.Normalize, listener.AmbiguousPaths);
        Assert.Equal(["10.0.0.0/8", "192.0.2.7/32", "fd00::/8"], listener.TrustedProxies.Select(n => n.ToString()));
        Assert.True(listener.Trusts(IPAddress.Parse("10.1.2.3")));
        Assert.True(listener.Trusts(IPAddress.Parse("::ffff:10.1.2.3")));
        Assert.True(listener.Trusts(IPAddress.Parse("192.0.2.7")));
        Assert.True(listener.Trusts(IPAddress.Parse("fd12::1")));
        Assert.False(listener.Trusts(IPAddress.Parse("192.0.2.8")));
        Assert.False(listener.Trusts(IPAddress.Parse("11.0.0.1")));
        Assert.False(listener.Trusts(null));
    }

    [Fact]
    public void MinimalConfigGetsEveryDefault()
    {
        var config = LoadValid(Minimal());

        Assert.Equal([new ListenerConfig("public", new IPEndPoint(IPAddress.Loopback, 8080))], config.Listeners);
        Assert.Empty(config.Listeners[0].TrustedProxies);
        Assert.False(config.Listeners[0].ProxyProtocol);
        Assert.Equal(AmbiguousPaths.Reject, config.Listeners[0].AmbiguousPaths);
        Assert.Equal(new AdminConfig(true, new IPEndPoint(IPAddress.Loopback, 9901)), config.Admin);
        Assert.Equal(AdminConfig.Default, config.Admin);
        Assert.False(config.ProxyStatus.IncludeDetails);

        var route = Assert.Single(config.Routes);
        Assert.Equal("api", route.RouteId);
        Assert.Equal("backend", route.ClusterId);
        Assert.Equal(0, route.Order);
        Assert.Null(route.PathRemovePrefix);
        Assert.Same(RouteMatchConfig.Default, route.Match);
        Assert.Empty(route.Match.Hosts);
        Assert.Empty(route.Match.Methods);
        Assert.Null(route.Match.Path);
        Assert.Null(route.Match.PathPrefix);

        var cluster = config.Clusters["BACKEND"];
        Assert.Equal("backend", cluster.ClusterId);
        Assert.Equal("RoundRobin", cluster.LoadBalancingPolicy);
        Assert.Equal(new KeepAliveConfig(1024, null, TimeSpan.FromSeconds(60), 0, TimeSpan.FromHours(1)), cluster.KeepAlive);
        Assert.Equal(new TimeoutsConfig(TimeSpan.FromSeconds(10), TimeSpan.FromSeconds(60), TimeSpan.FromSeconds(60),
            TimeSpan.FromSeconds(60)), cluster.Timeouts);
        Assert.Equal(new LimitsConfig(65536, 100), cluster.Limits);
        Assert.Equal(new ForwardingConfig(PreserveHost: true, XForwarded: true), cluster.Forwarding);

        var destination = Assert.Single(cluster.Destinations);
        Assert.Equal("a", destination.DestinationId);
        Assert.Equal("127.0.0.1", destination.Host);
        Assert.Equal(9000, destination.Port);
        Assert.Equal(1, destination.Weight);
        Assert.False(destination.Backup);
        Assert.Equal("127.0.0.1:9000", destination.Authority);
    }

    [Fact]
    public void ClusterWithDefaultsMatchesAnUnconfiguredCluster()
    {
        var loaded = LoadValid(Minimal()).Clusters["backend"];
        var built = ClusterConfig.WithDefaults("backend", loaded.Destinations);
        Assert.Equal(loaded with { }, built);
    }

    [Fact]
    public void ReadsEverySetting()
    {
        var config = LoadValid("""
            {
              "Listeners": { "a": { "Address": "[::1]:0" } },
              "Admin": { "Address": "127.0.0.1:0", "Enabled": false },
              "ProxyStatus": { "IncludeDetails": true },
              "Routes": {
                "r": {
                  "ClusterId": "C", "Order": -5, "PathRemovePrefix": "/api/v1/",
                  "Match": { "Hosts": [ "Example.COM", "*.example.com", "[::1]" ], "PathPrefix": "/api/v1/", "Methods": [ "get", "PURGE" ] }
                }
              },
              "Clusters": {
                "c": {
                  "LoadBalancingPolicy": "leastrequests",
                  "Destinations": [ { "Address": "http://[::1]:81", "Weight": 1000, "Backup": false }, { "Address": "http://backend.internal", "Backup": true } ],
                  "KeepAlive": { "MaxIdle": 0, "IdleTimeout": "1.5s", "AutoIdleTimeoutCap": "30s", "MaxRequests": 7, "MaxLifetime": 0 },
                  "Timeouts": { "Connect": "250ms", "SendRequest": 0, "ResponseHead": "2m", "BodyInactivity": "00:00:05" },
                  "Limits": { "MaxResponseHeaderBytes": 1024, "MaxResponseHeaderCount": 5 },
                  "Forwarding": { "PreserveHost": false, "XForwarded": "False" }
                }
              }
            }
            """);

        Assert.Equal(new IPEndPoint(IPAddress.IPv6Loopback, 0), config.Listeners[0].EndPoint);
        Assert.Equal(new AdminConfig(false, new IPEndPoint(IPAddress.Loopback, 0)), config.Admin);
        Assert.True(config.ProxyStatus.IncludeDetails);

        var route = Assert.Single(config.Routes);
        Assert.Equal("c", route.ClusterId);
        Assert.Equal(-5, route.Order);
        Assert.Equal("/api/v1", route.PathRemovePrefix);
        Assert.Equal(["example.com", "*.example.com", "[::1]"], route.Match.Hosts);
        Assert.Equal("/api/v1", route.Match.PathPrefix);
        Assert.Equal(["GET", "PURGE"], route.Match.Methods);

        var cluster = config.Clusters["c"];
        Assert.Equal("LeastRequests", cluster.LoadBalancingPolicy);
        Assert.Equal(2, cluster.Destinations.Count);
        Assert.Equal(new DestinationConfig("0", new Uri("http://[::1]:81"), "::1", 81, 1000, false), cluster.Destinations[0]);
        Assert.Equal("[::1]:81", cluster.Destinations[0].Authority);
        Assert.Equal(new DestinationConfig("1", new Uri("http://backend.internal/"), "backend.internal", 80, 1, true), cluster.Destinations[1]);
        Assert.Equal("backend.internal", cluster.Destinations[1].Authority);
        Assert.Equal(new KeepAliveConfig(0, TimeSpan.FromSeconds(1.5), TimeSpan.FromSeconds(30), 7, TimeSpan.Zero), cluster.KeepAlive);
        Assert.Equal(new TimeoutsConfig(TimeSpan.FromMilliseconds(250), TimeSpan.Zero, TimeSpan.FromMinutes(2),
            TimeSpan.FromSeconds(5)), cluster.Timeouts);
        Assert.Equal(new LimitsConfig(1024, 5), cluster.Limits);
        Assert.Equal(new ForwardingConfig(false, false), cluster.Forwarding);
    }

    [Theory]
    [InlineData("\"auto\"", null)]
    [InlineData("\"AUTO\"", null)]
    [InlineData("\"0\"", 0)]
    [InlineData("4", 4000)]
    [InlineData("\"250ms\"", 250)]
    public void IdleTimeoutIsAutoOrADuration(string json, int? milliseconds)
    {
        var config = LoadValid(Minimal(cluster: $$"""
            "KeepAlive": { "IdleTimeout": {{json}} }
            """));
        var expected = milliseconds is { } ms ? TimeSpan.FromMilliseconds(ms) : (TimeSpan?)null;
        Assert.Equal(expected, config.Clusters["backend"].KeepAlive.IdleTimeout);
    }

    [Fact]
    public void AdminAllowedHosts_AreNamesWithoutPorts()
    {
        var good = ConfigTestJson.Load("""{ "Admin": { "AllowedHosts": [ "ferry.internal", "*" ] } }""");
        var bad = ConfigTestJson.Load("""{ "Admin": { "AllowedHosts": [ "ferry.internal:9901", "a b" ] } }""");

        Assert.Equal(["ferry.internal", "*"], good.Config!.Admin.AllowedHosts);
        Assert.Equal(2, bad.Errors.Count(e => e.StartsWith("Admin:AllowedHosts:", StringComparison.Ordinal)));
    }

    [Fact]
    public void RouteUpgrades_DefaultToWebSocketOnly()
    {
        const string common = """
            "Listeners": { "main": { "Address": "127.0.0.1:8080" } },
            "Clusters": { "c": { "Destinations": { "a": { "Address": "http://127.0.0.1:9000" } }, "Timeouts": { "TunnelIdle": "5m" } } },
            """;
        var ok = Load("{" + common + """
            "Routes": { "d": { "ClusterId": "c" }, "none": { "ClusterId": "c", "Upgrades": [] },
                        "more": { "ClusterId": "c", "Upgrades": [ "WebSocket", "h2c" ] } } }
            """);
        var bad = Load("{" + common + """ "Routes": { "bad": { "ClusterId": "c", "Upgrades": [ "web socket" ] } } }""");

        Assert.Equal([], ok.Errors);
        var routes = ok.Config!.Routes.ToDictionary(r => r.RouteId);
        Assert.Equal(["websocket"], routes["d"].Upgrades);
        Assert.Empty(routes["none"].Upgrades);
        Assert.Equal(["websocket", "h2c"], routes["more"].Upgrades);
        Assert.Equal(TimeSpan.FromMinutes(5), ok.Config.Clusters["c"].Timeouts.TunnelIdle);
        Assert.Equal(TimeSpan.FromSeconds(60), TimeoutsConfig.Default.TunnelIdle);
        Assert.Equal(["Routes:bad:Upgrades:0: must be an upgrade protocol name (an HTTP token, such as websocket)"], bad.Errors);
    }

    // The example's certificate paths are relative to the file (docs/configuration.md, "HTTPS listeners"): it is loaded
    // from a copy next to a tls/ directory holding certificates made for the names it lists, so that they are read and
    // checked (key pairs, the PKCS#12 password, SNI names) like an operator's would be.
    [Fact]
    public void ExampleFileIsValidWithoutWarnings()
    {
        var directory = Directory.CreateTempSubdirectory("ferry-example-");
        try
        {
            var file = Path.Combine(directory.FullName, "ferry.json");
            File.Copy(FindExampleFile(), file);
            var tls = Directory.CreateDirectory(Path.Combine(directory.FullName, "tls")).FullName;
            using (var site = ListenerTlsConfigTests.Certificate("example.com"))
            using (var wildcard = ListenerTlsConfigTests.Certificate("*.example.com"))
            using (var api = ListenerTlsConfigTests.Certificate("api.example.com"))
            {
                foreach (var (name, certificate) in new[] { ("example.com", site), ("wildcard.example.com", wildcard) })
                {
                    File.WriteAllText(Path.Combine(tls, name + ".pem"), certificate.ExportCertificatePem());
                    File.WriteAllText(Path.Combine(tls, name + ".key"), certificate.GetECDsaPrivateKey()!.ExportPkcs8PrivateKeyPem());
                }
                File.WriteAllBytes(Path.Combine(tls, "api.example.com.pfx"), api.Export(X509ContentType.Pkcs12, "change-me"));
            }

            var result = FerryConfigLoader.Load(FerryConfigLoader.Build(file, [], new Dictionary<string, string>()));

            Assert.Equal([], result.Errors);
            Assert.Equal([], result.Warnings);
            Assert.True(result.IsValid);
            Assert.Equal(["health", "item", "api", "legacy", "site"], result.Config!.Routes.Select(r => r.RouteId));
            var https = result.Config.Listeners.Single(l => l.Name == "https");
            Assert.Equal(["*.example.com", "api.example.com"], https.Tls!.Sni.Select(s => s.Host).Order(StringComparer.Ordinal));
            Assert.NotNull(https.Hsts);
            Assert.Equal(8443, result.Config.Listeners.Single(l => l.Name == "redirect").RedirectToHttps!.Port);
        }
        finally
        {
            directory.Delete(recursive: true);
        }
    }

    [Fact]
    public void ProxyCommandIsTheDefaultsWithOneRoute()
    {
        var result = FerryConfigLoader.Load(new ConfigurationBuilder().AddInMemoryCollection(FerryConfigLoader.ProxyCommandSettings("127.0.0.1:8080", ["http://127.0.0.1:9000", "http://127.0.0.1:9001"])).Build());

        Assert.Equal([], result.Errors);
        Assert.Equal([], result.Warnings);
        var config = result.Config!;
        Assert.Equal([new ListenerConfig("proxy", new IPEndPoint(IPAddress.Loopback, 8080))], config.Listeners);
        Assert.Equal(AdminConfig.Default, config.Admin);
        Assert.Equal(ProxyStatusConfig.Default, config.ProxyStatus);
        var route = Assert.Single(config.Routes);
        Assert.Equal(("proxy", "proxy", 0, (string?)null), (route.RouteId, route.ClusterId, route.Order, route.PathRemovePrefix));
        Assert.Same(RouteMatchConfig.Default, route.Match);
        var cluster = config.Clusters["proxy"];
        Assert.Equal(ClusterConfig.WithDefaults("proxy", cluster.Destinations), cluster);
        Assert.Equal(["1", "2"], cluster.Destinations.Select(d => d.DestinationId));
        Assert.Equal([9000, 9001], cluster.Destinations.Select(d => d.Port));
    }

    [Fact]
    public void ProxyCommandReportsBadArguments()
    {
        var result = FerryConfigLoader.Load(new ConfigurationBuilder().AddInMemoryCollection(FerryConfigLoader.ProxyCommandSettings("8080", [])).Build());

        Assert.False(result.IsValid);
        Assert.Equal(
            [
                "Listeners:proxy:Address: '8080' is not a listen address (host:port, [ipv6]:port or *:port, with an IP address host)",
                "Clusters:proxy:Destinations: at least one destination is required",
            ],
            result.Errors);
    }

    [Fact]
    public void EmptyConfigurationIsValidAndHasNoRoutes()
    {
        var result = Load("{}");
        Assert.True(result.IsValid);
        Assert.Empty(result.Config!.Routes);
        Assert.Empty(result.Config.Listeners);
        Assert.Empty(result.Config.Clusters);
    }

    internal static string FindExampleFile()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            var candidate = Path.Combine(dir.FullName, "ferry.example.json");
            if (File.Exists(candidate))
            {
                return candidate;
            }
        }

        throw new FileNotFoundException("ferry.example.json not found above " + AppContext.BaseDirectory);
    }
}
