using System.Globalization;
using Spectre.Console;

namespace Ferry.Probe;

/// <summary>The human-readable report: what was measured, then what to configure.</summary>
internal static class ProbeView
{
    public static void Write(IAnsiConsole console, ProbeReport report)
    {
        var measured = new Table().Border(TableBorder.Rounded).Title($"ferry probe {Markup.Escape(report.Target)}")
            .AddColumn("measured").AddColumn("result");
        Row(measured, "server header", report.Server ?? "(none)");
        Row(measured, "HTTP/1.1 request", Describe(report.Http11));
        Row(measured, "HTTP/1.0 request", Describe(report.Http10));
        Row(measured, "keeps connections alive", report.KeepsAlive ? "yes" : "no");
        Row(measured, "announces", Announced(report.Announces));
        Row(measured, "idle timeout", Idle(report));
        Row(measured, "requests per connection", Limit(report));
        Row(measured, "probe took", string.Create(CultureInfo.InvariantCulture, $"{report.DurationSeconds:0.0} s"));
        console.Write(measured);

        var r = report.Recommendations;
        console.Write(Block("Ferry (cluster settings)", r.Ferry));
        console.Write(Block("nginx", r.Nginx));
        console.Write(Block("HAProxy", r.HaProxy));
        foreach (var note in r.Notes)
        {
            console.MarkupLine($"[yellow]note:[/] {Markup.Escape(note)}");
        }
    }

    private static void Row(Table table, string name, string value) => table.AddRow(Markup.Escape(name), Markup.Escape(value));

    private static Panel Block(string title, IEnumerable<string> lines) =>
        new Panel(new Text(string.Join('\n', lines))).Header(Markup.Escape(title)).Border(BoxBorder.Rounded).Expand();

    private static string Describe(ProtocolAnswer answer)
    {
        if (answer.Response is null)
        {
            return "no HTTP answer";
        }
        var parts = new List<string>
        {
            $"{answer.Response} {answer.Status}",
            answer.KeepAlive ? "keep-alive" : "closes",
        };
        if (answer.Connection is { } connection)
        {
            parts.Add($"Connection: {connection}");
        }
        if (answer.KeepAliveHeader is { } keepAlive)
        {
            parts.Add($"Keep-Alive: {keepAlive}");
        }
        return string.Join(", ", parts);
    }

    private static string Announced(Announcements a)
    {
        var parts = new List<string>();
        if (a.KeepAliveTimeoutSeconds is { } timeout)
        {
            parts.Add($"timeout={timeout}");
        }
        if (a.KeepAliveMax is { } max)
        {
            parts.Add($"max={max} (requests left after the first)");
        }
        if (a.LastRequestConnectionClose is { } close)
        {
            parts.Add(close ? "Connection: close on the last request" : "nothing on the last request");
        }
        return parts.Count == 0 ? "nothing" : string.Join(", ", parts);
    }

    private static string Idle(ProbeReport r) => r.IdleMethod switch
    {
        IdleMethod.CloseObserved => string.Create(CultureInfo.InvariantCulture,
            $"{r.IdleTimeoutSeconds:0.00} s, then {Close(r.CloseKind)} (seen as it happened; latest close {r.IdleTimeoutUpperSeconds:0.00} s)"),
        IdleMethod.ReuseFailed => string.Create(CultureInfo.InvariantCulture,
            $"between {r.IdleTimeoutSeconds:0.00} s and {r.IdleTimeoutUpperSeconds:0.00} s: never closes by itself, reuse fails ({Close(r.CloseKind)})"),
        IdleMethod.NotReached => string.Create(CultureInfo.InvariantCulture, $"none within {r.MaxIdleSearchedSeconds:0} s"),
        _ => "not applicable",
    };

    private static string Limit(ProbeReport r) => r.MaxRequestsEnd switch
    {
        LimitEnd.Announced => $"{r.MaxRequests}, the last one says Connection: close, then {Close(r.MaxRequestsCloseKind)}",
        LimitEnd.Silent => $"{r.MaxRequests}, then closes silently ({Close(r.MaxRequestsCloseKind)})",
        LimitEnd.NotReached => $"no limit within {r.MaxRequestsSearched}",
        _ => "1 (no keep-alive)",
    };

    private static string Close(CloseKind kind) => kind switch
    {
        CloseKind.Fin => "FIN",
        CloseKind.Reset => "RST",
        _ => "no close seen",
    };
}
