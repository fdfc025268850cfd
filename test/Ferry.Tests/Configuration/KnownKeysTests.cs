using static Ferry.Tests.Configuration.ConfigTestJson;

namespace Ferry.Tests.Configuration;

/// <summary>
/// Each section's known keys are what its reader reads. No setting of a section may be reported as unknown, even
/// where the reader stops early at an error, and a typo of one is reported with that setting as the suggestion.
/// </summary>
public sealed class KnownKeysTests
{
    // Each section: where it sits (MEMBERS marks its settings) and every setting it has.
    public static TheoryData<string, string, string[]> Sections => new()
    {
        { "Root", "{ MEMBERS }", ["Listeners", "Admin", "ProxyStatus", "Limits", "RateLimiterPolicies", "Routes", "Clusters", "AccessLog", "Metrics", "Tracing", "Restart"] },
        { "Limits", """{ "Limits": { MEMBERS } }""", ["MaxRequestBodySize"] },
        { "Listener", """{ "Listeners": { "l": { MEMBERS } } }""",
            ["Address", "Protocols", "TrustedProxies", "ProxyProtocol", "AmbiguousPaths", "Certificate", "Sni", "SslProtocols", "Hsts", "RedirectToHttps"] },
        { "Certificate", """{ "Listeners": { "l": { "Address": "127.0.0.1:8080", "Certificate": { MEMBERS } } } }""", ["Path", "KeyPath", "Password"] },
        { "Sni", """{ "Listeners": { "l": { "Address": "127.0.0.1:8080", "Sni": { "a.example.com": { MEMBERS } } } } }""", ["Certificate"] },
        { "Sni with a bad name", """{ "Listeners": { "l": { "Address": "127.0.0.1:8080", "Sni": { "not a name": { MEMBERS } } } } }""", ["Certificate"] },
        { "Hsts", """{ "Listeners": { "l": { "Address": "127.0.0.1:8080", "Hsts": { MEMBERS } } } }""", ["Enabled", "MaxAge", "IncludeSubDomains", "Preload"] },
        { "RedirectToHttps", """{ "Listeners": { "l": { "Address": "127.0.0.1:8080", "RedirectToHttps": { MEMBERS } } } }""", ["Enabled", "Port"] },
        { "Admin", """{ "Admin": { MEMBERS } }""", ["Address", "Enabled", "Token", "AllowedHosts"] },
        { "Restart", """{ "Restart": { MEMBERS } }""", ["ControlSocket", "ShutdownTimeout", "DrainGrace"] },
        { "ProxyStatus", """{ "ProxyStatus": { MEMBERS } }""", ["IncludeDetails"] },
        { "Route", """{ "Routes": { "r": { MEMBERS } } }""",
            ["ClusterId", "Order", "Match", "PathRemovePrefix", "Upgrades", "Transforms", "MaxRequestBodySize", "RateLimiterPolicy"] },
        { "Match", """{ "Routes": { "r": { "ClusterId": "c", "Match": { MEMBERS } } } }""", ["Hosts", "Path", "PathPrefix", "Methods"] },
        { "TokenBucket", """{ "RateLimiterPolicies": { "p": { "Kind": "TokenBucket", MEMBERS } } }""",
            ["Key", "Name", "QueueLimit", "QueueProcessingOrder", "MaxPartitions", "TokenLimit", "TokensPerPeriod", "ReplenishmentPeriod"] },
        { "FixedWindow", """{ "RateLimiterPolicies": { "p": { "Kind": "FixedWindow", MEMBERS } } }""",
            ["Key", "Name", "QueueLimit", "QueueProcessingOrder", "MaxPartitions", "PermitLimit", "Window"] },
        { "SlidingWindow", """{ "RateLimiterPolicies": { "p": { "Kind": "SlidingWindow", MEMBERS } } }""",
            ["Key", "Name", "QueueLimit", "QueueProcessingOrder", "MaxPartitions", "PermitLimit", "Window", "SegmentsPerWindow"] },
        { "Concurrency", """{ "RateLimiterPolicies": { "p": { "Kind": "Concurrency", MEMBERS } } }""",
            ["Key", "Name", "QueueLimit", "QueueProcessingOrder", "MaxPartitions", "PermitLimit"] },
        { "Cluster", """{ "Clusters": { "c": { MEMBERS } } }""",
            ["LoadBalancingPolicy", "Destinations", "KeepAlive", "Timeouts", "Limits", "Forwarding", "Replay", "HealthCheck", "SlowStart", "Panic",
             "MaxConnections", "Queue", "AdaptiveLimit", "Retry", "Hash", "SourceAddresses", "Dns", "Tls"] },
        { "Destination", """{ "Clusters": { "c": { "Destinations": { "d": { MEMBERS } } } } }""", ["Address", "Weight", "Backup", "Tls"] },
        { "Destination Tls", """{ "Clusters": { "c": { "Destinations": { "d": { "Address": "https://a.example.com", "Tls": { MEMBERS } } } } } }""", ["ServerName"] },
        { "Tls", """{ "Clusters": { "c": { "Tls": { MEMBERS } } } }""", ["ServerName", "CaFile", "ClientCertificate", "DangerousAcceptAnyServerCertificate"] },
        { "ClientCertificate", """{ "Clusters": { "c": { "Tls": { "ClientCertificate": { MEMBERS } } } } }""", ["Path", "KeyPath", "Password"] },
        { "HealthCheck", """{ "Clusters": { "c": { "HealthCheck": { MEMBERS } } } }""", ["Passive", "Active"] },
        { "Passive", """{ "Clusters": { "c": { "HealthCheck": { "Passive": { MEMBERS } } } } }""",
            ["Enabled", "MaxFailures", "FailureWindow", "ReactivationPeriod", "FailureStatuses"] },
        { "Active", """{ "Clusters": { "c": { "HealthCheck": { "Active": { MEMBERS } } } } }""",
            ["Enabled", "Interval", "Timeout", "Method", "Path", "ExpectedStatuses", "Rise", "Fall", "Jitter"] },
        { "Panic", """{ "Clusters": { "c": { "Panic": { MEMBERS } } } }""", ["Enabled"] },
        { "Queue", """{ "Clusters": { "c": { "Queue": { MEMBERS } } } }""", ["Size", "Timeout"] },
        { "AdaptiveLimit", """{ "Clusters": { "c": { "AdaptiveLimit": { MEMBERS } } } }""", ["Enabled", "Min", "Max", "Initial"] },
        { "Dns", """{ "Clusters": { "c": { "Dns": { MEMBERS } } } }""", ["RefreshInterval"] },
        { "Retry", """{ "Clusters": { "c": { "Retry": { MEMBERS } } } }""", ["Tries", "Timeout", "OnErrors", "Statuses"] },
        { "Hash", """{ "Clusters": { "c": { "Hash": { MEMBERS } } } }""", ["Key", "Name", "VirtualNodes"] },
        { "KeepAlive", """{ "Clusters": { "c": { "KeepAlive": { MEMBERS } } } }""", ["MaxIdle", "IdleTimeout", "AutoIdleTimeoutCap", "MaxRequests", "MaxLifetime"] },
        { "Timeouts", """{ "Clusters": { "c": { "Timeouts": { MEMBERS } } } }""", ["Connect", "SendRequest", "ResponseHead", "BodyInactivity", "TunnelIdle"] },
        { "Cluster Limits", """{ "Clusters": { "c": { "Limits": { MEMBERS } } } }""", ["MaxResponseHeaderBytes", "MaxResponseHeaderCount"] },
        { "Forwarding", """{ "Clusters": { "c": { "Forwarding": { MEMBERS } } } }""", ["PreserveHost", "XForwarded"] },
        { "Replay", """{ "Clusters": { "c": { "Replay": { MEMBERS } } } }""", ["MaxBodySize", "NonIdempotent"] },
        { "AccessLog", """{ "AccessLog": { MEMBERS } }""", ["Enabled", "Format", "Path", "BufferSize"] },
        { "Metrics", """{ "Metrics": { MEMBERS } }""", ["Enabled", "Otlp"] },
        { "Tracing", """{ "Tracing": { MEMBERS } }""", ["Enabled", "Otlp"] },
        { "Otlp", """{ "Metrics": { "Otlp": { MEMBERS } } }""", ["Endpoint", "Protocol", "Interval"] },
        { "RequestHeader", """{ "Routes": { "r": { "ClusterId": "c", "Transforms": [ { "RequestHeader": "X-A", MEMBERS } ] } } }""", ["Set", "Append"] },
        { "ResponseHeader", """{ "Routes": { "r": { "ClusterId": "c", "Transforms": [ { "ResponseHeader": "X-A", MEMBERS } ] } } }""", ["Set", "Append", "When"] },
        { "ResponseHeaderRemove", """{ "Routes": { "r": { "ClusterId": "c", "Transforms": [ { "ResponseHeaderRemove": "X-A", MEMBERS } ] } } }""", ["When"] },
        { "QueryValueParameter", """{ "Routes": { "r": { "ClusterId": "c", "Transforms": [ { "QueryValueParameter": "q", MEMBERS } ] } } }""", ["Set", "Append"] },
    };

