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
    public void DefaultIsAuto_TheLoopsWhereTheyCanRun()
    {
        var config = LoadValid(Minimal());
        Assert.Equal(EngineKind.Auto, config.Engine.Kind);
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
    public void Auto_IsAcceptedEverywhere_AndReadsTheLoopSettings()
    {
        var result = Load(WithEngine("\"Engine\": \"auto\", \"EventLoops\": 2, \"EventLoopStallThreshold\": \"50ms\""));

        Assert.Equal([], result.Errors);
        Assert.Equal([], result.Warnings);
        Assert.Equal(new EngineConfig(EngineKind.Auto, 2) { StallThreshold = TimeSpan.FromMilliseconds(50) }, result.Config!.Engine);
    }

    [Fact]
    public void UnknownEngine_AndNegativeLoopCount_AreErrors()
    {
        var result = Load(WithEngine("\"Engine\": \"Epoll\", \"EventLoops\": -1"));
        Assert.Contains("Engine: 'Epoll' is not an engine (Sockets, Loops, Auto)", result.Errors);
        Assert.Contains(result.Errors, e => e.StartsWith("EventLoops: '-1' must be between 0 and 1024", StringComparison.Ordinal));
    }

    [Fact]
    public void LoopCountWithTheSocketsEngine_IsWarnedAbout()
    {
        var result = Load(WithEngine("\"Engine\": \"Sockets\", \"EventLoops\": 4"));
        Assert.True(result.IsValid);
        Assert.Equal(["EventLoops: only read with Engine 'Loops' or 'Auto'"], result.Warnings);
    }

    [Fact]
    public void StallThreshold_DefaultsTo10ms_ZeroTurnsTheWatchdogOff_AndBelow1msIsAnError()
    {
        Assert.Equal(TimeSpan.FromMilliseconds(10), LoadValid(Minimal()).Engine.StallThreshold);
        Assert.Equal(TimeSpan.FromMilliseconds(250), Threshold("250ms"));
        Assert.Equal(TimeSpan.Zero, Threshold("0"));

        var result = Load(WithEngine("\"EventLoopStallThreshold\": \"0.5ms\""));
        Assert.Equal(["EventLoopStallThreshold: '0.5ms' must be 0 (no watchdog) or at least 1ms"], result.Errors);
        Assert.Contains("EventLoopStallThreshold: '-1s' must not be negative", Load(WithEngine("\"EventLoopStallThreshold\": \"-1s\"")).Errors);
    }

    // Read whatever the engine (warned about with Sockets).
    private static TimeSpan Threshold(string value)
    {
        var result = Load(WithEngine($"\"EventLoopStallThreshold\": \"{value}\""));
        Assert.Equal([], result.Errors);
        return result.Config!.Engine.StallThreshold;
    }

    [Fact]
    public void StallThresholdWithTheSocketsEngine_IsWarnedAbout()
    {
        var result = Load(WithEngine("\"Engine\": \"Sockets\", \"EventLoopStallThreshold\": \"50ms\""));
        Assert.True(result.IsValid);
        Assert.Equal(["EventLoopStallThreshold: only read with Engine 'Loops' or 'Auto'"], result.Warnings);
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
        var next = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase) { ["Engine"] = "Loops", ["EventLoops"] = "2", ["EventLoopStallThreshold"] = "50ms" };

        var errors = ConfigReloader.RestartOnlyChanges(running, next);

        Assert.Equal(3, errors.Count);
        Assert.StartsWith("Engine: changed; Engine changes need a restart", errors[0]);
        Assert.StartsWith("EventLoops: changed; EventLoops changes need a restart", errors[1]);
        Assert.StartsWith("EventLoopStallThreshold: changed; EventLoopStallThreshold changes need a restart", errors[2]);
    }
}
