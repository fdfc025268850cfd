using Ferry.Cli;

namespace Ferry.FunctionalTests.Restart;

public sealed class TakeoverCommandTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("ferry-takeover-").FullName;

    [Fact]
    public async Task Takeover_WithNobodyOnTheControlSocket_ExitsNonZero_AndStartsNothing()
    {
        var file = Path.Combine(_dir, "control.json");
        File.WriteAllText(file, """
            { "Listeners": { "a": { "Address": "127.0.0.1:0" } },
              "Admin": { "Enabled": false },
              "Routes": { "r": { "ClusterId": "c" } },
              "Clusters": { "c": { "Destinations": { "d": { "Address": "http://127.0.0.1:9000" } } } } }
            """);

        Assert.Equal(2, await FerryCommandLine.InvokeAsync(["run", "--config", file, "--takeover", $"--Restart:ControlSocket={Path.Combine(_dir, "nobody.sock")}"]));
    }

    public void Dispose() => Directory.Delete(_dir, recursive: true);
}
