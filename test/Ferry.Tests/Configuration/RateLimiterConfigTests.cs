using Ferry.Configuration;
using static Ferry.Tests.Configuration.ConfigTestJson;

namespace Ferry.Tests.Configuration;

public sealed class RateLimiterConfigTests
{
    // The minimal configuration with a root RateLimiterPolicies section; the route names a policy when `route` says so.
    private static string WithPolicies(string policies, string route = "\"RateLimiterPolicy\": \"p\"") =>
        Minimal(route: route).Replace("\"Listeners\":", $"\"RateLimiterPolicies\": {{ {policies} }},\n  \"Listeners\":", StringComparison.Ordinal);

    [Fact]
    public void EveryKindReadsItsAspNetCoreOptions()
    {
        var config = LoadValid(WithPolicies("""
            "p": { "Kind": "TokenBucket", "TokenLimit": 20, "TokensPerPeriod": 10, "ReplenishmentPeriod": "1s", "QueueLimit": 5, "QueueProcessingOrder": "NewestFirst" },
            "fixed": { "Kind": "fixedwindow", "PermitLimit": 100, "Window": "1m", "Key": "Route" },
            "sliding": { "Kind": "SlidingWindow", "PermitLimit": 60, "Window": "1m", "SegmentsPerWindow": 6, "Key": "Header", "Name": "X-Api-Key", "MaxPartitions": 1000 },
            "conc": { "Kind": "Concurrency", "PermitLimit": 4 }
            """).Replace("\"Routes\": {", """
            "Routes": { "f": { "ClusterId": "backend", "RateLimiterPolicy": "FIXED" }, "s": { "ClusterId": "backend", "RateLimiterPolicy": "sliding" },
                        "c": { "ClusterId": "backend", "RateLimiterPolicy": "conc" },
            """, StringComparison.Ordinal));

        var p = config.RateLimiterPolicies["p"];
        Assert.Equal(RateLimiterKind.TokenBucket, p.Kind);
        Assert.Equal(20, p.Limit);
        Assert.Equal(10, p.TokensPerPeriod);
        Assert.Equal(TimeSpan.FromSeconds(1), p.Period);
        Assert.Equal(5, p.QueueLimit);
        Assert.True(p.NewestFirst);
        Assert.Equal(RateLimiterKey.ClientIp, p.Key);
        Assert.Equal(RateLimiterPolicyConfig.DefaultMaxPartitions, p.MaxPartitions);

        var fixedWindow = config.RateLimiterPolicies["fixed"];
        Assert.Equal((RateLimiterKind.FixedWindow, 100, TimeSpan.FromMinutes(1), RateLimiterKey.Route, 0),
            (fixedWindow.Kind, fixedWindow.Limit, fixedWindow.Period, fixedWindow.Key, fixedWindow.QueueLimit));
        var sliding = config.RateLimiterPolicies["sliding"];
        Assert.Equal((RateLimiterKind.SlidingWindow, 60, 6, RateLimiterKey.Header, "X-Api-Key", 1000),
            (sliding.Kind, sliding.Limit, sliding.SegmentsPerWindow, sliding.Key, sliding.HeaderName, sliding.MaxPartitions));
        Assert.Equal((RateLimiterKind.Concurrency, 4), (config.RateLimiterPolicies["conc"].Kind, config.RateLimiterPolicies["conc"].Limit));

        // The route keeps the policy's name as it is written in RateLimiterPolicies, whatever its case in the route.
        Assert.Equal("fixed", config.Routes.Single(r => r.RouteId == "f").RateLimiterPolicy);
        Assert.Equal("p", config.Routes.Single(r => r.RouteId == "api").RateLimiterPolicy);
    }

    [Fact]
    public void RoutesWithoutAPolicyHaveNone()
    {
        var config = LoadValid(Minimal());
        Assert.Null(config.Routes.Single().RateLimiterPolicy);
        Assert.Empty(config.RateLimiterPolicies);
    }

