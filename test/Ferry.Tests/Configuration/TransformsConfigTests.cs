using Ferry.Configuration;
using static Ferry.Tests.Configuration.ConfigTestJson;

namespace Ferry.Tests.Configuration;

public sealed class TransformsConfigTests
{
    private static RouteConfig Route(string route) => LoadValid(Minimal(route: route)).Routes.Single();

    [Fact]
    public void RouteWithoutRules_SharesTheEmptyInstance()
    {
        var route = Route("\"Match\": { \"PathPrefix\": \"/api\" }");

        Assert.Same(TransformsConfig.None, route.Transforms);
        Assert.True(route.Transforms.IsEmpty);
        Assert.Equal(RequestLimitsConfig.DefaultMaxRequestBodySize, route.MaxRequestBodySize);
    }

    [Fact]
    public void EveryRuleKind_IsReadInOrder()
    {
        var route = Route("""
            "Match": { "Path": "/v1/items/{id}" },
            "Transforms": [
              { "RequestHeader": "X-Env", "Set": "prod" },
              { "RequestHeader": "X-A", "Append": "v" },
              { "RequestHeaderRemove": "Cookie" },
              { "RequestHeaderOriginalHost": "true" },
              { "ResponseHeader": "Strict-Transport-Security", "Set": "max-age=31536000", "When": "Always" },
              { "ResponseHeaderRemove": "Server" },
              { "PathRemovePrefix": "/v1" },
              { "PathPrefix": "/api" },
              { "PathSet": "/x" },
              { "PathPattern": "/things/{id}" },
              { "QueryValueParameter": "k", "Set": "v" },
              { "QueryRemoveParameter": "debug" }
            ]
            """);
        var t = route.Transforms;

        Assert.Equal(
            [new PathRule(PathRuleKind.RemovePrefix, "/v1"), new PathRule(PathRuleKind.Prefix, "/api"), new PathRule(PathRuleKind.Set, "/x"),
             new PathRule(PathRuleKind.Pattern, "/things/{id}")],
            t.Path);
        Assert.Equal([new QueryRule("k", HeaderAction.Set, "v"), new QueryRule("debug", HeaderAction.Remove, "")], t.Query);
        Assert.Equal(
            [new HeaderRule("X-Env", HeaderAction.Set, "prod"), new HeaderRule("X-A", HeaderAction.Append, "v"), new HeaderRule("Cookie", HeaderAction.Remove, "")],
            t.RequestHeaders);
        Assert.Equal(
            [new ResponseHeaderRule("Strict-Transport-Security", HeaderAction.Set, "max-age=31536000", ResponseCondition.Always),
             new ResponseHeaderRule("Server", HeaderAction.Remove, "", ResponseCondition.Success)],
            t.ResponseHeaders);
        Assert.True(t.OriginalHost);
        Assert.Equal(["X-Env", "Cookie"], t.DroppedRequestHeaders);
        Assert.Equal(["X-Env", "X-A"], t.AddedRequestHeaders.Select(r => r.Name));
    }

    [Fact]
    public void LegacyPathRemovePrefix_IsTheFirstPathRule()
    {
        var route = Route("""
            "Match": { "PathPrefix": "/api" }, "PathRemovePrefix": "/api/",
            "Transforms": [ { "PathPrefix": "/v2" } ]
            """);

        Assert.Equal("/api", route.PathRemovePrefix);
        Assert.Equal([new PathRule(PathRuleKind.RemovePrefix, "/api"), new PathRule(PathRuleKind.Prefix, "/v2")], route.Transforms.Path);
    }

    [Fact]
    public void LaterSetOrRemove_DropsWhatEarlierRulesAdded()
    {
        var t = Route("""
            "Transforms": [
              { "RequestHeader": "X-A", "Append": "1" },
              { "RequestHeaderRemove": "x-a" },
              { "RequestHeader": "X-B", "Append": "2" },
              { "RequestHeader": "X-B", "Set": "3" },
              { "RequestHeader": "X-B", "Append": "4" }
            ]
            """).Transforms;

        Assert.Equal(["x-a", "X-B"], t.DroppedRequestHeaders);
        Assert.Equal([("X-B", "3"), ("X-B", "4")], t.AddedRequestHeaders.Select(r => (r.Name, r.Value)));
    }

    [Theory]
    [InlineData("0", 0)]
    [InlineData("1048576", 1048576)]
    [InlineData("512k", 512 * 1024)]
    [InlineData("10m", 10L * 1024 * 1024)]
    [InlineData("2G", 2L * 1024 * 1024 * 1024)]
    [InlineData("3MiB", 3L * 1024 * 1024)]
    public void MaxRequestBodySize_TakesBytesOrUnits(string text, long bytes)
    {
        Assert.Equal(bytes, Route($"\"MaxRequestBodySize\": \"{text}\"").MaxRequestBodySize);
    }

    [Fact]
    public void GlobalMaxRequestBodySize_IsEveryRoutesDefault()
    {
        var json = Minimal(route: "").Replace("\"Routes\"", "\"Limits\": { \"MaxRequestBodySize\": \"1m\" }, \"Routes\"", StringComparison.Ordinal);

        var config = LoadValid(json);

        Assert.Equal(1024 * 1024, config.Limits.MaxRequestBodySize);
        Assert.Equal(1024 * 1024, config.Routes.Single().MaxRequestBodySize);
    }

