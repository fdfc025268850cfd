using System.Collections;
using Ferry.Configuration;

namespace Ferry.FunctionalTests.Support;

// FERRY_TEST_ENGINE=Loops runs every Ferry these tests start (in this process or as a child process) on the event
// loops instead of Kestrel's socket transport, so that the whole suite can run on either engine.
internal static class TestEngine
{
    public static string? Name { get; } = Environment.GetEnvironmentVariable("FERRY_TEST_ENGINE") is { Length: > 0 } name ? name : null;

    public static Dictionary<string, string?> Apply(Dictionary<string, string?> settings)
    {
        if (Name is not null)
        {
            settings.TryAdd("Engine", Name);
        }
        return settings;
    }

    public static FerryConfig Apply(FerryConfig config) =>
        Name is null ? config : config with { Engine = config.Engine with { Kind = Enum.Parse<EngineKind>(Name, ignoreCase: true) } };

    // The FERRY__ environment a configuration file is read with.
    public static IDictionary Apply(IDictionary environment)
    {
        if (Name is not null && !environment.Contains("FERRY__Engine"))
        {
            environment["FERRY__Engine"] = Name;
        }
        return environment;
    }
}
