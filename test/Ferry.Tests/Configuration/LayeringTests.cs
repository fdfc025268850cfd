using Ferry.Configuration;

namespace Ferry.Tests.Configuration;

public sealed class LayeringTests : IDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("ferry-config-").FullName;

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    private string WriteFile(string json)
    {
        var path = Path.Combine(_directory, "ferry.json");
        File.WriteAllText(path, json);
        return path;
    }

    private const string FileJson = """
        {
          "Listeners": { "public": { "Address": "127.0.0.1:8080" } },
          "Routes": { "api": { "ClusterId": "api" } },
          "Clusters": {
            "api": {
              "Destinations": { "a": { "Address": "http://127.0.0.1:9000" } },
              "KeepAlive": { "MaxIdle": 10, "MaxRequests": 10 },
              "Timeouts": { "Connect": "1s" }
            }
          }
        }
        """;

    [Fact]
    public void EnvironmentOverridesFileAndCommandLineOverridesBoth()
    {
        var environment = new Dictionary<string, string>
        {
            ["FERRY__Clusters__api__KeepAlive__MaxIdle"] = "20",
            ["FERRY__Clusters__api__KeepAlive__MaxRequests"] = "20",
            ["ferry__clusters__api__destinations__b__address"] = "http://127.0.0.1:9001",
            ["OTHER__Clusters__api__KeepAlive__MaxLifetime"] = "5s",
            ["Clusters__api__Timeouts__Connect"] = "5s",
            ["FERRY__"] = "ignored",
        };
        string[] args = ["--Clusters:api:KeepAlive:MaxIdle=30", "--Clusters:api:Destinations:a:Weight", "7"];

        var result = FerryConfigLoader.Load(FerryConfigLoader.Build(WriteFile(FileJson), args, environment));

        Assert.Equal([], result.Errors);
        Assert.Equal([], result.Warnings);
        var cluster = result.Config!.Clusters["api"];
        Assert.Equal(30, cluster.KeepAlive.MaxIdle);
        Assert.Equal(20, cluster.KeepAlive.MaxRequests);
        Assert.Equal(KeepAliveConfig.Default.MaxLifetime, cluster.KeepAlive.MaxLifetime);
        Assert.Equal(TimeSpan.FromSeconds(1), cluster.Timeouts.Connect);
        Assert.Equal(["a", "b"], cluster.Destinations.Select(d => d.DestinationId));
        Assert.Equal([7, 1], cluster.Destinations.Select(d => d.Weight));
        Assert.Equal(9001, cluster.Destinations[1].Port);
    }

    [Fact]
    public void WorksWithoutAFile()
    {
        var environment = new Dictionary<string, string>
        {
            ["FERRY__Listeners__public__Address"] = "127.0.0.1:0",
            ["FERRY__Routes__api__ClusterId"] = "api",
            ["FERRY__Clusters__api__Destinations__a__Address"] = "http://127.0.0.1:9000",
        };

        var result = FerryConfigLoader.Load(FerryConfigLoader.Build(null, ["--Routes:api:Match:PathPrefix=/api"], environment));

        Assert.Equal([], result.Errors);
        Assert.Equal("/api", Assert.Single(result.Config!.Routes).Match.PathPrefix);
    }

    [Fact]
    public void ErrorsNameTheSettingWhicheverLayerSetIt()
    {
        var environment = new Dictionary<string, string> { ["FERRY__Clusters__api__Destinations__a__Address"] = "htp://x" };

        var result = FerryConfigLoader.Load(FerryConfigLoader.Build(WriteFile(FileJson), ["--Clusters:api:Timeouts:Connect=soon"], environment));

        Assert.Equal(
            [
                "Clusters:api:Destinations:a:Address: 'htp://x' is not an http or https URI",
                "Clusters:api:Timeouts:Connect: 'soon' is not a duration (e.g. 250ms, 5s, 1.5s, 2m, 1h, 00:00:05)",
            ],
            result.Errors);
    }

    [Fact]
    public void MissingFileThrowsWithItsPath()
    {
        var missing = Path.Combine(_directory, "absent.json");
        var exception = Assert.Throws<FileNotFoundException>(() => FerryConfigLoader.Build(missing, [], new Dictionary<string, string>()));
        Assert.Equal(missing, exception.FileName);
        Assert.Contains(missing, exception.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void MalformedJsonThrows()
    {
        var path = WriteFile("{ \"Listeners\": ");
        Assert.Throws<InvalidDataException>(() => FerryConfigLoader.Build(path, [], new Dictionary<string, string>()));
    }
}
