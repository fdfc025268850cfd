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
        var takeover = new Option<string?>("--takeover")
        {
            Description = "take the listening sockets over from the Ferry process serving on this control socket (default: Restart:ControlSocket); it stops accepting, drains and exits",
            Arity = ArgumentArity.ZeroOrOne,
        };
        var command = new Command("run",
            "Run Ferry with a configuration file. FERRY__ environment variables and --Section:Key=value arguments override it.")
        {
            config, takeover,
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
            var result = FerryConfigLoader.Load(configuration);
            string? from = null;
            if (parse.GetResult(takeover) is not null)
            {
                from = parse.GetValue(takeover) ?? result.Config?.Restart.ControlSocket;
                if (from is null && result.IsValid)
                {
                    Console.Error.WriteLine("ferry: --takeover needs a control socket: give its path, or set Restart:ControlSocket");
                    return Task.FromResult(1);
                }
            }
            return ServerRunner.RunAsync(result, null, stop, from);
        });
        return command;
    }
}
