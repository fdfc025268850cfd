using System.CommandLine;
using Ferry.Configuration;

namespace Ferry.Cli;

internal static class CheckCommand
{
    public static Command Create()
    {
        var config = new Option<FileInfo>("--config", "-c") { Description = "JSON configuration file", Required = true };
        var command = new Command("check", "Validate a configuration file and exit: 0 when valid, 1 otherwise.") { config };
        command.TreatUnmatchedTokensAsErrors = false;
        command.SetAction(parse =>
        {
            var file = parse.GetRequiredValue(config);
            if (!file.Exists)
            {
                Console.Error.WriteLine($"ferry: configuration file not found: {file.FullName}");
                return 1;
            }
            var configuration = FerryConfigLoader.Build(file.FullName, parse.UnmatchedTokens, Environment.GetEnvironmentVariables());
            var result = FerryConfigLoader.Load(configuration);
            if (!ServerRunner.Report(result, Console.Out, Console.Error))
            {
                return 1;
            }
            var c = result.Config!;
            Console.WriteLine($"ferry: configuration is valid: {c.Listeners.Count} listener(s), {c.Routes.Count} route(s), {c.Clusters.Count} cluster(s).");
            return 0;
        });
        return command;
    }
}
