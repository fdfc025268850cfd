using Ferry.Configuration;
using static Ferry.Tests.Configuration.ConfigTestJson;

namespace Ferry.Tests.Configuration;

public sealed class RestartConfigTests
{
    [Fact]
    public void Defaults_NoControlSocket_ThirtySecondsToDrain_OneSecondOfGrace()
    {
        var config = LoadValid(Minimal());

        Assert.Null(config.Restart.ControlSocket);
        Assert.Equal(TimeSpan.FromSeconds(30), config.Restart.ShutdownTimeout);
        Assert.Equal(TimeSpan.FromSeconds(1), config.Restart.DrainGrace);
    }

    [Fact]
    public void Settings_AreRead()
    {
        var config = LoadValid(Minimal().Replace("\"Routes\"", """
            "Restart": { "ControlSocket": "/run/ferry/ferry.sock", "ShutdownTimeout": "2m", "DrainGrace": "0s" },
            "Routes"
            """, StringComparison.Ordinal));

        Assert.Equal("/run/ferry/ferry.sock", config.Restart.ControlSocket);
        Assert.Equal(TimeSpan.FromMinutes(2), config.Restart.ShutdownTimeout);
        Assert.Equal(TimeSpan.Zero, config.Restart.DrainGrace);
    }

    [Theory]
    [InlineData("\"ControlSocket\": \"ferry.sock\"", "Restart:ControlSocket: 'ferry.sock' must be an absolute path")]
    [InlineData("\"ShutdownTimeout\": \"-1s\"", "Restart:ShutdownTimeout: '-1s' must not be negative")]
    [InlineData("\"DrainGrace\": \"soon\"", "Restart:DrainGrace: 'soon' is not a duration")]
    public void InvalidSettings_AreErrorsWithTheirPath(string member, string error)
    {
        var result = Load(Minimal().Replace("\"Routes\"", $$"""
            "Restart": { {{member}} },
            "Routes"
            """, StringComparison.Ordinal));

        Assert.False(result.IsValid);
        Assert.Contains(result.Errors, e => e.StartsWith(error, StringComparison.Ordinal));
    }

    [Fact]
    public void UnknownKey_IsAWarning()
    {
        var result = Load(Minimal().Replace("\"Routes\"", """
            "Restart": { "ControlSockets": "/run/ferry.sock" },
            "Routes"
            """, StringComparison.Ordinal));

        Assert.Contains("Restart:ControlSockets: unknown setting (did you mean 'ControlSocket'?)", result.Warnings);
    }
}
