using Ferry.Configuration;
using static Ferry.Tests.Configuration.ConfigTestJson;

namespace Ferry.Tests.Configuration;

public sealed class WarningsTests
{
    [Fact]
    public void UnknownKeysAreWarningsWithSuggestions()
    {
        var result = Load("""
            {
              "Listners": {},
              "Listeners": { "l": { "Address": "127.0.0.1:1", "Adress": "x" } },
              "Admin": { "Enable": false },
              "ProxyStatus": { "IncludeDetail": true },
              "Routes": { "r": { "ClusterId": "api", "Oder": 1, "Match": { "PathPrefx": "/a", "Host": [ "a.com" ] }, "AuthorizationPolicy": "x" } },
              "Clusters": {
                "api": {
                  "Destinations": { "a": { "Address": "http://127.0.0.1:9000", "Wieght": 2 } },
                  "Destinatons": { "b": { "Address": "http://127.0.0.1:9001" } },
                  "KeepAlive": { "IdleTimout": "5s" },
                  "Timeouts": { "Conect": "1s" },
                  "Limits": { "MaxResponseHeadersBytes": 1 },
                  "Forwarding": { "XForwardedFor": true },
                  "HealthCheck": { "Activ": { "Enabled": true } }
                }
              },
              "Logging": { "LogLevel": { "Default": "Debug" } }
            }
            """);

        Assert.Equal([], result.Errors);
        Assert.True(result.IsValid);
        Assert.Equal(
            [
                "Listners: unknown setting (did you mean 'Listeners'?)",
                "Logging: unknown setting",
                "Listeners:l:Adress: unknown setting (did you mean 'Address'?)",
                "Admin:Enable: unknown setting (did you mean 'Enabled'?)",
                "ProxyStatus:IncludeDetail: unknown setting (did you mean 'IncludeDetails'?)",
                "Clusters:api:Destinatons: unknown setting (did you mean 'Destinations'?)",
                "Clusters:api:Destinations:a:Wieght: unknown setting (did you mean 'Weight'?)",
                "Clusters:api:KeepAlive:IdleTimout: unknown setting (did you mean 'IdleTimeout'?)",
                "Clusters:api:Timeouts:Conect: unknown setting (did you mean 'Connect'?)",
                "Clusters:api:Limits:MaxResponseHeadersBytes: unknown setting (did you mean 'MaxResponseHeaderBytes'?)",
                "Clusters:api:Forwarding:XForwardedFor: unknown setting (did you mean 'XForwarded'?)",
                "Clusters:api:HealthCheck:Activ: unknown setting (did you mean 'Active'?)",
                "Routes:r:AuthorizationPolicy: unknown setting",
                "Routes:r:Oder: unknown setting (did you mean 'Order'?)",
                "Routes:r:Match:Host: unknown setting (did you mean 'Hosts'?)",
                "Routes:r:Match:PathPrefx: unknown setting (did you mean 'PathPrefix'?)",
            ],
            result.Warnings);
    }

    [Fact]
    public void KeysAreCaseInsensitive() =>
        LoadValid("""
            {
              "listeners": { "l": { "address": "127.0.0.1:1" } },
              "ROUTES": { "r": { "clusterid": "c", "match": { "pathprefix": "/a" } } },
              "clusters": { "c": { "destinations": { "d": { "ADDRESS": "http://127.0.0.1:9000" } }, "keepalive": { "maxidle": 3 } } }
            }
            """);

    [Fact]
    public void UnusedClusterIsAWarning()
    {
        var result = Load(Minimal().Replace("\"Clusters\": {", """
            "Clusters": { "spare": { "Destinations": { "x": { "Address": "http://127.0.0.1:9100" } } },
            """, StringComparison.Ordinal));

        Assert.True(result.IsValid);
        Assert.Equal(["Clusters:spare: not used by any route"], result.Warnings);
    }

    [Theory]
    [InlineData("Destinatons", "Destinations")]
    [InlineData("destinations", "Destinations")]
    [InlineData("Adress", "Address")]
    [InlineData("Wieght", "Weight")]
    [InlineData("Pth", "Path")]
    [InlineData("Zzzz", null)]
    [InlineData("Transforms", null)]
    public void Suggest(string key, string? expected) =>
        Assert.Equal(expected, ConfigReader.Suggest(key, ["Destinations", "Address", "Weight", "Path", "PathPrefix", "Backup"]));

    [Theory]
    [InlineData("", "", 0)]
    [InlineData("abc", "", 3)]
    [InlineData("kitten", "sitting", 3)]
    [InlineData("Order", "ORDER", 0)]
    [InlineData("Destinatons", "Destinations", 1)]
    public void EditDistance(string a, string b, int distance)
    {
        Assert.Equal(distance, ConfigReader.EditDistance(a, b));
        Assert.Equal(distance, ConfigReader.EditDistance(b, a));
    }
}
