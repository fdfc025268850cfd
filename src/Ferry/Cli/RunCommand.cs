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
        // A flag rather than an option with a value: a value would swallow a following --Section:Key=value override.
        var takeover = new Option<bool>("--takeover")
        {
            Description = "take the listening sockets over from the Ferry process serving on Restart:ControlSocket; it stops accepting, drains and exits",
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
            // Kept for reloads: the file is read again under the same overrides (docs/configuration.md, "Reload").
            var source = new ConfigSource(file.FullName, [.. parse.UnmatchedTokens], Environment.GetEnvironmentVariables());
            var configuration = source.Build();
            var result = FerryConfigLoader.Load(configuration);
            string? from = null;
            if (parse.GetValue(takeover) && result.IsValid)
            {
                from = result.Config!.Restart.ControlSocket;
                if (from is null)
                {
                    Console.Error.WriteLine("ferry: --takeover needs Restart:ControlSocket, the control socket of the running process");
                    return Task.FromResult(1);
                }
            }
            return ServerRunner.RunAsync(result, null, stop, from, new FerryServerOptions { Configuration = configuration, Source = source });
        });
        return command;
    }
}
