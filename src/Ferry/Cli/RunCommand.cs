using System.CommandLine;
using Ferry.Configuration;

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
            var configuration = FerryConfigLoader.Build(file.FullName, parse.UnmatchedTokens, Environment.GetEnvironmentVariables());
            return ServerRunner.RunAsync(FerryConfigLoader.Load(configuration), null, stop);
        });
        return command;
    }
}
