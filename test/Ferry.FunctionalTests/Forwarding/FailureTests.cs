using System.Net;
using System.Net.Sockets;
using System.Text;
using Ferry.FunctionalTests.Support;
using Ferry.Lab;
using Ferry.Tests.Support;
using static Ferry.FunctionalTests.Support.ProxyAssert;

namespace Ferry.FunctionalTests.Forwarding;

// Misbehaving destinations give the status and Proxy-Status of docs/errors.md, a log line, and leave no broken
// connection in the pool.
public sealed class FailureTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task Refused_Is502ConnectionRefused()
    {
        using var dead = Loopback.RefusingPort();
        var settings = ProxyHarness.Settings(("dead", dead.Uri));
        await using var proxy = await ProxyHarness.StartAsync(settings, null);

        var response = await proxy.Client.GetAsync("/").WaitAsync(Bound);

        await AssertFailure(response, HttpStatusCode.BadGateway, "connection_refused");
        Assert.Contains($"127.0.0.1:{dead.Port}", ProxyStatus(response));
        Assert.Contains(proxy.Logs.Lines, l => l.Contains("connection_refused", StringComparison.Ordinal));
        Assert.False(proxy.Destination("dead").IsAvailable);
    }

    [Fact]
    public async Task RefusedDestination_IsSkippedForTheNextOne()
    {
        await using var live = LabUpstream.Start(new LabUpstreamOptions { Name = "live" });
        using var dead = Loopback.RefusingPort();
        var settings = ProxyHarness.Settings(("dead", dead.Uri), ("live", live.Uri));
        await using var proxy = await ProxyHarness.StartAsync(settings, null, live);

        for (var i = 0; i < 4; i++)
        {
            var response = await proxy.Client.GetAsync("/").WaitAsync(Bound);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            Assert.Equal("live", response.Headers.GetValues("X-Upstream").Single());
        }
    }

    public static TheoryData<string, HttpStatusCode, string> Misbehaviours => new()
    {
        { nameof(LabScripts.ResetBeforeHead), HttpStatusCode.BadGateway, "connection_terminated" },
        { nameof(LabScripts.CloseBeforeHead), HttpStatusCode.BadGateway, "connection_terminated" },
        { nameof(LabScripts.GarbageHead), HttpStatusCode.BadGateway, "http_protocol_error" },
    };

    [Theory]
    [MemberData(nameof(Misbehaviours))]
    public async Task MisbehavingUpstream_GetsItsProxyStatus(string script, HttpStatusCode status, string error)
    {
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions { Name = "bad", Script = Script(script) });
        await using var proxy = await ProxyHarness.StartAsync(upstream);

        var response = await proxy.Client.GetAsync("/").WaitAsync(Bound);

        await AssertFailure(response, status, error);
        Assert.Contains(proxy.Logs.Lines, l => l.Contains(error, StringComparison.Ordinal));
        await AssertPoolClean(proxy, "bad");
    }

    [Fact]
    public async Task OversizedHead_Is502HeaderSectionSize()
    {
        var big = "HTTP/1.1 200 OK\r\n" + string.Concat(Enumerable.Range(0, 200).Select(i => $"X-Filler-{i}: {new string('v', 500)}\r\n")) + "Content-Length: 0\r\n\r\n";
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions
        {
            Name = "big",
            Script = (x, ct) => x.WriteRawAsync(Encoding.ASCII.GetBytes(big), ct),
        });
        await using var proxy = await ProxyHarness.StartAsync(upstream);

        var response = await proxy.Client.GetAsync("/").WaitAsync(Bound);

        await AssertFailure(response, HttpStatusCode.BadGateway, "http_response_header_section_size");
        await AssertPoolClean(proxy, "big");
    }

    [Fact]
    public async Task ContentLengthWithTransferEncoding_IsRejected()
    {
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions
        {
            Name = "smuggler",
            Script = (x, ct) => x.WriteRawAsync(Encoding.ASCII.GetBytes(
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"), ct),
        });
        await using var proxy = await ProxyHarness.StartAsync(upstream);

        var response = await proxy.Client.GetAsync("/").WaitAsync(Bound);

        await AssertFailure(response, HttpStatusCode.BadGateway, "http_protocol_error");
        await AssertPoolClean(proxy, "smuggler");
    }

    [Fact]
    public async Task StalledUpstream_Is504ResponseTimeout()
    {
        var time = new ManualTimeProvider();
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions { Name = "slow", Script = LabScripts.Stall });
        var settings = ProxyHarness.Settings(("slow", upstream.Uri));
        settings["Clusters:c:Timeouts:ResponseHead"] = "5s";
        await using var proxy = await ProxyHarness.StartAsync(settings, time, upstream);

        var pending = proxy.Client.GetAsync("/");
        await Wait.Until(() => upstream.RequestsReceived == 1);
        var response = await AdvanceUntil(time, pending, TimeSpan.FromSeconds(2));

        await AssertFailure(response, HttpStatusCode.GatewayTimeout, "http_response_timeout");
        await AssertPoolClean(proxy, "slow");
    }

    [Fact]
    public async Task ConnectThatNeverCompletes_Is504ConnectionTimeout()
    {
        // A listener that never accepts, with its backlog already full: Linux drops further SYNs, like an overloaded
        // backend, so the connect hangs until Ferry's connect timeout.
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(0);
        var endPoint = (IPEndPoint)listener.LocalEndPoint!;
        var fillers = new List<Socket>();
        try
        {
            for (var i = 0; i < 4; i++)
            {
                var filler = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                fillers.Add(filler);
                _ = filler.ConnectAsync(endPoint);
            }
            var time = new ManualTimeProvider();
            var settings = ProxyHarness.Settings(("blackhole", new Uri($"http://127.0.0.1:{endPoint.Port}/")));
            settings["Clusters:c:Timeouts:Connect"] = "3s";
            await using var proxy = await ProxyHarness.StartAsync(settings, time);

            var pending = proxy.Client.GetAsync("/");
            var response = await AdvanceUntil(time, pending, TimeSpan.FromSeconds(1));

            await AssertFailure(response, HttpStatusCode.GatewayTimeout, "connection_timeout");
        }
        finally
        {
            fillers.ForEach(f => f.Dispose());
        }
    }

    [Fact]
    public async Task UpstreamDyingMidBody_AbortsTheClientInsteadOfATruncatedSuccess()
    {
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions { Name = "cut", Script = LabScripts.PartialBodyThenClose });
        await using var proxy = await ProxyHarness.StartAsync(upstream);

        // The abort may reach the client before or after it has read the head; either way it never sees success.
        var failure = await Record.ExceptionAsync(async () =>
        {
            using var response = await proxy.Client.GetAsync("/", HttpCompletionOption.ResponseHeadersRead).WaitAsync(Bound);
            await response.Content.ReadAsByteArrayAsync().WaitAsync(Bound);
        });
        Assert.True(failure is HttpRequestException or IOException, $"expected a failed read, got {failure?.GetType().Name ?? "success"}");

        Assert.Contains(proxy.Logs.Lines, l => l.Contains("http_response_incomplete", StringComparison.Ordinal));
        await AssertPoolClean(proxy, "cut");
    }

    [Fact]
    public async Task ProxyStatusDetails_AreHiddenByDefault()
    {
        using var dead = Loopback.RefusingPort();
        var settings = ProxyHarness.Settings(("dead", dead.Uri));
        settings.Remove("ProxyStatus:IncludeDetails");
        await using var proxy = await ProxyHarness.StartAsync(settings, null);

        var response = await proxy.Client.GetAsync("/").WaitAsync(Bound);

        Assert.Equal("ferry; error=connection_refused", ProxyStatus(response));
    }

    private static Func<LabExchange, CancellationToken, Task> Script(string name) =>
        (Func<LabExchange, CancellationToken, Task>)typeof(LabScripts).GetField(name)?.GetValue(null)!
        ?? (Func<LabExchange, CancellationToken, Task>)typeof(LabScripts).GetProperty(name)!.GetValue(null)!;

    private static async Task<HttpResponseMessage> AdvanceUntil(ManualTimeProvider time, Task<HttpResponseMessage> pending, TimeSpan step)
    {
        for (var i = 0; i < 300 && !pending.IsCompleted; i++)
        {
            time.Advance(step);
            await Task.WhenAny(pending, Task.Delay(20));
        }
        return await pending.WaitAsync(Bound);
    }
}
