using System.Collections;
using Ferry.Configuration;
using Ferry.Hosting;
using Microsoft.Extensions.Logging;

namespace Ferry.FunctionalTests.Support;

// A server started from a configuration file, as `ferry run --config` starts one, so that it can reload it.
internal static class ReloadableServer
{
    public static async Task<FerryServer> StartAsync(string path, IDictionary? environment = null, bool watch = false, TimeSpan? drainGrace = null)
    {
        var source = new ConfigSource(path, [], TestEngine.Apply(environment ?? new Hashtable()));
        var configuration = source.Build();
        var loaded = FerryConfigLoader.Load(configuration);
        Assert.True(loaded.IsValid, string.Join("\n", loaded.Errors));
        return await FerryServer.StartAsync(loaded.Config!, new FerryServerOptions
        {
            ConfigureLogging = l => l.SetMinimumLevel(LogLevel.Warning),
            ShutdownTimeout = TimeSpan.FromSeconds(2),
            DrainGrace = drainGrace ?? RestartConfig.Default.DrainGrace,
            Configuration = configuration,
            Source = source,
            WatchFile = watch,
            Admin = Ferry.Admin.AdminEndpoints.Handler,
        }).WaitAsync(TimeSpan.FromSeconds(30));
    }
}
