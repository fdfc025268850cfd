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
            .AddColumn(new TableColumn("delay").RightAligned())
            .AddColumn(new TableColumn("sent").RightAligned())
            .AddColumn(new TableColumn("2xx").RightAligned())
            .AddColumn(new TableColumn("5xx GET").RightAligned())
            .AddColumn(new TableColumn("5xx POST").RightAligned())
            .AddColumn(new TableColumn("errors").RightAligned())
            .AddColumn(new TableColumn("POSTs 2xx").RightAligned())
            .AddColumn(new TableColumn("POSTs processed").RightAligned())
            .AddColumn(new TableColumn("upstream reqs").RightAligned())
            .AddColumn(new TableColumn("upstream conns").RightAligned())
            .AddColumn(new TableColumn("p50 ms").RightAligned())
            .AddColumn(new TableColumn("p99 ms").RightAligned())
            .AddColumn(new TableColumn("s").RightAligned());
        foreach (var r in report.Results)
        {
            table.AddRow(
                Markup.Escape(r.Incident),
                Markup.Escape(r.Proxy),
                r.LatencyMs > 0 ? r.LatencyMs.ToString("0.###", CultureInfo.InvariantCulture) + " ms" : "-",
                Number(r.Requests),
                Number(r.Ok),
                Alarm(r.Get.ServerErrors),
                Alarm(r.Post.ServerErrors),
                Alarm(r.Errors),
                Number(r.PostsOk),
                r.UpstreamPosts > r.PostsOk ? $"[red]{Number(r.UpstreamPosts)}[/]" : Number(r.UpstreamPosts),
                Number(r.UpstreamRequests),
                Number(r.UpstreamConnections),
                Milliseconds(r.P50Ms),
                Milliseconds(r.P99Ms),
                r.Seconds.ToString("0.0", CultureInfo.InvariantCulture));
        }
        console.Write(table);
        console.MarkupLine("[grey]delay: one-way delay added between proxy and upstream; errors: requests with no complete " +
                           "response (reset, closed, timed out); p50/p99: response times the clients saw; POSTs processed, upstream reqs and conns: what the Lab upstream " +
                           "counted itself (POSTs processed above POSTs 2xx: a POST processed without a 2xx answer, or twice)[/]");
        if (report.NginxSkipped is { } reason)
        {
            console.MarkupLine($"[grey]nginx column skipped: {Markup.Escape(reason)}[/]");
        }
    }

    private static string Milliseconds(double? value) => value is { } v ? v.ToString("0.0", CultureInfo.InvariantCulture) : "-";

    private static string Alarm(int value) => value > 0 ? $"[red]{Number(value)}[/]" : "0";

    private static string Number(int value) => value.ToString("N0", CultureInfo.InvariantCulture);
}
