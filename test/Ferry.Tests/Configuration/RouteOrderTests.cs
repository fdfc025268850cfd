using static Ferry.Tests.Configuration.ConfigTestJson;

namespace Ferry.Tests.Configuration;

public sealed class RouteOrderTests
{
    [Fact]
    public void OrderThenSpecificityThenId()
    {
        var config = LoadValid("""
            {
              "Listeners": { "l": { "Address": "127.0.0.1:0" } },
              "Routes": {
                "catchall":     { "ClusterId": "c" },
                "z-hosts":      { "ClusterId": "c", "Match": { "Hosts": [ "a.com" ] } },
                "a-hosts":      { "ClusterId": "c", "Match": { "Hosts": [ "b.com" ] } },
                "methods":      { "ClusterId": "c", "Match": { "Methods": [ "GET" ] } },
                "short-prefix": { "ClusterId": "c", "Match": { "PathPrefix": "/a" } },
                "long-prefix":  { "ClusterId": "c", "Match": { "PathPrefix": "/a/b/c" } },
                "prefix-hosts": { "ClusterId": "c", "Match": { "PathPrefix": "/a/b/c", "Hosts": [ "a.com" ] } },
                "exact":        { "ClusterId": "c", "Match": { "Path": "/" } },
                "a-template":   { "ClusterId": "c", "Match": { "Path": "/{x}" } },
                "early":        { "ClusterId": "c", "Order": -1 },
                "late-exact":   { "ClusterId": "c", "Order": 10, "Match": { "Path": "/x/y/z" } }
              },
              "Clusters": { "c": { "Destinations": { "d": { "Address": "http://127.0.0.1:9000" } } } }
            }
            """);

        Assert.Equal(
            ["early", "exact", "a-template", "prefix-hosts", "long-prefix", "short-prefix", "a-hosts", "z-hosts", "methods", "catchall", "late-exact"],
            config.Routes.Select(r => r.RouteId));
    }

    [Theory]
    [InlineData("/api/", "/api")]
    [InlineData("/api//", "/api")]
    [InlineData("/", "/")]
    [InlineData("/api", "/api")]
    public void PathPrefixLosesItsTrailingSlash(string prefix, string expected)
    {
        var config = LoadValid(Minimal(route: $$"""
            "Match": { "PathPrefix": "{{prefix}}" }
            """));
        Assert.Equal(expected, config.Routes[0].Match.PathPrefix);
    }
}