    [Fact]
    public void UnknownPolicyNameIsAnErrorWithASuggestion()
    {
        var result = Load(WithPolicies("""
            "per-client": { "Kind": "TokenBucket", "TokenLimit": 1, "TokensPerPeriod": 1, "ReplenishmentPeriod": "1s" }
            """, "\"RateLimiterPolicy\": \"per-clent\""));
        Assert.Equal(["Routes:api:RateLimiterPolicy: 'per-clent' is not a policy in RateLimiterPolicies (did you mean 'per-client'?)"], result.Errors);
        Assert.Equal(["RateLimiterPolicies:per-client: not used by any route"], result.Warnings);

        result = Load(Minimal(route: "\"RateLimiterPolicy\": \"strict\""));
        Assert.Equal(["Routes:api:RateLimiterPolicy: 'strict' is not a policy in RateLimiterPolicies"], result.Errors);
    }

    [Theory]
    [InlineData("\"PermitLimit\": 1", "RateLimiterPolicies:p:Kind: required (TokenBucket, FixedWindow, SlidingWindow, Concurrency)")]
    [InlineData("\"Kind\": \"LeakyBucket\"",
        "RateLimiterPolicies:p:Kind: 'LeakyBucket' is not a rate limiter kind (TokenBucket, FixedWindow, SlidingWindow, Concurrency)")]
    [InlineData("\"Kind\": \"TokenBucket\", \"TokensPerPeriod\": 1, \"ReplenishmentPeriod\": \"1s\"", "RateLimiterPolicies:p:TokenLimit: required")]
    [InlineData("\"Kind\": \"TokenBucket\", \"TokenLimit\": 0, \"TokensPerPeriod\": 1, \"ReplenishmentPeriod\": \"1s\"", "RateLimiterPolicies:p:TokenLimit: '0' must be >= 1")]
    [InlineData("\"Kind\": \"TokenBucket\", \"TokenLimit\": \"ten\", \"TokensPerPeriod\": 1, \"ReplenishmentPeriod\": \"1s\"",
        "RateLimiterPolicies:p:TokenLimit: 'ten' is not an integer")]
    [InlineData("\"Kind\": \"TokenBucket\", \"TokenLimit\": 10, \"TokensPerPeriod\": 0, \"ReplenishmentPeriod\": \"1s\"",
        "RateLimiterPolicies:p:TokensPerPeriod: '0' must be >= 1")]
    [InlineData("\"Kind\": \"TokenBucket\", \"TokenLimit\": 10, \"TokensPerPeriod\": 1", "RateLimiterPolicies:p:ReplenishmentPeriod: required")]
    [InlineData("\"Kind\": \"TokenBucket\", \"TokenLimit\": 10, \"TokensPerPeriod\": 1, \"ReplenishmentPeriod\": \"10ms\"",
        "RateLimiterPolicies:p:ReplenishmentPeriod: '10ms' is shorter than 100ms, the step at which limits replenish")]
    [InlineData("\"Kind\": \"TokenBucket\", \"TokenLimit\": 10, \"TokensPerPeriod\": 1, \"ReplenishmentPeriod\": \"0\"",
        "RateLimiterPolicies:p:ReplenishmentPeriod: '0' must be greater than zero")]
    [InlineData("\"Kind\": \"FixedWindow\", \"PermitLimit\": 10, \"Window\": \"soon\"",
        "RateLimiterPolicies:p:Window: 'soon' is not a duration (e.g. 250ms, 5s, 1.5s, 2m, 1h, 00:00:05)")]
    [InlineData("\"Kind\": \"FixedWindow\", \"Window\": \"1s\"", "RateLimiterPolicies:p:PermitLimit: required")]
    [InlineData("\"Kind\": \"SlidingWindow\", \"PermitLimit\": 10, \"Window\": \"1s\"", "RateLimiterPolicies:p:SegmentsPerWindow: required")]
    [InlineData("\"Kind\": \"SlidingWindow\", \"PermitLimit\": 10, \"Window\": \"1s\", \"SegmentsPerWindow\": 20",
        "RateLimiterPolicies:p:SegmentsPerWindow: '20' makes segments of 50ms; each must last at least 100ms")]
    [InlineData("\"Kind\": \"Concurrency\", \"PermitLimit\": -1", "RateLimiterPolicies:p:PermitLimit: '-1' must be >= 1")]
    [InlineData("\"Kind\": \"Concurrency\", \"PermitLimit\": 1, \"QueueLimit\": -1", "RateLimiterPolicies:p:QueueLimit: '-1' must be between 0 and 1000000")]
    [InlineData("\"Kind\": \"Concurrency\", \"PermitLimit\": 1, \"QueueLimit\": 1, \"QueueProcessingOrder\": \"Random\"",
        "RateLimiterPolicies:p:QueueProcessingOrder: 'Random' is not a queue processing order (OldestFirst, NewestFirst)")]
    [InlineData("\"Kind\": \"Concurrency\", \"PermitLimit\": 1, \"Key\": \"Cookie\"",
        "RateLimiterPolicies:p:Key: 'Cookie' is not a rate limiter key (ClientIp, Header, Route)")]
    [InlineData("\"Kind\": \"Concurrency\", \"PermitLimit\": 1, \"Key\": \"Header\"",
        "RateLimiterPolicies:p:Name: required when Key is Header (the header's name)")]
    [InlineData("\"Kind\": \"Concurrency\", \"PermitLimit\": 1, \"Key\": \"Header\", \"Name\": \"X Key\"", "RateLimiterPolicies:p:Name: 'X Key' is not a header name")]
    [InlineData("\"Kind\": \"Concurrency\", \"PermitLimit\": 1, \"MaxPartitions\": 0", "RateLimiterPolicies:p:MaxPartitions: '0' must be between 1 and 10000000")]
    public void PolicyErrorsNameTheirPath(string policy, string error)
    {
        // The route's reference to the invalid policy is not reported a second time.
        var result = Load(WithPolicies($$"""
            "p": { {{policy}} }
            """));
        Assert.Equal([error], result.Errors);
        Assert.False(result.IsValid);
    }

