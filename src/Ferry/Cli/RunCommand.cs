using System.CommandLine;
using Ferry.Configuration;
using Ferry.Hosting;

namespace Ferry.Cli;

internal static class RunCommand
{
    public static Command Create()
    {
        var config = new Option<FileInfo>("--config", "-c")
        {
            Description = "JSON configuration file (see ferry.example.json and docs/configuration.md)",
            Required = true,
        };
        var command = new Command("run",
            "Run Ferry with a configuration file. FERRY__ environment variables and --Section:Key=value arguments override it.")
        {
            config,
        };
        command.TreatUnmatchedTokensAsErrors = false;
        command.SetAction((parse, stop) =>
        {
            var file = parse.GetRequiredValue(config);
            if (!file.Exists)
            {
                Console.Error.WriteLine($"ferry: configuration file not found: {file.FullName}");
                return Task.FromResult(1);
            }
            // Kept for reloads: the file is read again under the same overrides (docs/configuration.md, "Reload").
            var source = new ConfigSource(file.FullName, [.. parse.UnmatchedTokens], Environment.GetEnvironmentVariables());
            var configuration = source.Build();
            return ServerRunner.RunAsync(FerryConfigLoader.Load(configuration), null, stop,
                new FerryServerOptions { Configuration = configuration, Source = source });
        });
        return command;
    }
}
