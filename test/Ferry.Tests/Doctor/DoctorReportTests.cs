using System.Text.Json;
using Ferry.Doctor;
using Spectre.Console;
using static Ferry.Tests.Doctor.ErrorLogSamples;

namespace Ferry.Tests.Doctor;

public sealed class DoctorReportTests
{
    private static ErrorLogReport SampleLog()
    {
        var report = new ErrorLogReport();
        report.Read(new StringReader(Log));
        return report;
    }

    private static ConfigAudit SampleAudit() =>
        new("nginx.conf", ["nginx.conf"],
            NginxConfigAudit.Audit(NginxConfigParser.ParseText("upstream u { server 10.0.0.1; }\n", "nginx.conf", "/x"), "nginx.conf", NginxAuditConfig.Unknown),
            null);

    [Fact]
    public void JsonHasTheDocumentedFields()
    {
        using var stream = new MemoryStream();
        DoctorReport.WriteJson(stream, SampleLog(), [SampleAudit()]);
        using var json = JsonDocument.Parse(stream.ToArray());
        var root = json.RootElement;

        var log = root.GetProperty("errorLog");
        Assert.Equal(12, log.GetProperty("lines").GetInt64());
        Assert.Equal(8, log.GetProperty("classifiedLines").GetInt64());
        Assert.Equal(2, log.GetProperty("unparsedLines").GetInt64());
        Assert.Equal(1, log.GetProperty("ignoredLines").GetInt64());
        var causes = log.GetProperty("causes").EnumerateArray().ToDictionary(c => c.GetProperty("cause").GetString()!);
        Assert.Equal(["keepalive_race", "port_exhaustion", "backend_overload", "backend_down", "all_servers_ejected", "timeout", "protocol_error", "other"], causes.Keys);
        Assert.Equal(3, causes["keepalive_race"].GetProperty("count").GetInt64());
        Assert.NotEmpty(causes["keepalive_race"].GetProperty("nginxFix").EnumerateArray());
        Assert.NotEmpty(causes["keepalive_race"].GetProperty("ferry").GetString()!);

        var upstream = log.GetProperty("upstreams")[0];
        Assert.Equal("10.0.1.5:8080", upstream.GetProperty("upstream").GetString());
        Assert.Equal(4, upstream.GetProperty("total").GetInt64());
        Assert.Equal(2, upstream.GetProperty("causes").GetProperty("keepalive_race").GetInt64());

        var minute = log.GetProperty("timeline")[0];
        Assert.Equal("2024-03-05T14:01", minute.GetProperty("minute").GetString());
        Assert.Equal(3, minute.GetProperty("total").GetInt64());

        var config = root.GetProperty("configs")[0];
        Assert.Equal(JsonValueKind.Null, config.GetProperty("error").ValueKind);
        var finding = config.GetProperty("findings")[0];
        Assert.Equal("no-upstream-keepalive", finding.GetProperty("code").GetString());
        Assert.Equal("warning", finding.GetProperty("severity").GetString());
        Assert.Equal(1, finding.GetProperty("line").GetInt32());
        foreach (var field in new[] { "file", "message", "fix", "ferry" })
        {
            Assert.NotEmpty(finding.GetProperty(field).GetString()!);
        }
    }

    [Fact]
    public void JsonWithoutALogHasANullErrorLog()
    {
        using var stream = new MemoryStream();
        DoctorReport.WriteJson(stream, null, []);
        using var json = JsonDocument.Parse(stream.ToArray());
        Assert.Equal(JsonValueKind.Null, json.RootElement.GetProperty("errorLog").ValueKind);
        Assert.Empty(json.RootElement.GetProperty("configs").EnumerateArray());
    }

    [Fact]
    public void TerminalOutputHasCausesUpstreamsTimelineAndFindings()
    {
        var writer = new StringWriter();
        var console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Ansi = AnsiSupport.No,
            ColorSystem = ColorSystemSupport.NoColors,
            Out = new AnsiConsoleOutput(writer),
        });
        console.Profile.Width = 160;

        DoctorReport.Render(console, SampleLog());
        DoctorReport.Render(console, SampleAudit());
        var text = writer.ToString();

        Assert.Contains("12 lines in 0 file(s): 8 errors classified, 1 below [error] ignored, 2 not in nginx's format.", text);
        Assert.Contains("│ keep-alive race ", text);
        Assert.Contains("│ 10.0.1.5:8080 ", text);
        Assert.Contains("errors per minute", text);
        Assert.Contains("│ 2024-03-05 14:01 │     3 │", text);
        Assert.Contains("warning nginx.conf:1 no-upstream-keepalive", text);
    }

    [Fact]
    public void ALongTimelineIsMergedIntoWiderBuckets()
    {
        // One error every hour for 40 hours: 40 minutes with errors, more than the 30 rows shown; hourly buckets would
        // still be 40 rows, six-hour buckets are 7.
        var start = new DateTime(2024, 3, 5, 0, 0, 0);
        var log = string.Join('\n', Enumerable.Range(0, 40).Select(h =>
            $"{start.AddHours(h):yyyy/MM/dd HH:mm:ss} [error] 1#1: *1 {KeepAliveRace}, client: 10.0.0.1, server: _, request: \"GET / HTTP/1.1\", upstream: \"http://10.0.0.2:80/\", host: \"x\""));
        var report = new ErrorLogReport();
        report.Read(new StringReader(log));
        Assert.Equal(40, report.Minutes.Count());

        var writer = new StringWriter();
        var console = AnsiConsole.Create(new AnsiConsoleSettings { Ansi = AnsiSupport.No, ColorSystem = ColorSystemSupport.NoColors, Out = new AnsiConsoleOutput(writer) });
        console.Profile.Width = 160;
        DoctorReport.Render(console, report);
        var text = writer.ToString();

        Assert.Contains("errors per 360 minutes", text);
        Assert.Contains("│ 2024-03-05 00:00 │     6 │", text);
        Assert.Contains("│ 2024-03-06 12:00 │     4 │", text);
    }
}