    // Values chosen to be wrong in as many ways as possible: a reader that stops at the first error must still know
    // the settings after it. An unknown key inside one of the settings ("z") is another section's report.
    [Theory]
    [MemberData(nameof(Sections))]
    public void NoSettingOfASectionIsUnknown(string section, string template, string[] keys)
    {
        foreach (var value in new[] { "\"x y\"", "\"\"", "{ \"z\": 1 }" })
        {
            var members = string.Join(", ", keys.Select(k => $"\"{k}\": {value}"));
            var result = Load(template.Replace("MEMBERS", members, StringComparison.Ordinal));

            Assert.True(!result.Warnings.Any(w => keys.Any(k => w.Contains($"{k}: unknown setting", StringComparison.OrdinalIgnoreCase))),
                $"{section} with {value}: {string.Join("; ", result.Warnings)}");
        }
    }

    [Theory]
    [MemberData(nameof(Sections))]
    public void EachSettingAloneIsKnown(string section, string template, string[] keys)
    {
        foreach (var key in keys)
        {
            var result = Load(template.Replace("MEMBERS", $"\"{key}\": \"x y\"", StringComparison.Ordinal));

            Assert.True(!result.Warnings.Any(w => w.Contains($"{key}: unknown setting", StringComparison.OrdinalIgnoreCase)),
                $"{section}:{key}: {string.Join("; ", result.Warnings)}");
        }
    }

