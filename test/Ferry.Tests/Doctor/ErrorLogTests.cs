using System.IO.Compression;
using System.Text;
using Ferry.Doctor;
using Ferry.Tests.Support;
using static Ferry.Tests.Doctor.ErrorLogSamples;

namespace Ferry.Tests.Doctor;

public sealed class ErrorLogTests
{
    [Theory]
    // Keep-alive races: the reused connection closed or reset before any response byte.
    [InlineData("upstream prematurely closed connection while reading response header from upstream", "keepalive_race")]
    [InlineData("recv() failed (104: Connection reset by peer) while reading response header from upstream", "keepalive_race")]
    [InlineData("writev() failed (32: Broken pipe) while sending request to upstream", "keepalive_race")]
    [InlineData("send() failed (104: Connection reset by peer) while sending request to upstream", "keepalive_race")]
    [InlineData("readv() failed (104: Connection reset by peer) while reading response header from upstream", "keepalive_race")]
    // Port exhaustion ([crit] in nginx).
    [InlineData("connect() to 10.0.1.5:8080 failed (99: Cannot assign requested address) while connecting to upstream", "port_exhaustion")]
    // Overload: SYNs unanswered, or a unix socket's full listen queue.
    [InlineData("connect() failed (110: Connection timed out) while connecting to upstream", "backend_overload")]
    [InlineData("upstream timed out (110: Connection timed out) while connecting to upstream", "backend_overload")]
    [InlineData("connect() to unix:/run/app.sock failed (11: Resource temporarily unavailable) while connecting to upstream", "backend_overload")]
    // Down.
    [InlineData("connect() failed (111: Connection refused) while connecting to upstream", "backend_down")]
    [InlineData("connect() failed (113: No route to host) while connecting to upstream", "backend_down")]
    [InlineData("no live upstreams while connecting to upstream", "all_servers_ejected")]
    // Timeouts after the connect.
    [InlineData("upstream timed out (110: Connection timed out) while reading response header from upstream", "timeout")]
    [InlineData("upstream timed out (110: Connection timed out) while reading upstream", "timeout")]
    [InlineData("upstream timed out (110: Connection timed out) while sending request to upstream", "timeout")]
    // Protocol errors, including a body cut in the middle.
    [InlineData("upstream sent invalid header while reading response header from upstream", "protocol_error")]
    [InlineData("upstream sent too big header while reading response header from upstream", "protocol_error")]
    [InlineData("upstream sent invalid chunked response while reading upstream", "protocol_error")]
    [InlineData("upstream sent no valid HTTP/1.0 header while reading response header from upstream", "protocol_error")]
    [InlineData("upstream prematurely closed connection while reading upstream", "protocol_error")]
    [InlineData("recv() failed (104: Connection reset by peer) while reading upstream", "protocol_error")]
    // Not about upstreams.
    [InlineData("open() \"/srv/www/favicon.ico\" failed (2: No such file or directory)", "other")]
    [InlineData("client intended to send too large body: 2000000 bytes", "other")]
    public void ClassifiesNginxMessages(string message, string expected)
    {
        Assert.True(ErrorLogLine.TryParse(Line("14:01:02", "error", message), out var line));
        Assert.Equal(message, line.Message);
        Assert.Equal(expected, FailureCauseInfo.Of(ErrorLogClassifier.Classify(line.Message)).Name);
    }

    [Fact]
    public void ParsesTheLineLayout()
    {
        Assert.True(ErrorLogLine.TryParse(Line("14:01:02", "crit", Refused, "http://10.0.1.5:8080/api?x=1"), out var line));
        Assert.Equal(new DateTime(2024, 3, 5, 14, 1, 2), line.Time);
        Assert.Equal("crit", line.Level);
        Assert.Equal(Refused, line.Message);
        Assert.Equal("10.0.1.5:8080", line.Upstream);

        Assert.True(ErrorLogLine.TryParse(Line("14:01:02", "error", Refused, "http://unix:/run/app.sock:/api"), out var unix));
        Assert.Equal("unix:/run/app.sock", unix.Upstream);

        // Without a connection number and without context fields (a startup message).
        Assert.True(ErrorLogLine.TryParse("2024/03/05 14:01:02 [emerg] 1#1: bind() to 0.0.0.0:80 failed (98: Address already in use)", out var startup));
        Assert.Equal("bind() to 0.0.0.0:80 failed (98: Address already in use)", startup.Message);
        Assert.Null(startup.Upstream);
    }

    [Theory]
    [InlineData("this is not an nginx line")]
    [InlineData("2024/03/05 14:01:02 [error] garbage without pid")]
    [InlineData("2024/13/05 14:01:02 [error] 1#1: month 13")]
    [InlineData("2024/03/05 14:01:02 [error] 1#1: *x5 connection number not numeric")]
    [InlineData("2024/03/05 14:01:02")]
    public void RejectsMalformedLines(string text) => Assert.False(ErrorLogLine.TryParse(text, out _));

