using System.Globalization;
using System.Text.Encodings.Web;
using System.Text.Json;
using Spectre.Console;

namespace Ferry.Doctor;

/// <summary>The audit of one nginx configuration file (with its includes), or why it could not be read.</summary>
internal sealed record ConfigAudit(string File, IReadOnlyList<string> Files, IReadOnlyList<NginxFinding> Findings, string? Error)
{
    public static ConfigAudit Run(string path, NginxAuditConfig config)
    {
        try
        {
            var (directives, files) = NginxConfigParser.ParseFile(path);
            return new ConfigAudit(path, files, NginxConfigAudit.Audit(directives, Path.GetFullPath(path), config), null);
        }
        catch (NginxConfigException e)
        {
            return new ConfigAudit(path, [], [], e.Message);
        }
    }
}

/// <summary>Renders `ferry doctor` results: tables for people (Spectre.Console), stable JSON for scripts (docs/doctor.md).</summary>
internal static class DoctorReport
{
    // Rows of the terminal timeline; minutes are merged into wider buckets until they fit. JSON always has every minute.
    private const int MaxTimelineRows = 30;
    private static readonly int[] BucketMinutes = [1, 5, 15, 60, 360, 1440, 10080];
    private const int MaxUpstreamRows = 20;

    public static void WriteJson(Stream output, ErrorLogReport? log, IReadOnlyList<ConfigAudit> configs)
    {
        // The output goes to scripts and terminals, never into HTML: backquotes and quotes stay readable.
        using var json = new Utf8JsonWriter(output, new JsonWriterOptions { Indented = true, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping });
        json.WriteStartObject();
        if (log is null)
        {
            json.WriteNull("errorLog");
        }
        else
        {
            json.WritePropertyName("errorLog");
            WriteLogJson(json, log);
        }

        json.WriteStartArray("configs");
        foreach (var config in configs)
        {
            json.WriteStartObject();
            json.WriteString("file", config.File);
            json.WriteStartArray("files");
            config.Files.ToList().ForEach(json.WriteStringValue);
            json.WriteEndArray();
            json.WriteString("error", config.Error);
            json.WriteStartArray("findings");
            foreach (var f in config.Findings)
            {
                json.WriteStartObject();
                json.WriteString("code", f.Code);
                json.WriteString("severity", f.Severity.ToString().ToLowerInvariant());
                json.WriteString("file", f.File);
                json.WriteNumber("line", f.Line);
                json.WriteString("message", f.Message);
                json.WriteString("fix", f.Fix);
                json.WriteString("ferry", f.Ferry);
                json.WriteEndObject();
            }

            json.WriteEndArray();
            json.WriteEndObject();
        }

        json.WriteEndArray();
        json.WriteEndObject();
    }

    private static void WriteLogJson(Utf8JsonWriter json, ErrorLogReport log)
    {
        json.WriteStartObject();
        json.WriteStartArray("files");
        log.Files.ToList().ForEach(json.WriteStringValue);
        json.WriteEndArray();
        json.WriteNumber("lines", log.Lines);
        json.WriteNumber("classifiedLines", log.Classified);
        json.WriteNumber("unparsedLines", log.UnparsedLines);
        json.WriteNumber("ignoredLines", log.IgnoredLines);
        json.WriteStartArray("causes");
        foreach (var info in FailureCauseInfo.All)
        {
            json.WriteStartObject();
            json.WriteString("cause", info.Name);
            json.WriteString("title", info.Title);
            json.WriteNumber("count", log.Count(info.Cause));
            json.WriteString("explanation", info.Explanation);
            json.WriteStartArray("nginxFix");
            info.NginxFix.ToList().ForEach(json.WriteStringValue);
            json.WriteEndArray();
            json.WriteString("ferry", info.FerryFix);
            json.WriteEndObject();
        }

        json.WriteEndArray();
        json.WriteStartArray("upstreams");
        foreach (var (upstream, causes) in log.Upstreams)
        {
            json.WriteStartObject();
            json.WriteString("upstream", upstream);
            WriteCounts(json, causes);
            json.WriteEndObject();
        }

        json.WriteEndArray();
        json.WriteStartArray("timeline");
        foreach (var (minute, causes) in log.Minutes)
        {
            json.WriteStartObject();
            json.WriteString("minute", minute.ToString("yyyy-MM-ddTHH:mm", CultureInfo.InvariantCulture));
            WriteCounts(json, causes);
            json.WriteEndObject();
        }

        json.WriteEndArray();
        json.WriteEndObject();
    }

    private static void WriteCounts(Utf8JsonWriter json, IReadOnlyList<long> causes)
    {
        json.WriteNumber("total", causes.Sum());
        json.WriteStartObject("causes");
        foreach (var info in FailureCauseInfo.All.Where(i => causes[(int)i.Cause] > 0))
        {
            json.WriteNumber(info.Name, causes[(int)info.Cause]);
        }

        json.WriteEndObject();
    }

