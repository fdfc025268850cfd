using System.Collections;
using Ferry.Configuration;
using Ferry.Hosting;
using Microsoft.Extensions.Configuration;

namespace Ferry.Tests.Configuration;

public sealed class ConfigVersionTests
{
    private static string Version(params (string Key, string? Value)[] pairs) =>
        ConfigVersion.Compute(new ConfigurationBuilder().AddInMemoryCollection(pairs.Select(p => KeyValuePair.Create(p.Key, p.Value))).Build());

    [Fact]
    public void SameKeyValues_SameVersion_WhateverTheOrderOrTheLayout()
    {
        var fromFile = ConfigVersion.Compute(ConfigTestJson.Build("""{ "Routes": { "api": { "ClusterId": "b" } }, "Admin": { "Enabled": "false" } }"""));
        var reformatted = ConfigVersion.Compute(ConfigTestJson.Build("""
            {
              "Admin": { "Enabled": "false" },
              "Routes": { "api": { "ClusterId": "b" } }
            }
            """));

        Assert.Equal(fromFile, reformatted);
        Assert.Equal(fromFile, Version(("routes:API:clusterid", "b"), ("Admin:Enabled", "false")));
        Assert.Matches("^[0-9a-f]{12}$", fromFile);
    }

    [Fact]
    public void AnyValueChange_ChangesTheVersion()
    {
        Assert.NotEqual(Version(("a", "1")), Version(("a", "2")));
        Assert.NotEqual(Version(("a", "1")), Version(("a", "1"), ("b", "")));
        // No shifting of text between a key and its value.
        Assert.NotEqual(Version(("a", "bc")), Version(("ab", "c")));
    }

    [Fact]
    public void AnEnvironmentOverride_ChangesTheVersion()
    {
        var directory = Directory.CreateTempSubdirectory("ferry-version-").FullName;
        try
        {
            var path = Path.Combine(directory, "ferry.json");
            File.WriteAllText(path, """{ "Clusters": { "api": { "KeepAlive": { "MaxIdle": 10 } } } }""");

            var plain = ConfigVersion.Compute(new ConfigSource(path, [], new Hashtable()).Build());
            var overridden = ConfigVersion.Compute(new ConfigSource(path, [], new Hashtable { ["FERRY__Clusters__api__KeepAlive__MaxIdle"] = "20" }).Build());
            var argument = ConfigVersion.Compute(new ConfigSource(path, ["--Clusters:api:KeepAlive:MaxIdle=20"], new Hashtable()).Build());
            var same = ConfigVersion.Compute(new ConfigSource(path, ["--Clusters:api:KeepAlive:MaxIdle=10"], new Hashtable()).Build());

            Assert.NotEqual(plain, overridden);
            Assert.Equal(overridden, argument);
            Assert.Equal(plain, same);
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    [Fact]
    public void RestartOnlySections_ChangesAreNamedByPath()
    {
        var running = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase)
        {
            ["Metrics:Enabled"] = "true",
            ["Admin:Token"] = "t",
        };
        var next = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase)
        {
            ["metrics:enabled"] = "true",
            ["Metrics:Otlp:Endpoint"] = "http://127.0.0.1:4317",
            ["Admin:Token"] = "u",
        };

        var errors = ConfigReloader.RestartOnlyChanges(running, next);

        Assert.Equal(2, errors.Count);
        Assert.StartsWith("Admin:Token: changed; Admin changes need a restart", errors[0]);
        Assert.StartsWith("Metrics:Otlp:Endpoint: changed; Metrics changes need a restart", errors[1]);
        Assert.Empty(ConfigReloader.RestartOnlyChanges(running, running));
        Assert.DoesNotContain("Listeners", ConfigReloader.RestartOnlySections);
    }

    [Fact]
    public void ChangedListeners_AreTheIdsAddedRemovedOrWithAnyKeyChanged()
    {
        var running = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase)
        {
            ["Listeners:web:Address"] = "*:8080",
            ["Listeners:api:Address"] = "*:8081",
            ["Listeners:api:TrustedProxies:0"] = "10.0.0.0/8",
            ["Listeners:old:Address"] = "*:8082",
        };
        var next = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase)
        {
            ["listeners:WEB:address"] = "*:8080",
            ["Listeners:api:Address"] = "*:8081",
            ["Listeners:new:Address"] = "*:8083",
        };

        Assert.Equal(["api", "new", "old"], ConfigReloader.ChangedListeners(running, next));
        Assert.Empty(ConfigReloader.ChangedListeners(running, running));
    }
}