    [Fact]
    public void CountsPerCauseUpstreamAndMinute()
    {
        var report = new ErrorLogReport();
        report.Read(new StringReader(Log));

        Assert.Equal(12, report.Lines);
        Assert.Equal(2, report.UnparsedLines);
        Assert.Equal(1, report.IgnoredLines);
        Assert.Equal(8, report.Classified);
        Assert.Equal(3, report.Count(FailureCause.KeepAliveRace));
        Assert.Equal(1, report.Count(FailureCause.PortExhaustion));
        Assert.Equal(1, report.Count(FailureCause.Timeout));
        Assert.Equal(1, report.Count(FailureCause.BackendDown));
        Assert.Equal(1, report.Count(FailureCause.AllServersEjected));
        Assert.Equal(1, report.Count(FailureCause.Other));

        var upstreams = report.Upstreams.ToDictionary(u => u.Upstream, u => u.Causes);
        Assert.Equal(["10.0.1.5:8080", "10.0.1.6:8080", "10.0.1.8:8080", "backend"], report.Upstreams.Select(u => u.Upstream));
        Assert.Equal(2, upstreams["10.0.1.5:8080"][(int)FailureCause.KeepAliveRace]);
        Assert.Equal(1, upstreams["10.0.1.5:8080"][(int)FailureCause.PortExhaustion]);
        Assert.Equal(1, upstreams["10.0.1.6:8080"][(int)FailureCause.KeepAliveRace]);

        var minutes = report.Minutes.ToList();
        Assert.Equal([new DateTime(2024, 3, 5, 14, 1, 0), new DateTime(2024, 3, 5, 14, 2, 0), new DateTime(2024, 3, 5, 14, 3, 0)],
            minutes.Select(m => m.Minute));
        Assert.Equal([3L, 4L, 1L], minutes.Select(m => m.Causes.Sum()));
        Assert.Equal(3, minutes[0].Causes[(int)FailureCause.KeepAliveRace]);
    }

    [Fact]
    public void ReadsGzipRotatedLogsAndPlainLogsTogether()
    {
        using var dir = new TempDirectory();
        var plain = dir.Write("error.log", Log);
        var gz = Path.Combine(dir.Path, "error.log.2.gz");
        using (var file = File.Create(gz))
        using (var gzip = new GZipStream(file, CompressionLevel.Fastest))
        {
            gzip.Write(Encoding.UTF8.GetBytes(Log));
        }

        Assert.Equal(DoctorInputKind.ErrorLog, DoctorInput.Detect(gz));
        Assert.Equal(DoctorInputKind.ErrorLog, DoctorInput.Detect(plain));

        var report = new ErrorLogReport();
        report.ReadFile(gz);
        report.ReadFile(plain);
        Assert.Equal([gz, plain], report.Files);
        Assert.Equal(24, report.Lines);
        Assert.Equal(6, report.Count(FailureCause.KeepAliveRace));
    }

    [Fact]
    public void DetectsAConfigurationFile()
    {
        using var dir = new TempDirectory();
        var conf = dir.Write("nginx.conf", "# main\n\nevents {}\nhttp { }\n");
        Assert.Equal(DoctorInputKind.NginxConfig, DoctorInput.Detect(conf));
    }

    [Fact]
    public void StreamsALargeLogWithoutHoldingIt()
    {
        const int lines = 200_000;
        var report = new ErrorLogReport();
        report.Read(new GeneratedLog(lines));

        Assert.Equal(lines, report.Lines);
        Assert.Equal(0, report.UnparsedLines);
        Assert.Equal(lines / 2, report.Count(FailureCause.KeepAliveRace));
        Assert.Equal(lines / 2, report.Count(FailureCause.BackendDown));
        // One line per second: 200,000 seconds, the minutes they span.
        Assert.Equal((lines + 59) / 60, report.Minutes.Count());
        Assert.All(report.Minutes.SkipLast(1), m => Assert.Equal(60, m.Causes.Sum()));
    }

    [Fact]
    public void CutsAbsurdlyLongLinesInsteadOfLoadingThem()
    {
        var text = new string('x', DoctorInput.MaxLineChars * 3) + "\n" + Line("14:01:02", "error", KeepAliveRace) + "\r\n";
        var report = new ErrorLogReport();
        report.Read(new StringReader(text));

        Assert.Equal(2, report.Lines);
        Assert.Equal(1, report.UnparsedLines);
        Assert.Equal(1, report.Count(FailureCause.KeepAliveRace));
    }

    /// <summary>Produces its lines on demand, so the test proves the report reads a stream rather than a string.</summary>
    private sealed class GeneratedLog(int lines) : TextReader
    {
        private readonly DateTime _start = new(2024, 3, 5, 0, 0, 0);
        private int _next;
        private string _current = "";
        private int _position;

        public override int Read(char[] buffer, int index, int count)
        {
            if (_position == _current.Length)
            {
                if (_next == lines)
                {
                    return 0;
                }

                var time = _start.AddSeconds(_next);
                var message = _next % 2 == 0 ? KeepAliveRace : Refused;
                _current = $"{time:yyyy/MM/dd HH:mm:ss} [error] 7#7: *{_next} {message}, client: 10.0.0.1, server: _, " +
                           $"request: \"GET / HTTP/1.1\", upstream: \"http://10.0.1.{_next % 4}:8080/\", host: \"x\"\n";
                _position = 0;
                _next++;
            }

            var n = Math.Min(count, _current.Length - _position);
            _current.CopyTo(_position, buffer, index, n);
            _position += n;
            return n;
        }
    }
}