    // A misspelt setting is reported at its path with the setting it resembles, whatever else the section holds.
    [Theory]
    [MemberData(nameof(Sections))]
    public void ATypoOfEachSettingIsReportedWithTheSetting(string section, string template, string[] keys)
    {
        foreach (var key in keys)
        {
            // Doubling a letter in the middle is one edit away from this key, and at least as far from any other.
            var typo = key.Insert(key.Length / 2, key[key.Length / 2].ToString());
            var result = Load(template.Replace("MEMBERS", $"\"{typo}\": \"1\"", StringComparison.Ordinal));

            var warning = Assert.Single(result.Warnings, w => w.Contains(typo, StringComparison.Ordinal));
            Assert.True(warning.EndsWith($"{typo}: unknown setting (did you mean '{key}'?)", StringComparison.Ordinal), $"{section}: {warning}");
        }
    }

    [Theory]
    [InlineData("TokenBucket", "Window", "TokenLimit, TokensPerPeriod, ReplenishmentPeriod")]
    [InlineData("FixedWindow", "TokenLimit", "PermitLimit, Window")]
    [InlineData("SlidingWindow", "ReplenishmentPeriod", "PermitLimit, Window, SegmentsPerWindow")]
    [InlineData("Concurrency", "SegmentsPerWindow", "PermitLimit")]
    public void ASettingOfAnotherRateLimiterKindNamesTheKindsOwn(string kind, string key, string own)
    {
        var result = Load($$"""{ "RateLimiterPolicies": { "p": { "Kind": "{{kind}}", "{{key}}": "1" } } }""");

        Assert.Contains($"RateLimiterPolicies:p:{key}: has no effect with Kind {kind} (its settings: {own})", result.Warnings);
    }
}
