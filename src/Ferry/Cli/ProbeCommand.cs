using System.CommandLine;
using Ferry.Configuration;
using Ferry.Probe;
using Spectre.Console;

namespace Ferry.Cli;

// `ferry probe URL`: measures a backend's keep-alive behaviour and prints the proxy settings that avoid racing it.
// Exit codes: 0 measured, 1 bad arguments, 2 the target cannot be probed (DNS, refused, timeout, not HTTP).
internal static class ProbeCommand
{
    public static Command Create()
    {
        var url = new Argument<string>("url") { Description = "the backend to measure, e.g. http://10.0.0.5:8000/" };
        var maxIdle = new Option<string>("--max-idle") { Description = "longest idle time to search (e.g. 130s)", DefaultValueFactory = _ => "130s" };
        var maxRequests = new Option<int>("--max-requests") { Description = "most requests to send on one connection", DefaultValueFactory = _ => ProbeConfig.DefaultMaxRequests };
        var json = new Option<bool>("--json") { Description = "print the result as JSON (see docs/probe.md)" };
        var timeout = new Option<string>("--timeout") { Description = "bound on the whole probe (e.g. 180s)", DefaultValueFactory = _ => "180s" };
        var command = new Command("probe", "Measure a backend's keep-alive behaviour (idle timeout, requests per connection, FIN or RST) and print the settings that avoid 502s.")
        {
            url, maxIdle, maxRequests, json, timeout,
        };
        command.SetAction(async (parse, stop) =>
        {
            if (!TryConfig(parse.GetValue(url)!, parse.GetValue(maxIdle)!, parse.GetValue(maxRequests), parse.GetValue(timeout)!, out var config, out var problem))
            {
                await Console.Error.WriteLineAsync($"ferry probe: {problem}");
                return 1;
            }
            bool asJson = parse.GetValue(json);
            return await RunAsync(config, asJson, showProgress: !asJson && !Console.IsOutputRedirected, Console.Out, Console.Error, TimeProvider.System, stop);
        });
        return command;
    }

    internal static bool TryConfig(string url, string maxIdle, int maxRequests, string timeout, out ProbeConfig config, out string problem)
    {
        config = null!;
        problem = "";
        if (!Uri.TryCreate(url, UriKind.Absolute, out var uri) || uri.Scheme != Uri.UriSchemeHttp || uri.Host.Length == 0)
        {
            problem = $"'{url}' is not an http:// URL (https backends are not supported)";
            return false;
        }
        if (!Durations.TryParse(maxIdle, out var idle) || idle <= TimeSpan.Zero)
        {
            problem = $"--max-idle '{maxIdle}' is not a positive duration ({Durations.Examples})";
            return false;
        }
        if (!Durations.TryParse(timeout, out var total) || total <= TimeSpan.Zero)
        {
            problem = $"--timeout '{timeout}' is not a positive duration ({Durations.Examples})";
            return false;
        }
        if (maxRequests < 1)
        {
            problem = "--max-requests must be at least 1";
            return false;
        }
        // The idle search ends at --max-idle, then one more request may need ExchangeTimeout.
        if (total < idle + ProbeConfig.ExchangeTimeout)
        {
            problem = $"--timeout must exceed --max-idle by at least {ProbeConfig.ExchangeTimeout.TotalSeconds:0} s";
            return false;
        }
        config = new ProbeConfig(uri, idle, maxRequests, total);
        return true;
    }

    internal static async Task<int> RunAsync(ProbeConfig config, bool json, bool showProgress, TextWriter output, TextWriter error,
        TimeProvider time, CancellationToken stop)
    {
        // Colours only on a terminal: redirected output is for files, pipes and postmortems.
        var console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Out = new AnsiConsoleOutput(output),
            Ansi = showProgress ? AnsiSupport.Detect : AnsiSupport.No,
        });
        if (!showProgress)
        {
            // Without a terminal Spectre assumes 80 columns, which truncates the table's headers.
            console.Profile.Width = 120;
        }
        ProbeReport report;
        try
        {
            if (showProgress)
            {
                report = await console.Status().StartAsync($"probing {Markup.Escape(config.Target.ToString())}", ctx =>
                    new BackendProber(config, time, status => ctx.Status(Markup.Escape(status))).RunAsync(stop));
            }
            else
            {
                report = await new BackendProber(config, time).RunAsync(stop);
            }
        }
        catch (ProbeException e)
        {
            await error.WriteLineAsync($"ferry probe: {e.Failure.ToString().ToLowerInvariant()}: {e.Message}");
            return 2;
        }
        if (json)
        {
            await output.WriteLineAsync(report.ToJson());
        }
        else
        {
            ProbeView.Write(console, report);
        }
        return 0;
    }
}
