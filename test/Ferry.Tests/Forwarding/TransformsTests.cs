using Ferry.Configuration;
using Ferry.Forwarding;
using Ferry.Routing;
using Microsoft.AspNetCore.Http;

namespace Ferry.Tests.Forwarding;

public sealed class TransformsTests
{
    private static TransformsConfig Rules(params PathRule[] path) => new(path, [], [], [], null);

    private static TransformsConfig Query(params QueryRule[] query) => new([], query, [], [], null);

    [Theory]
    [InlineData("/api/users", "/users")]
    [InlineData("/API/users", "/users")]
    [InlineData("/api", "/")]
    [InlineData("/apix/users", "/apix/users")]
    [InlineData("/api/a%20b", "/a%20b")]
    public void PathRemovePrefix_StripsOnASegmentBoundaryAndKeepsEscapes(string path, string expected)
    {
        Assert.Equal(expected, Transforms.Target(path, "", Uri.UnescapeDataString(path), Rules(new PathRule(PathRuleKind.RemovePrefix, "/api")), null));
    }

    [Fact]
    public void PathRemovePrefix_UsesTheDecodedPathWhenTheRawOneEscapesThePrefix()
    {
        Assert.Equal("/x?q=1", Transforms.Target("/%61pi/x", "?q=1", "/api/x", Rules(new PathRule(PathRuleKind.RemovePrefix, "/api")), null));
    }

    [Fact]
    public void PathPrefix_PrependsAndPathSet_Replaces()
    {
        Assert.Equal("/api/users?a=1", Transforms.Target("/users", "?a=1", "/users", Rules(new PathRule(PathRuleKind.Prefix, "/api")), null));
        Assert.Equal("/x?a=1", Transforms.Target("/users/7", "?a=1", "/users/7", Rules(new PathRule(PathRuleKind.Set, "/x")), null));
    }

    [Fact]
    public void PathRules_ApplyInOrder()
    {
        var rules = Rules(new PathRule(PathRuleKind.RemovePrefix, "/v1"), new PathRule(PathRuleKind.Prefix, "/api/v2"));

        Assert.Equal("/api/v2/items", Transforms.Target("/v1/items", "", "/v1/items", rules, null));
    }

    [Fact]
    public void PathPattern_UsesTheValuesOfTheMatchTemplate()
    {
        var template = PathTemplate.Parse("/v1/items/{id}/{**rest}", out _)!;
        var rules = Rules(new PathRule(PathRuleKind.Pattern, "/items/{id}/v1/{**rest}"));

        Assert.Equal("/items/42/v1/a/b?x=1", Transforms.Target("/v1/items/42/a/b", "?x=1", "/v1/items/42/a/b", rules, template));
        Assert.Equal("/items/a%20b/v1/", Transforms.Target("/v1/items/a%20b", "", "/v1/items/a b", rules, template));
    }

    [Theory]
    [InlineData("/items/{id}", "/items/7", true)]
    [InlineData("/items/{id}", "/ITEMS/7", true)]
    [InlineData("/items/{id}", "/items/", false)]
    [InlineData("/items/{id}", "/items/7/8", false)]
    [InlineData("/items/{id}", "/items", false)]
    [InlineData("/items/{**rest}", "/items", true)]
    [InlineData("/items/{**rest}", "/items/a/b", true)]
    [InlineData("/items/{**rest}", "/itemsx", false)]
    public void PathTemplate_MatchesWholeSegments(string template, string path, bool matches)
    {
        Assert.Equal(matches, PathTemplate.Parse(template, out _)!.TryMatch(path, null));
    }

    [Fact]
    public void PathTemplate_CapturesValues()
    {
        var values = new Dictionary<string, string>();

        Assert.True(PathTemplate.Parse("/u/{user}/f/{**path}", out _)!.TryMatch("/u/ann/f/x/y.txt", values));
        Assert.Equal("ann", values["user"]);
        Assert.Equal("x/y.txt", values["path"]);
    }

    [Fact]
    public void QueryValueParameter_SetsReplacesAndAppends()
    {
        Assert.Equal("/p?a=1&k=v", Transforms.Target("/p", "?a=1&k=old&K=old2", "/p", Query(new QueryRule("k", HeaderAction.Set, "v")), null));
        Assert.Equal("/p?k=1&k=2", Transforms.Target("/p", "?k=1", "/p", Query(new QueryRule("k", HeaderAction.Append, "2")), null));
        Assert.Equal("/p?k=a%20b%26c", Transforms.Target("/p", "", "/p", Query(new QueryRule("k", HeaderAction.Set, "a b&c")), null));
    }

    [Fact]
    public void QueryRemoveParameter_RemovesEveryOccurrenceAndTheQuestionMarkWhenEmpty()
    {
        Assert.Equal("/p?a=1", Transforms.Target("/p", "?debug=1&a=1&de%62ug", "/p", Query(new QueryRule("debug", HeaderAction.Remove, "")), null));
        Assert.Equal("/p", Transforms.Target("/p", "?debug=1", "/p", Query(new QueryRule("debug", HeaderAction.Remove, "")), null));
    }

    [Theory]
    [InlineData(200)]
    [InlineData(302)]
    [InlineData(404)]
    [InlineData(502)]
    public void ResponseRules_ApplyByTheirWhen(int status)
    {
        var headers = new HeaderDictionary { ["X-A"] = "a", ["X-B"] = "b", ["Server"] = "upstream" };
        ResponseHeaderRule[] rules =
        [
            new("Server", HeaderAction.Remove, "", ResponseCondition.Always),
            new("X-B", HeaderAction.Set, "set", ResponseCondition.Success),
            new("X-A", HeaderAction.Set, "failure", ResponseCondition.Failure),
            new("X-C", HeaderAction.Append, "c", ResponseCondition.Always),
        ];

        Transforms.ApplyResponse(headers, rules, status);

        Assert.False(headers.ContainsKey("Server"));
        Assert.Equal(status < 400 ? "set" : "b", headers["X-B"].ToString());
        Assert.Equal(status < 400 ? "a" : "failure", headers["X-A"].ToString());
        Assert.Equal("c", headers["X-C"].ToString());
    }

    [Fact]
    public void ResponseAppend_AddsAValueAfterTheDestinations()
    {
        var headers = new HeaderDictionary { ["Vary"] = "Accept" };

        Transforms.ApplyResponse(headers, [new("Vary", HeaderAction.Append, "Origin", ResponseCondition.Success)], 200);

        Assert.Equal("Accept,Origin", headers["Vary"].ToString());
    }
}