    [Theory]
    [InlineData("\"MaxRequestBodySize\": \"-1\"", "Routes:api:MaxRequestBodySize: '-1' is not a size in bytes (e.g. 1048576, 512k, 100m, 2g)")]
    [InlineData("\"MaxRequestBodySize\": \"10 TB\"", "Routes:api:MaxRequestBodySize: '10 TB' is not a size in bytes (e.g. 1048576, 512k, 100m, 2g)")]
    [InlineData("\"Transforms\": [ { \"RequestHeader\": \"X-A\", \"Set\": \"a\\r\\nX-Injected: 1\" } ]",
        "Routes:api:Transforms:0:Set: contains CR, LF, NUL or a character above U+00FF")]
    [InlineData("\"Transforms\": [ { \"ResponseHeader\": \"X-A\", \"Append\": \"a\\u0000\" } ]",
        "Routes:api:Transforms:0:Append: contains CR, LF, NUL or a character above U+00FF")]
    [InlineData("\"Transforms\": [ { \"RequestHeader\": \"Content-Length\", \"Set\": \"0\" } ]",
        "Routes:api:Transforms:0:RequestHeader: 'Content-Length' frames the message or belongs to the connection; Ferry writes it itself and no rule may change it")]
    [InlineData("\"Transforms\": [ { \"RequestHeaderRemove\": \"Transfer-Encoding\" } ]",
        "Routes:api:Transforms:0:RequestHeaderRemove: 'Transfer-Encoding' frames the message or belongs to the connection; Ferry writes it itself and no rule may change it")]
    [InlineData("\"Transforms\": [ { \"ResponseHeader\": \"Connection\", \"Set\": \"close\" } ]",
        "Routes:api:Transforms:0:ResponseHeader: 'Connection' frames the message or belongs to the connection; Ferry writes it itself and no rule may change it")]
    [InlineData("\"Transforms\": [ { \"RequestHeader\": \"Host\", \"Set\": \"evil\" } ]",
        "Routes:api:Transforms:0:RequestHeader: Host is chosen by RequestHeaderOriginalHost (or the cluster's Forwarding:PreserveHost), not by a header rule")]
    [InlineData("\"Transforms\": [ { \"ResponseHeaderRemove\": \"Proxy-Status\", \"When\": \"Always\" } ]",
        "Routes:api:Transforms:0:ResponseHeaderRemove: Proxy-Status reports Ferry's own errors; no rule may change it")]
    [InlineData("\"Transforms\": [ { \"RequestHeader\": \"X-Forwarded-For\", \"Set\": \"1.2.3.4\" } ]",
        "Routes:api:Transforms:0:RequestHeader: 'X-Forwarded-For' is written by the cluster's Forwarding:XForwarded, not by a header rule")]
    [InlineData("\"Transforms\": [ { \"RequestHeader\": \"X A\", \"Set\": \"1\" } ]", "Routes:api:Transforms:0:RequestHeader: 'X A' is not a header field name")]
    [InlineData("\"Transforms\": [ { \"RequestHeader\": \"X-A\" } ]", "Routes:api:Transforms:0: needs exactly one of Set and Append")]
    [InlineData("\"Transforms\": [ { \"RequestHeader\": \"X-A\", \"Set\": \"1\", \"Append\": \"2\" } ]", "Routes:api:Transforms:0: needs exactly one of Set and Append")]
    [InlineData("\"Transforms\": [ { \"ResponseHeader\": \"X-A\", \"Set\": \"1\", \"When\": \"Sometimes\" } ]",
        "Routes:api:Transforms:0:When: 'Sometimes' is not a response condition (Success, Always, Failure)")]
    [InlineData("\"Transforms\": [ { \"RequestHeaderOriginalHost\": \"yes\" } ]",
        "Routes:api:Transforms:0:RequestHeaderOriginalHost: 'yes' is not a boolean (true or false)")]
    [InlineData("\"Transforms\": [ { \"PathSet\": \"x\" } ]", "Routes:api:Transforms:0:PathSet: 'x' must start with '/'")]
    [InlineData("\"Transforms\": [ { \"PathPrefix\": \"/a b\" } ]",
        "Routes:api:Transforms:0:PathPrefix: '/a b' contains a space, a control character or a character above U+00FF")]
    [InlineData("\"Transforms\": [ { \"PathRemovePrefix\": \"/\" } ]",
        "Routes:api:Transforms:0:PathRemovePrefix: '/' removes nothing; a prefix to remove has at least one segment")]
    [InlineData("\"Transforms\": [ { \"PathPattern\": \"/items/{id}\" } ]",
        "Routes:api:Transforms:0:PathPattern: '{id}' needs a Match:Path template that captures it (such as \"/items/{id}\")")]
    [InlineData("\"Match\": { \"Path\": \"/a/{x}\" }, \"Transforms\": [ { \"PathPattern\": \"/b/{y}\" } ]",
        "Routes:api:Transforms:0:PathPattern: '{y}' is not a parameter of Match:Path '/a/{x}'")]
    [InlineData("\"Match\": { \"Path\": \"/a/{**x}/b\" }", "Routes:api:Match:Path: '{**x}' must be the last segment")]
    [InlineData("\"Match\": { \"Path\": \"/a/x{y}\" }",
        "Routes:api:Match:Path: 'x{y}' is not a parameter: a segment is either literal or a whole '{name}' (letters, digits, '_'), or a final '{**name}'")]
    [InlineData("\"Transforms\": [ { \"RequestHeaderz\": \"X-A\" } ]", "Routes:api:Transforms:0: not a transform (did you mean 'RequestHeader'?)")]
    [InlineData("\"Transforms\": [ \"PathSet\" ]", "Routes:api:Transforms:0: expected a section, found the value 'PathSet'")]
    public void InvalidRules_AreRejectedWithTheirPath(string route, string error)
    {
        var result = Load(Minimal(route: route));

        Assert.False(result.IsValid);
        Assert.Equal([error], result.Errors);
    }
}
