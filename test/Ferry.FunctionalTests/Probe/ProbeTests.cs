using System.Net;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using System.Text;
using Ferry.Cli;
using Ferry.FunctionalTests.Support;
using Ferry.Lab;
using Ferry.Probe;
using Xunit.Abstractions;

namespace Ferry.FunctionalTests.Probe;

// `ferry probe` against Lab upstreams whose keep-alive manners are known. Idle closes happen in real time, so the
// upstreams use idle timeouts under a second and the measured value is checked within a tolerance.
[Collection(TimingSensitive.Name)]
public sealed class ProbeTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);

    // Lab starts its idle clock when it waits for the next request, the probe when it has read the response:
    // the probe sees a little less than configured; thread pool delays on a busy machine add the rest.
    private const double Tolerance = 0.15;

    private static ProbeConfig Config(Uri target, double maxIdleSeconds = 3, int maxRequests = 300) =>
        new(target, TimeSpan.FromSeconds(maxIdleSeconds), maxRequests, TimeSpan.FromSeconds(20));

    private static Task<ProbeReport> ProbeAsync(ProbeConfig config) =>
        new BackendProber(config, TimeProvider.System).RunAsync(CancellationToken.None).WaitAsync(Bound);

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task IdleClose_IsMeasuredWithItsKind(bool reset)
    {
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions
        {
            Name = "idle", IdleTimeout = TimeSpan.FromMilliseconds(600), ResetOnIdleTimeout = reset,
        });

        var report = await ProbeAsync(Config(upstream.Uri));

        Assert.True(report.KeepsAlive);
        Assert.Equal(IdleMethod.CloseObserved, report.IdleMethod);
        Assert.InRange(report.IdleTimeoutSeconds!.Value, 0.6 - Tolerance, 0.6 + Tolerance);
        Assert.Equal(reset ? CloseKind.Reset : CloseKind.Fin, report.CloseKind);
        Assert.Null(report.Announces.KeepAliveTimeoutSeconds);
        Assert.Equal(LimitEnd.NotReached, report.MaxRequestsEnd);
        Assert.Null(report.MaxRequests);
        // Half the measured timeout, rounded down to 100 ms: a close seen a few ms before 600 ms gives 200 ms.
        Assert.Contains(report.Recommendations.FerryIdleTimeout, new[] { "200ms", "300ms" });
    }

    // Tomcat's NIO poller looks for expired idle connections once a second, so a connection closes up to a second
    // after its timeout. The probe starts its watchers' idle periods 49 ms apart over two seconds: the one that began
    // just before a sweep reads the timeout itself. Both ends of each reading are the kernel's arrival times, so a
    // reading is never shorter than the Lab's timeout; it is longer by the gap between watchers (about 25 ms) and by
    // how late the Lab's timer fires, which a machine loaded far beyond its cores can push past the bound. Watchers
    // started together (the algorithm before) read 2.5–3.0 s for 2.0 s.
    [Theory]
    [InlineData(2.0)]
    [InlineData(2.35)]
    public async Task PeriodicIdleSweep_IsReadToTheTimeoutItself(double timeout)
    {
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions
        {
            Name = "tomcat-like", IdleTimeout = TimeSpan.FromSeconds(timeout), IdleCheckInterval = TimeSpan.FromSeconds(1),
        });

        var report = await ProbeAsync(Config(upstream.Uri, maxIdleSeconds: 5, maxRequests: 50));

        output.WriteLine($"idle timeout {timeout} s swept once a second: read {report.IdleTimeoutSeconds} s, latest close " +
            $"{report.IdleTimeoutUpperSeconds} s, probe took {report.DurationSeconds} s");
        Assert.Equal(IdleMethod.CloseObserved, report.IdleMethod);
        Assert.Equal(CloseKind.Fin, report.CloseKind);
        Assert.InRange(report.IdleTimeoutSeconds!.Value, timeout - 0.1, timeout + 0.1);
        // The latest close shows the sweep: most of a second after the timeout.
        Assert.InRange(report.IdleTimeoutUpperSeconds!.Value, timeout + 0.5, timeout + 1.5);
    }

    [Fact]
    public async Task AnnouncedIdleTimeout_IsReportedAndLeftToFerry()
    {
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions
        {
            Name = "announced", IdleTimeout = TimeSpan.FromSeconds(1), AnnounceKeepAlive = true,
        });

        var report = await ProbeAsync(Config(upstream.Uri, maxRequests: 50));

        Assert.Equal(1, report.Announces.KeepAliveTimeoutSeconds);
        Assert.Equal("timeout=1", report.Http11.KeepAliveHeader);
        Assert.Equal(IdleMethod.CloseObserved, report.IdleMethod);
        Assert.InRange(report.IdleTimeoutSeconds!.Value, 1 - Tolerance, 1 + Tolerance);
        Assert.Equal("auto", report.Recommendations.FerryIdleTimeout);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task MaxRequests_IsCountedAnnouncedOrSilent(bool announced)
    {
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions
        {
            Name = "limited", MaxRequestsPerConnection = 100, AnnounceLastRequest = announced, AnnounceKeepAlive = true,
        });

        var report = await ProbeAsync(Config(upstream.Uri, maxIdleSeconds: 1));

        Assert.Equal(100, report.MaxRequests);
        Assert.Equal(announced ? LimitEnd.Announced : LimitEnd.Silent, report.MaxRequestsEnd);
        Assert.Equal(CloseKind.Fin, report.MaxRequestsCloseKind);
        Assert.Equal(announced, report.Announces.LastRequestConnectionClose);
        // Keep-Alive: max=N counts the requests left after this one (Apache's convention, the Lab's too).
        Assert.Equal(99, report.Announces.KeepAliveMax);
        Assert.Equal(IdleMethod.NotReached, report.IdleMethod);
        Assert.Equal(100, report.Recommendations.FerryMaxRequests);
        Assert.Contains(report.Recommendations.Nginx, l => l.Contains("keepalive_requests 100;", StringComparison.Ordinal));
    }

    [Fact]
    public async Task SilentlyDroppedIdleConnections_AreFoundByReuse()
    {
        // Never closes an idle connection, but answers a request that comes after 700 ms of idleness with an RST:
        // what a NAT or firewall that forgot the connection does.
        var lastResponse = new ConditionalWeakTable<object, StrongBox<long>>();
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions
        {
            Name = "dropper",
            Script = async (exchange, ct) =>
            {
                var last = lastResponse.GetOrCreateValue(exchange.RawInput);
                if (last.Value != 0 && TimeProvider.System.GetElapsedTime(last.Value) > TimeSpan.FromMilliseconds(700))
                {
                    exchange.Reset();
                    return;
                }
                await LabRoutes.HandleAsync(exchange, ct);
                last.Value = TimeProvider.System.GetTimestamp();
            },
        });

        var report = await ProbeAsync(Config(upstream.Uri, maxIdleSeconds: 2, maxRequests: 20));

        Assert.Equal(IdleMethod.ReuseFailed, report.IdleMethod);
        // The probe records the idle time each reuse actually reached, so the bracket holds the true value even
        // when timers fire late; the second round narrows it to a ninth of the first.
        Assert.InRange(report.IdleTimeoutSeconds!.Value, 0.35, 0.7 + 0.05);
        Assert.InRange(report.IdleTimeoutUpperSeconds!.Value, 0.7 - Tolerance, 1.3);
        Assert.Equal(CloseKind.Reset, report.CloseKind);
    }

    [Fact]
    public async Task NonKeepAliveUpstream_AnswersHttp10AndClosesEveryConnection()
    {
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions { Name = "closer", KeepAlive = false });

        var report = await ProbeAsync(Config(upstream.Uri));

        Assert.False(report.KeepsAlive);
        Assert.Equal("HTTP/1.1", report.Http11.Response);
        Assert.Equal("close", report.Http11.Connection);
        Assert.Equal(200, report.Http10.Status);
        Assert.False(report.Http10.KeepAlive);
        Assert.Equal(IdleMethod.NotApplicable, report.IdleMethod);
        Assert.Equal(LimitEnd.NotApplicable, report.MaxRequestsEnd);
        Assert.Equal(1, report.MaxRequests);
    }

    [Fact]
    public async Task Http10OnlyUpstream_IsReportedAsSuch()
    {
        // An HTTP/1.0 server that closes after each response, whatever the request's version.
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions
        {
            Name = "old",
            Script = LabScripts.WriteThenClose("HTTP/1.0 200 OK\r\nServer: old/1.0\r\nContent-Length: 3\r\n\r\nold"),
        });

        var report = await ProbeAsync(Config(upstream.Uri));

        Assert.Equal("HTTP/1.0", report.Http11.Response);
        Assert.Equal("HTTP/1.0", report.Http10.Response);
        Assert.Equal("old/1.0", report.Server);
        Assert.False(report.KeepsAlive);
    }

    [Fact]
    public async Task RefusedPort_ExitsWith2()
    {
        using var dead = Loopback.RefusingPort();
        var output = new StringWriter();
        var error = new StringWriter();

        int exit = await ProbeCommand.RunAsync(Config(dead.Uri), json: false, showProgress: false,
            output, error, TimeProvider.System, CancellationToken.None).WaitAsync(Bound);

        Assert.Equal(2, exit);
        Assert.StartsWith("ferry probe: refused:", error.ToString(), StringComparison.Ordinal);
        Assert.Equal("", output.ToString());
    }

    [Fact]
    public async Task NonHttpTarget_ExitsWith2()
    {
        // A server that greets every connection with a banner, like SSH, before any request.
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(16);
        using var stop = new CancellationTokenSource();
        var accepting = Task.Run(async () =>
        {
            while (!stop.IsCancellationRequested)
            {
                using var socket = await listener.AcceptAsync(stop.Token);
                await socket.SendAsync(Encoding.ASCII.GetBytes("SSH-2.0-OpenSSH_9.6\r\n"), stop.Token);
            }
        });
        var error = new StringWriter();

        int exit = await ProbeCommand.RunAsync(Config(new Uri($"http://127.0.0.1:{((IPEndPoint)listener.LocalEndPoint!).Port}/")),
            json: true, showProgress: false, new StringWriter(), error, TimeProvider.System, CancellationToken.None).WaitAsync(Bound);

        Assert.Equal(2, exit);
        Assert.StartsWith("ferry probe: nothttp:", error.ToString(), StringComparison.Ordinal);
        await stop.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => accepting).WaitAsync(Bound);
    }

    [Fact]
    public async Task Json_CarriesTheDocumentedFields()
    {
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions
        {
            Name = "json", IdleTimeout = TimeSpan.FromMilliseconds(400), MaxRequestsPerConnection = 10, AnnounceLastRequest = false,
        });
        var output = new StringWriter();

        int exit = await ProbeCommand.RunAsync(Config(upstream.Uri), json: true, showProgress: false, output, new StringWriter(),
            TimeProvider.System, CancellationToken.None).WaitAsync(Bound);

        Assert.Equal(0, exit);
        string json = output.ToString();
        Assert.Contains("\"idleTimeoutSeconds\":", json, StringComparison.Ordinal);
        Assert.Contains("\"maxRequests\": 10,", json, StringComparison.Ordinal);
        Assert.Contains("\"closeKind\": \"fin\"", json, StringComparison.Ordinal);
        Assert.Contains("\"announces\": {", json, StringComparison.Ordinal);
        var report = ProbeReport.FromJson(json);
        Assert.Equal(LimitEnd.Silent, report.MaxRequestsEnd);
        Assert.InRange(report.IdleTimeoutSeconds!.Value, 0.4 - Tolerance, 0.4 + Tolerance);
    }
}
