using System.CommandLine;
using Ferry.Configuration;
using Ferry.Doctor;
using Spectre.Console;

namespace Ferry.Cli;

// `ferry doctor FILE...`: explains nginx's intermittent 502s from its error logs (plain or gzip'd) and finds their
// causes in its configuration. The kind of each file is detected from its content.
internal static class DoctorCommand
{
    public static Command Create()
    {
        var files = new Argument<FileInfo[]>("files") { Description = "nginx error logs (.gz allowed) and/or nginx configuration files", Arity = ArgumentArity.OneOrMore };
        var json = new Option<bool>("--json") { Description = "JSON output for scripts (fields documented in docs/doctor.md)" };
        var backendTimeout = new Option<string?>("--backend-timeout") { Description = "the backends' idle keep-alive timeout, e.g. 5s" };
        var backendMaxRequests = new Option<int?>("--backend-max-requests") { Description = "requests a backend serves per connection before closing it" };
        var concurrency = new Option<int?>("--concurrency") { Description = "expected peak concurrent requests per nginx worker to one upstream" };
        var probe = new Option<FileInfo?>("--probe") { Description = "`ferry probe --json` output: its idleTimeoutSeconds is the backends' idle timeout" };
        var command = new Command("doctor", "Diagnose nginx's 502s: classify error log lines by cause, and audit an nginx configuration for keep-alive pitfalls.")
        {
            files, json, backendTimeout, backendMaxRequests, concurrency, probe,
        };
        command.SetAction(parse =>
        {
            TimeSpan? idle = null;
            if (parse.GetValue(backendTimeout) is { } timeoutText)
            {
                if (!Durations.TryParse(timeoutText, out var parsed) || parsed <= TimeSpan.Zero)
                {
                    Console.Error.WriteLine($"ferry: --backend-timeout: '{timeoutText}' is not a positive duration ({Durations.Examples})");
                    return 1;
                }

                idle = parsed;
            }
            else if (parse.GetValue(probe) is { } probeFile)
            {
                try
                {
                    idle = ProbeFile.ReadIdleTimeout(probeFile.FullName);
                }
                catch (Exception e) when (e is IOException or InvalidDataException or UnauthorizedAccessException)
                {
                    Console.Error.WriteLine($"ferry: --probe: {e.Message}");
                    return 1;
                }
            }

            var auditConfig = new NginxAuditConfig(idle, parse.GetValue(backendMaxRequests), parse.GetValue(concurrency));
            ErrorLogReport? log = null;
            var audits = new List<ConfigAudit>();
            foreach (var file in parse.GetRequiredValue(files))
            {
                if (!file.Exists)
                {
                    Console.Error.WriteLine($"ferry: file not found: {file.FullName}");
                    return 1;
                }

                try
                {
                    if (DoctorInput.Detect(file.FullName) == DoctorInputKind.ErrorLog)
                    {
                        log ??= new ErrorLogReport();
                        log.ReadFile(file.FullName);
                    }
                    else
                    {
                        audits.Add(ConfigAudit.Run(file.FullName, auditConfig));
                    }
                }
                catch (Exception e) when (e is IOException or InvalidDataException or UnauthorizedAccessException)
                {
                    Console.Error.WriteLine($"ferry: {file.FullName}: {e.Message}");
                    return 1;
                }
            }

            if (parse.GetValue(json))
            {
                using var stdout = Console.OpenStandardOutput();
                DoctorReport.WriteJson(stdout, log, audits);
                stdout.Write("\n"u8);
            }
            else
            {
                // Plain text when redirected, so that the report can be pasted into a postmortem or a ticket.
                var console = AnsiConsole.Create(new AnsiConsoleSettings
                {
                    Out = new AnsiConsoleOutput(Console.Out),
                    Ansi = Console.IsOutputRedirected ? AnsiSupport.No : AnsiSupport.Detect,
                    ColorSystem = Console.IsOutputRedirected ? ColorSystemSupport.NoColors : ColorSystemSupport.Detect,
                });
                if (log is not null)
                {
                    DoctorReport.Render(console, log);
                }

                foreach (var audit in audits)
                {
                    DoctorReport.Render(console, audit);
                }
            }

            return audits.Any(a => a.Error is not null) ? 1 : 0;
        });
        return command;
    }
}
