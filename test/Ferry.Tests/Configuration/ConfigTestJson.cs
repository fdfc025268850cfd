using System.Text;
using Ferry.Configuration;
using Microsoft.Extensions.Configuration;

namespace Ferry.Tests.Configuration;

internal static class ConfigTestJson
{
    public static IConfigurationRoot Build(string json) =>
        new ConfigurationBuilder().AddJsonStream(new MemoryStream(Encoding.UTF8.GetBytes(json))).Build();

    public static ConfigLoadResult Load(string json) => FerryConfigLoader.Load(Build(json));

    /// <summary>Loads a config that must be valid with no warnings; the messages are in the assertion failure.</summary>
    public static FerryConfig LoadValid(string json)
    {
        var result = Load(json);
        Assert.Equal([], result.Errors);
        Assert.Equal([], result.Warnings);
        Assert.True(result.IsValid);
        return result.Config!;
    }

    /// <summary>One listener, one route, one cluster with one destination; <paramref name="cluster"/> and
    /// <paramref name="route"/> are extra members spliced into the cluster and route objects.</summary>
    public static string Minimal(string cluster = "", string route = "", string destination = "") => $$"""
        {
          "Listeners": { "public": { "Address": "127.0.0.1:8080" } },
          "Routes": { "api": { "ClusterId": "backend" {{Prefix(route)}} } },
          "Clusters": {
            "backend": {
              "Destinations": { "a": { "Address": "http://127.0.0.1:9000" {{Prefix(destination)}} } }
              {{Prefix(cluster)}}
            }
          }
        }
        """;

    private static string Prefix(string members) => members.Length == 0 ? "" : ", " + members;
}
