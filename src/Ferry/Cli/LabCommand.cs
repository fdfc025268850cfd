using System.CommandLine;
using Ferry.Configuration;
using Ferry.Incidents;
using Spectre.Console;

namespace Ferry.Cli;

// `ferry lab [incident]`: reproduces the classic 502 incidents on loopback, through Ferry and (when installed) nginx,
// and prints a side-by-side table. Exit codes: 0 ran, 1 bad arguments.
internal static class LabCommand
{
    /// <summary>Beyond a second the relay no longer models a network path between a proxy and its upstreams.</summary>
    private static readonly TimeSpan MaxLatency = TimeSpan.FromSeconds(1);

    public static Command Create()
    {
        var names = string.Join(", ", Incident.All.Select(i => i.Name));
        var incident = new Argument<string>("incident") { Description = $"{names} or all", DefaultValueFactory = _ => "all" };
        var requests = new Option<int>("--requests") { Description = "most requests per incident and proxy", DefaultValueFactory = _ => 10_000 };
        var duration = new Option<string>("--duration") { Description = "longest run per incident and proxy (e.g. 60s)", DefaultValueFactory = _ => "60s" };
        var json = new Option<bool>("--json") { Description = "print the results as JSON" };
        var noNginx = new Option<bool>("--no-nginx") { Description = "run through Ferry only, even if nginx is installed" };
        var latency = new Option<string?>("--latency")
        {
            Description = "one-way delay added between the proxy and the upstream by a relay, e.g. 1ms, 0 for none " +
                          "(default: 1ms for keepalive-race, 0 for the others)",
        };
        var command = new Command("lab", "Reproduce keep-alive races, silent max-requests closes and backlog overflows through Ferry and nginx, side by side.")
        {
            incident, requests, duration, json, noNginx, latency,
        };
        command.SetAction(async (parse, stop) =>
        {
            var name = parse.GetValue(incident)!;
            var selected = name.Equals("all", StringComparison.OrdinalIgnoreCase) ? Incident.All : Incident.Find(name) is { } one ? [one] : null;
            if (selected is null)
            {
                await Console.Error.WriteLineAsync($"ferry lab: unknown incident '{name}' ({names} or all)");
                return 1;
            }
            var durationText = parse.GetValue(duration)!;
            if (!Durations.TryParse(durationText, out var limit) || limit <= TimeSpan.Zero)
            {
                await Console.Error.WriteLineAsync($"ferry lab: --duration '{durationText}' is not a positive duration ({Durations.Examples})");
                return 1;
            }
            if (parse.GetValue(requests) < 1)
            {
                await Console.Error.WriteLineAsync("ferry lab: --requests must be at least 1");
                return 1;
            }
            TimeSpan? delay = null;
            if (parse.GetValue(latency) is { } latencyText)
            {
                if (!Durations.TryParse(latencyText, out var parsed) || parsed < TimeSpan.Zero || parsed > MaxLatency)
                {
                    await Console.Error.WriteLineAsync($"ferry lab: --latency '{latencyText}' is not a delay from 0 to 1s (1ms, 0.5ms, 0)");
                    return 1;
                }
                delay = parsed;
            }
            bool asJson = parse.GetValue(json);
            var nginx = parse.GetValue(noNginx) ? null : NginxProxy.Find();
            var skipped = parse.GetValue(noNginx) ? "--no-nginx" : nginx is null ? "nginx is not on PATH" : null;
            return await RunAsync(selected, parse.GetValue(requests), limit, delay, nginx, skipped, asJson,
                showProgress: !asJson && !Console.IsOutputRedirected, Console.Out, TimeProvider.System, stop);
        });
        return command;
    }

    /// <param name="latency">One-way delay for every incident; null: each incident's own default.</param>
    internal static async Task<int> RunAsync(IReadOnlyList<Incident> incidents, int requests, TimeSpan duration, TimeSpan? latency,
        string? nginx, string? nginxSkipped, bool json, bool showProgress, TextWriter output, TimeProvider time, CancellationToken stop)
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
            console.Profile.Width = 160;
        }
        var runner = new IncidentRunner(requests, duration, time);
        var results = new List<IncidentResult>();
        async Task RunAll(Action<string> status)
        {
            foreach (var incident in incidents)
            {
                var delay = latency ?? incident.DefaultLatency;
                status($"{incident.Name} through Ferry (up to {duration.TotalSeconds:0} s): {incident.Description}");
                results.Add(await runner.RunThroughFerryAsync(incident, delay, stop));
                if (incident.CompareAdaptiveLimit)
                {
                    status($"{incident.Name} through Ferry without its adaptive limit (up to {duration.TotalSeconds:0} s)");
                    results.Add(await runner.RunThroughFerryAsync(incident, delay, stop, adaptiveLimit: false));
                }
                if (nginx is not null)
                {
                    status($"{incident.Name} through nginx (up to {duration.TotalSeconds:0} s): {incident.Description}");
                    results.Add(await runner.RunThroughNginxAsync(incident, delay, nginx, stop));
                }
            }
        }

        if (showProgress)
        {
            await console.Status().StartAsync("starting", ctx => RunAll(s => ctx.Status(Markup.Escape(s))));
        }
        else
        {
            await RunAll(_ => { });
        }

        var report = new LabReport(results, nginxSkipped);
        if (json)
        {
            await output.WriteLineAsync(report.ToJson());
        }
        else
        {
            IncidentTable.Write(console, report);
        }
        return 0;
    }
}
