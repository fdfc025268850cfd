using Ferry.Cli;

namespace Ferry.Tests.Cli;

public sealed class CommandLineTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("ferry-cli-").FullName;

    [Fact]
    public async Task InvalidConfiguration_ExitsNonZero_AndStartsNothing()
    {
        var file = Write("bad.json", """{ "Listeners": { "a": { "Address": "127.0.0.1:0" } }, "Routes": { "r": { "ClusterId": "missing" } } }""");

        Assert.Equal(1, await FerryCommandLine.InvokeAsync(["run", "--config", file]));
        Assert.Equal(1, await FerryCommandLine.InvokeAsync(["check", "--config", file]));
    }

    [Fact]
    public async Task MissingConfigurationFile_ExitsNonZero()
    {
        Assert.Equal(1, await FerryCommandLine.InvokeAsync(["run", "--config", Path.Combine(_dir, "absent.json")]));
    }

    [Fact]
    public async Task Check_AcceptsAValidFile_AndCommandLineOverridesReachTheLoader()
    {
        var file = Write("ok.json", """
            { "Listeners": { "a": { "Address": "127.0.0.1:0" } },
              "Routes": { "r": { "ClusterId": "c" } },
              "Clusters": { "c": { "Destinations": { "d": { "Address": "http://127.0.0.1:9000" } } } } }
            """);

        Assert.Equal(0, await FerryCommandLine.InvokeAsync(["check", "--config", file]));
        Assert.Equal(1, await FerryCommandLine.InvokeAsync(["check", "--config", file, "--Clusters:c:Destinations:d:Address=htp://x"]));
    }

    [Fact]
    public async Task Takeover_WithoutAControlSocket_ExitsNonZero()
    {
        var file = Write("no-control.json", """
            { "Listeners": { "a": { "Address": "127.0.0.1:0" } },
              "Routes": { "r": { "ClusterId": "c" } },
              "Clusters": { "c": { "Destinations": { "d": { "Address": "http://127.0.0.1:9000" } } } } }
            """);

        Assert.Equal(1, await FerryCommandLine.InvokeAsync(["run", "--config", file, "--takeover"]));
    }

    private string Write(string name, string json)
    {
        var path = Path.Combine(_dir, name);
        File.WriteAllText(path, json);
        return path;
    }

    public void Dispose() => Directory.Delete(_dir, recursive: true);
}