    public static void Render(IAnsiConsole console, ErrorLogReport log)
    {
        console.Write(new Rule("[bold]nginx error log[/]").LeftJustified());
        console.MarkupLineInterpolated(
            $"{log.Lines:N0} lines in {log.Files.Count} file(s): [bold]{log.Classified:N0}[/] errors classified, {log.IgnoredLines:N0} below [[error]] ignored, {log.UnparsedLines:N0} not in nginx's format.");
        if (log.Classified == 0)
        {
            console.WriteLine();
            return;
        }

        var causes = new Table().Border(TableBorder.Rounded).AddColumn("Cause").AddColumn(new TableColumn("Lines").RightAligned()).AddColumn(new TableColumn("Share").RightAligned());
        foreach (var info in FailureCauseInfo.All.Where(i => log.Count(i.Cause) > 0).OrderByDescending(i => log.Count(i.Cause)))
        {
            var count = log.Count(info.Cause);
            causes.AddRow(Markup.Escape(info.Title), count.ToString("N0", CultureInfo.InvariantCulture),
                (count / (double)log.Classified).ToString("P0", CultureInfo.InvariantCulture));
        }

        console.Write(causes);

        var upstreams = log.Upstreams.ToList();
        if (upstreams.Count > 0)
        {
            var table = new Table().Border(TableBorder.Rounded).AddColumn("Upstream").AddColumn(new TableColumn("Lines").RightAligned()).AddColumn("Causes");
            foreach (var (upstream, counts) in upstreams.Take(MaxUpstreamRows))
            {
                table.AddRow(Markup.Escape(upstream), counts.Sum().ToString("N0", CultureInfo.InvariantCulture), Markup.Escape(Breakdown(counts)));
            }

            console.Write(table);
            if (upstreams.Count > MaxUpstreamRows)
            {
                console.MarkupLineInterpolated($"[grey]... and {upstreams.Count - MaxUpstreamRows} more upstreams (--json lists them all)[/]");
            }
        }

        RenderTimeline(console, log);

        foreach (var info in FailureCauseInfo.All.Where(i => log.Count(i.Cause) > 0 && i.NginxFix.Count > 0).OrderByDescending(i => log.Count(i.Cause)))
        {
            console.WriteLine();
            console.MarkupLineInterpolated($"[bold]{info.Title}[/] ({log.Count(info.Cause):N0}): {info.Explanation}");
            foreach (var fix in info.NginxFix)
            {
                console.MarkupLineInterpolated($"  [green]nginx:[/] {fix}");
            }

            console.MarkupLineInterpolated($"  [blue]Ferry:[/] {info.FerryFix}");
        }

        console.WriteLine();
    }

    private static void RenderTimeline(IAnsiConsole console, ErrorLogReport log)
    {
        var minutes = log.Minutes.ToList();
        if (minutes.Count == 0)
        {
            return;
        }

        var width = BucketMinutes.FirstOrDefault(w => minutes.Select(m => Bucket(m.Minute, w)).Distinct().Count() <= MaxTimelineRows, BucketMinutes[^1]);
        var buckets = minutes.GroupBy(m => Bucket(m.Minute, width))
            .Select(g => (Start: g.Key, Counts: Enumerable.Range(0, FailureCauseInfo.All.Count).Select(i => g.Sum(m => m.Causes[i])).ToArray()))
            .ToList();
        var max = buckets.Max(b => b.Counts.Sum());
        var table = new Table().Border(TableBorder.Rounded)
            .Title(width == 1 ? "errors per minute" : $"errors per {width} minutes")
            .AddColumn("From").AddColumn(new TableColumn("Lines").RightAligned()).AddColumn("").AddColumn("Causes");
        foreach (var (start, counts) in buckets)
        {
            var total = counts.Sum();
            var bar = new string('█', (int)Math.Max(1, Math.Round(20.0 * total / max)));
            table.AddRow(start.ToString("yyyy-MM-dd HH:mm", CultureInfo.InvariantCulture), total.ToString("N0", CultureInfo.InvariantCulture),
                $"[red]{bar}[/]", Markup.Escape(Breakdown(counts)));
        }

        console.Write(table);
    }

    private static DateTime Bucket(DateTime minute, int width) =>
        new(minute.Ticks - minute.Ticks % (TimeSpan.TicksPerMinute * width), minute.Kind);

    private static string Breakdown(IReadOnlyList<long> counts) =>
        string.Join(", ", FailureCauseInfo.All.Where(i => counts[(int)i.Cause] > 0).OrderByDescending(i => counts[(int)i.Cause])
            .Select(i => $"{i.Title} {counts[(int)i.Cause]:N0}"));

    public static void Render(IAnsiConsole console, ConfigAudit audit)
    {
        console.Write(new Rule($"[bold]nginx configuration {Markup.Escape(audit.File)}[/]").LeftJustified());
        if (audit.Error is not null)
        {
            console.MarkupLineInterpolated($"[red]cannot parse:[/] {audit.Error}");
            console.WriteLine();
            return;
        }

        var counts = string.Join(", ", Enum.GetValues<FindingSeverity>().Reverse()
            .Select(s => $"{audit.Findings.Count(f => f.Severity == s)} {s.ToString().ToLowerInvariant()}(s)"));
        console.MarkupLineInterpolated($"{audit.Files.Count} file(s) read; {counts}.");
        foreach (var finding in audit.Findings.OrderByDescending(f => f.Severity))
        {
            var color = finding.Severity switch
            {
                FindingSeverity.Error => "red",
                FindingSeverity.Warning => "yellow",
                _ => "grey",
            };
            console.WriteLine();
            console.MarkupLine($"[{color}]{finding.Severity.ToString().ToLowerInvariant()}[/] [bold]{Markup.Escape($"{finding.File}:{finding.Line}")}[/] {Markup.Escape(finding.Code)}");
            console.MarkupLineInterpolated($"  {finding.Message}");
            console.MarkupLineInterpolated($"  [green]fix:[/] {finding.Fix}");
            console.MarkupLineInterpolated($"  [blue]Ferry:[/] {finding.Ferry}");
        }

        console.WriteLine();
    }
}
