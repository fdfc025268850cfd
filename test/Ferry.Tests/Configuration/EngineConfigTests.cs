using System.Collections;
using Ferry.Configuration;
using Ferry.Hosting;
using Ferry.Loops;
using static Ferry.Tests.Configuration.ConfigTestJson;

namespace Ferry.Tests.Configuration;

public sealed class EngineConfigTests
{
    private static string WithEngine(string members) => Minimal().Replace("\"Listeners\":", members + ", \"Listeners\":");

    [Fact]
    public void DefaultIsKestrelsSocketTransport()
    {
        var config = LoadValid(Minimal());
        Assert.Equal(EngineKind.Sockets, config.Engine.Kind);
        Assert.Equal(0, config.Engine.EventLoops);
    }

    [Fact]
    public void LoopsAreAcceptedWhereSupported_AndRefusedElsewhere()
    {
        var result = Load(WithEngine("\"Engine\": \"loops\", \"EventLoops\": 3"));
        if (Native.IsSupported)
        {
            Assert.Equal([], result.Errors);
            Assert.Equal(new EngineConfig(EngineKind.Loops, 3), result.Config!.Engine);
        }
        else
        {
            Assert.Contains(result.Errors, e => e.StartsWith("Engine: 'Loops' needs Linux", StringComparison.Ordinal));
        }
    }

    [Fact]
    public void UnknownEngine_AndNegativeLoopCount_AreErrors()
    {
        var result = Load(WithEngine("\"Engine\": \"Epoll\", \"EventLoops\": -1"));
        Assert.Contains("Engine: 'Epoll' is not an engine (Sockets, Loops)", result.Errors);
        Assert.Contains(result.Errors, e => e.StartsWith("EventLoops: '-1' must be between 0 and 1024", StringComparison.Ordinal));
    }

    [Fact]
    public void LoopCountWithoutTheLoopsEngine_IsWarnedAbout()
    {
        var result = Load(WithEngine("\"EventLoops\": 4"));
        Assert.True(result.IsValid);
        Assert.Equal(["EventLoops: only read with Engine 'Loops'"], result.Warnings);
    }

    [Fact]
    public void CommandLineOverride_SelectsTheEngine()
    {
        var configuration = FerryConfigLoader.Build(null, ["--Engine=Sockets", "--EventLoops=2"], new Hashtable());
        Assert.Equal("Sockets", configuration["Engine"]);
        Assert.Equal("2", configuration["EventLoops"]);
    }

    [Fact]
    public void AReloadChangingTheEngine_NeedsARestart()
    {
        var running = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase) { ["Engine"] = "Sockets" };
        var next = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase) { ["Engine"] = "Loops", ["EventLoops"] = "2" };

        var errors = ConfigReloader.RestartOnlyChanges(running, next);

        Assert.Equal(2, errors.Count);
        Assert.StartsWith("Engine: changed; Engine changes need a restart", errors[0]);
        Assert.StartsWith("EventLoops: changed; EventLoops changes need a restart", errors[1]);
    }
}