    [Fact]
    public void SettingsOfAnotherKindAndTyposAreWarnings()
    {
        var result = Load(WithPolicies("""
            "p": { "Kind": "TokenBucket", "TokenLimit": 10, "TokensPerPeriod": 1, "ReplenishmentPeriod": "1s",
                   "Window": "1m", "PermitLimt": 3, "QueueProcessingOrder": "NewestFirst", "Name": "X-Api-Key" }
            """));
        Assert.Equal([], result.Errors);
        Assert.Equal(
            [
                "RateLimiterPolicies:p:PermitLimt: unknown setting",
                "RateLimiterPolicies:p:Window: has no effect with Kind TokenBucket (its settings: TokenLimit, TokensPerPeriod, ReplenishmentPeriod)",
                "RateLimiterPolicies:p:Name: has no effect unless Key is Header",
                "RateLimiterPolicies:p:QueueProcessingOrder: has no effect without QueueLimit",
            ],
            result.Warnings);

        result = Load(WithPolicies("""
            "p": { "Kind": "Concurrency", "PermitLimit": 1, "Quelimit": 2, "Key": "Route", "MaxPartitions": 5 }
            """));
        Assert.Equal(
            [
                "RateLimiterPolicies:p:Quelimit: unknown setting (did you mean 'QueueLimit'?)",
                "RateLimiterPolicies:p:MaxPartitions: has no effect when Key is Route (one partition per route)",
            ],
            result.Warnings);
    }

    [Fact]
    public void PolicyMustBeASection()
    {
        var result = Load(WithPolicies("\"p\": \"TokenBucket\""));
        Assert.Equal(
            [
                "RateLimiterPolicies:p: expected a section, found the value 'TokenBucket'",
                "Routes:api:RateLimiterPolicy: 'p' is not a policy in RateLimiterPolicies",
            ],
            result.Errors);
    }
}
