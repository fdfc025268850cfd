using System.CommandLine;
using Ferry.Configuration;
using Ferry.Hosting;

namespace Ferry.Cli;

internal static class CheckCommand
{
    public static Command Create()
    {
        var config = new Option<FileInfo>("--config", "-c") { Description = "JSON configuration file", Required = true };
        var command = new Command("check",
            "Validate a configuration file and exit: 0 when valid, 1 otherwise. Listener certificates must load and be valid now; "
            + "one that expires within 14 days is a warning.") { config };
        command.TreatUnmatchedTokensAsErrors = false;
        command.SetAction(parse => Run(parse.GetRequiredValue(config), parse.UnmatchedTokens, Console.Out, Console.Error, TimeProvider.System));
        return command;
    }

    public static int Run(FileInfo file, IReadOnlyList<string> overrides, TextWriter output, TextWriter error, TimeProvider time)
    {
        if (!file.Exists)
        {
            error.WriteLine($"ferry: configuration file not found: {file.FullName}");
            return 1;
        }
        var configuration = FerryConfigLoader.Build(file.FullName, overrides, Environment.GetEnvironmentVariables());
        var result = FerryConfigLoader.Load(configuration);
        if (result.Config is { } loaded)
        {
            // The server starts with an expired certificate (some clients do not check, and a renewal is picked up
            // without a restart), but a check before a deployment should stop it.
            var (errors, warnings) = CertificateValidity(loaded, time.GetUtcNow());
            result = result with
            {
                Config = errors.Count == 0 ? loaded : null,
                Errors = [.. result.Errors, .. errors],
                Warnings = [.. result.Warnings, .. warnings],
            };
        }
        if (!ServerRunner.Report(result, output, error))
        {
            return 1;
        }
        var c = result.Config!;
        output.WriteLine($"ferry: configuration is valid: {c.Listeners.Count} listener(s), {c.Routes.Count} route(s), {c.Clusters.Count} cluster(s).");
        return 0;
    }

    internal static (List<string> Errors, List<string> Warnings) CertificateValidity(FerryConfig config, DateTimeOffset now)
    {
        var errors = new List<string>();
        var warnings = new List<string>();
        foreach (var listener in config.Listeners)
        {
            foreach (var source in listener.Tls?.Certificates ?? [])
            {
                if (source.Initial is not { } certificate)
                {
                    continue;
                }
                if (certificate.NotAfter <= now)
                {
                    errors.Add($"{source.ConfigPath}: '{source.Path}' expired on {certificate.NotAfter:u} ({certificate.Subject})");
                }
                else if (certificate.NotBefore > now)
                {
                    errors.Add($"{source.ConfigPath}: '{source.Path}' is not valid before {certificate.NotBefore:u} ({certificate.Subject})");
                }
                else if (certificate.NotAfter - now < CertificateStore.ExpiryWarning)
                {
                    warnings.Add($"{source.ConfigPath}: '{source.Path}' expires on {certificate.NotAfter:u}, in {(certificate.NotAfter - now).TotalDays:0.#} days ({certificate.Subject})");
                }
            }
        }
        return (errors, warnings);
    }
}
