using System.Globalization;
using Spectre.Console;

namespace Ferry.Incidents;

/// <summary>The side-by-side table, the kind pasted into a postmortem.</summary>
internal static class IncidentTable
{
    public static void Write(IAnsiConsole console, LabReport report)
    {
        var table = new Table().Border(TableBorder.Rounded).Title("ferry lab")
            .AddColumn("incident").AddColumn("proxy")
            .AddColumn(new TableColumn("sent").RightAligned())
            .AddColumn(new TableColumn("2xx").RightAligned())
            .AddColumn(new TableColumn("5xx").RightAligned())
            .AddColumn(new TableColumn("errors").RightAligned())
            .AddColumn(new TableColumn("upstream reqs").RightAligned())
            .AddColumn(new TableColumn("upstream conns").RightAligned())
            .AddColumn(new TableColumn("s").RightAligned());
        foreach (var r in report.Results)
        {
            table.AddRow(
                Markup.Escape(r.Incident),
                Markup.Escape(r.Proxy),
                Number(r.Requests),
                Number(r.Ok),
                r.ServerErrors > 0 ? $"[red]{Number(r.ServerErrors)}[/]" : "0",
                r.Errors > 0 ? $"[red]{Number(r.Errors)}[/]" : "0",
                Number(r.UpstreamRequests),
                Number(r.UpstreamConnections),
                r.Seconds.ToString("0.0", CultureInfo.InvariantCulture));
        }
        console.Write(table);
        console.MarkupLine("[grey]errors: requests with no complete response (reset, closed, timed out); " +
                           "upstream: what the Lab upstream counted itself[/]");
        if (report.NginxSkipped is { } reason)
        {
            console.MarkupLine($"[grey]nginx column skipped: {Markup.Escape(reason)}[/]");
        }
    }

    private static string Number(int value) => value.ToString("N0", CultureInfo.InvariantCulture);
}
