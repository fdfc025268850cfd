using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using Ferry.FunctionalTests.Support;
using Ferry.Lab;
using Ferry.Tests.Support;

namespace Ferry.FunctionalTests.Forwarding;

// What a client can make Ferry forward: routes are matched on exactly what the destination receives, forwarding
// headers are Ferry's unless a trusted proxy sent them, and request heads are parsed strictly.
public sealed class HostileClientTests : IDisposable
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);
    private readonly string _directory = Directory.CreateTempSubdirectory("ferry-hostile-").FullName;

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    private static Dictionary<string, string?> PublicOnly(LabUpstream upstream)
    {
        var settings = ProxyHarness.Settings(("a", upstream.Uri));
        settings["Routes:all:Match:PathPrefix"] = "/public";
        return settings;
    }

    [Theory]
    [InlineData("/private/../public/headers")]
    [InlineData("/private/%2e%2e/public/headers")]
    [InlineData("/private/.%2E/public/headers")]
    [InlineData("/public/./headers")]
    [InlineData("/public/..%2f..%2fprivate")]
    [InlineData("/public/..%5c..%5cprivate")]
    [InlineData("/public//headers")]
    [InlineData("http://x/private/../public/headers")]
    public async Task AmbiguousPath_IsRejectedBeforeRouting_AndNeverReachesTheDestination(string target)
    {
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions { Name = "a" });
        await using var proxy = await ProxyHarness.StartAsync(PublicOnly(upstream), null, upstream);

        var text = await RawRequest.SendAsync(proxy.ProxyUri, $"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");

        Assert.StartsWith("HTTP/1.1 400", text);
        Assert.Contains("Proxy-Status: ferry; error=http_request_error", text);
        Assert.Equal(0, upstream.RequestsReceived);
    }

    [Fact]
    public async Task Backslash_IsRejected()
    {
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions { Name = "a" });
        await using var proxy = await ProxyHarness.StartAsync(PublicOnly(upstream), null, upstream);

        var text = await RawRequest.SendAsync(proxy.ProxyUri, "GET /public\\..\\private HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");

        Assert.StartsWith("HTTP/1.1 400", text);
        Assert.Equal(0, upstream.RequestsReceived);
    }

    [Theory]
    [InlineData("/private/../public/headers?q=1", "/public", "GET /headers?q=1 HTTP/1.1")]
    [InlineData("/public/%2E/headers", "/public", "GET /headers HTTP/1.1")]
    [InlineData("/public//headers", "/public", "GET /headers HTTP/1.1")]
    [InlineData("//public/x/../headers", "/public", "GET /headers HTTP/1.1")]
    [InlineData("/x/../headers", null, "GET /headers HTTP/1.1")]
    [InlineData("//headers", null, "GET /headers HTTP/1.1")]
    public async Task Normalize_ForwardsThePathItRouted(string target, string? prefix, string requestLine)
    {
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions { Name = "a" });
        var settings = ProxyHarness.Settings(("a", upstream.Uri));
        settings["Listeners:main:AmbiguousPaths"] = "Normalize";
        if (prefix is not null)
        {
            settings["Routes:all:Match:PathPrefix"] = prefix;
            settings["Routes:all:PathRemovePrefix"] = prefix;
        }
        await using var proxy = await ProxyHarness.StartAsync(settings, null, upstream);

        var text = await RawRequest.SendAsync(proxy.ProxyUri, $"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");

        Assert.StartsWith("HTTP/1.1 200", text);
        Assert.Contains(requestLine + "\r\n", text);
    }

    [Fact]
    public async Task Normalize_StillRejectsEncodedSlashes_AndNeverRoutesOutsideThePrefix()
    {
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions { Name = "a" });
        var settings = PublicOnly(upstream);
        settings["Listeners:main:AmbiguousPaths"] = "Normalize";
        await using var proxy = await ProxyHarness.StartAsync(settings, null, upstream);

        var slash = await RawRequest.SendAsync(proxy.ProxyUri, "GET /public/..%2Fprivate HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        var escape = await RawRequest.SendAsync(proxy.ProxyUri, "GET /public/../private HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");

        Assert.StartsWith("HTTP/1.1 400", slash);
        Assert.StartsWith("HTTP/1.1 404", escape);
        Assert.Contains("Proxy-Status: ferry; error=destination_not_found", escape);
        Assert.Equal(0, upstream.RequestsReceived);
    }

    [Fact]
    public async Task ForwardingHeadersFromAClient_AreReplacedNotAppended()
    {
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions { Name = "a" });
        await using var proxy = await ProxyHarness.StartAsync(upstream);

        var text = await RawRequest.SendAsync(proxy.ProxyUri,
            "GET /headers HTTP/1.1\r\nHost: real-host\r\nConnection: close\r\nX-Forwarded-For: 203.0.113.7\r\n" +
            "X-Forwarded-Proto: https\r\nX-Forwarded-Host: evil.test\r\nX-Forwarded-Port: 443\r\nX-Forwarded-Prefix: /admin\r\n" +
            "Forwarded: for=203.0.113.7;proto=https\r\nX-Real-IP: 203.0.113.7\r\nx-forwarded-for: 198.51.100.1\r\n\r\n");

        Assert.Contains("X-Forwarded-For: 127.0.0.1\r\n", text);
        Assert.Contains("X-Forwarded-Proto: http\r\n", text);
        Assert.Contains("X-Forwarded-Host: real-host\r\n", text);
        Assert.DoesNotContain("203.0.113.7", text);
        Assert.DoesNotContain("198.51.100.1", text);
        Assert.DoesNotContain("evil.test", text);
        Assert.DoesNotContain("https", text);
        Assert.DoesNotContain("X-Forwarded-Port", text, StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotContain("X-Forwarded-Prefix", text, StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotContain("Forwarded:", text.Replace("X-Forwarded-", "", StringComparison.OrdinalIgnoreCase), StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotContain("X-Real-IP", text, StringComparison.OrdinalIgnoreCase);
    }

    [Fact]
    public async Task ForwardingHeadersOff_StillDropsTheClients()
    {
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions { Name = "a" });
        var settings = ProxyHarness.Settings(("a", upstream.Uri));
        settings["Clusters:c:Forwarding:XForwarded"] = "false";
        await using var proxy = await ProxyHarness.StartAsync(settings, null, upstream);

        var text = await RawRequest.SendAsync(proxy.ProxyUri,
            "GET /headers HTTP/1.1\r\nHost: real-host\r\nConnection: close\r\nX-Forwarded-For: 203.0.113.7\r\nX-Real-IP: 203.0.113.7\r\n\r\n");

        Assert.StartsWith("HTTP/1.1 200", text);
        Assert.DoesNotContain("203.0.113.7", text);
        Assert.DoesNotContain("X-Forwarded", text, StringComparison.OrdinalIgnoreCase);
    }

    [Fact]
    public async Task TrustedProxy_ChainIsKept_AndItsRealClientIsLoggedAndHashed()
    {
        var log = Path.Combine(_directory, "access.log");
        await using var a = LabUpstream.Start(new LabUpstreamOptions { Name = "a" });
        await using var b = LabUpstream.Start(new LabUpstreamOptions { Name = "b" });
        var settings = ProxyHarness.Settings(("a", a.Uri), ("b", b.Uri));
        settings["Listeners:main:TrustedProxies:0"] = "127.0.0.0/8";
        settings["Clusters:c:LoadBalancingPolicy"] = "ConsistentHash";
        settings["AccessLog:Path"] = log;
        var seen = new HashSet<string>();
        string chained;
        await using (var proxy = await ProxyHarness.StartAsync(settings, null, a, b))
        {
            chained = await RawRequest.SendAsync(proxy.ProxyUri,
                "GET /headers HTTP/1.1\r\nHost: real-host\r\nConnection: close\r\nX-Forwarded-For: 203.0.113.1, 198.51.100.9\r\n" +
                "X-Forwarded-For: 127.0.0.7\r\nX-Forwarded-Proto: https\r\nX-Real-IP: 198.51.100.9\r\n\r\n");
            // Each real client keeps to its destination; different clients behind the same proxy spread.
            for (var i = 1; i <= 32; i++)
            {
                for (var repeat = 0; repeat < 2; repeat++)
                {
                    var text = await RawRequest.SendAsync(proxy.ProxyUri,
                        $"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Forwarded-For: 198.51.100.{i}\r\n\r\n");
                    seen.Add($"{i}:{UpstreamOf(text)}");
                }
            }
        }

        Assert.Contains("X-Forwarded-For: 203.0.113.1, 198.51.100.9, 127.0.0.7, 127.0.0.1\r\n", chained);
        Assert.Contains("X-Forwarded-Proto: https\r\n", chained);
        Assert.Contains("X-Real-IP: 198.51.100.9\r\n", chained);
        Assert.Equal(32, seen.Count);
        Assert.Equal(2, seen.Select(s => s.Split(':')[1]).Distinct().Count());
        var first = JsonDocument.Parse(File.ReadLines(log).First()).RootElement;
        Assert.Equal("198.51.100.9", first.GetProperty("client").GetString());
    }

    [Fact]
    public async Task Http2Listener_SeesItsTrustedProxies()
    {
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions { Name = "a" });
        var settings = ProxyHarness.Settings(("a", upstream.Uri));
        settings["Listeners:main:Protocols"] = "Http2";
        settings["Listeners:main:TrustedProxies"] = "127.0.0.1";
        await using var proxy = await ProxyHarness.StartAsync(settings, null, upstream);
        using var h2 = new HttpClient(new SocketsHttpHandler { UseProxy = false }) { BaseAddress = proxy.ProxyUri };
        using var request = new HttpRequestMessage(HttpMethod.Get, "/headers")
        {
            Version = System.Net.HttpVersion.Version20,
            VersionPolicy = HttpVersionPolicy.RequestVersionExact,
        };
        request.Headers.Add("X-Forwarded-For", "198.51.100.9");

        var text = await (await h2.SendAsync(request).WaitAsync(Bound)).Content.ReadAsStringAsync();

        Assert.Contains("X-Forwarded-For: 198.51.100.9, 127.0.0.1\r\n", text);
    }

    private static string UpstreamOf(string response) =>
        response.Split("\r\n").Single(l => l.StartsWith("X-Upstream: ", StringComparison.Ordinal))["X-Upstream: ".Length..];

    [Fact]
    public async Task UntrustedPeer_ForwardedForIsNotTheClientAddress()
    {
        var log = Path.Combine(_directory, "access.log");
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions { Name = "a" });
        var settings = ProxyHarness.Settings(("a", upstream.Uri));
        settings["Listeners:main:TrustedProxies:0"] = "10.0.0.0/8";
        settings["AccessLog:Path"] = log;
        await using (var proxy = await ProxyHarness.StartAsync(settings, null, upstream))
        {
            await RawRequest.SendAsync(proxy.ProxyUri,
                "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Forwarded-For: 198.51.100.9\r\n\r\n");
        }

        var line = JsonDocument.Parse(File.ReadLines(log).Single()).RootElement;
        Assert.Equal("127.0.0.1", line.GetProperty("client").GetString());
    }

    [Theory]
    [InlineData("GET /headers HTTP/1.1\nHost: x\nConnection: close\n\n")]
    [InlineData("GET /headers HTTP/1.1\r\nHost: x\nConnection: close\r\n\r\n")]
    [InlineData("GET /headers HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\n")]
    [InlineData("POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: +5\r\n\r\nhello")]
    [InlineData("POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: -0\r\n\r\n")]
    [InlineData("POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0x5\r\n\r\nhello")]
    [InlineData("POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 5 \r\nContent-Length: 5\r\n\r\nhello")]
    public async Task LenientRequestHeads_AreRejected(string request)
    {
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions { Name = "a" });
        await using var proxy = await ProxyHarness.StartAsync(upstream);

        var text = await RawRequest.SendAsync(proxy.ProxyUri, request);

        Assert.StartsWith("HTTP/1.1 400", text);
        Assert.Equal(0, upstream.RequestsReceived);
        // Kestrel answers these itself, without Proxy-Status; its connection metric carries the cause.
        using var admin = new HttpClient { BaseAddress = proxy.Server.AdminUri };
        var deadline = DateTime.UtcNow + Bound;
        while (!(await admin.GetStringAsync("/metrics").WaitAsync(Bound)).Contains(
            "kestrel_connection_duration_seconds_count{error_type=\"invalid_", StringComparison.Ordinal))
        {
            Assert.True(DateTime.UtcNow < deadline, "Kestrel's rejection is not in /metrics");
            await Task.Delay(10);
        }
    }

    [Fact]
    public async Task ProxyProtocol_V1AndV2_SetTheClientAddress()
    {
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions { Name = "a" });
        var settings = ProxyHarness.Settings(("a", upstream.Uri));
        settings["Listeners:main:ProxyProtocol"] = "true";
        settings["Listeners:main:TrustedProxies"] = "127.0.0.1";
        await using var proxy = await ProxyHarness.StartAsync(settings, null, upstream);
        var request = Encoding.ASCII.GetBytes("GET /headers HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Forwarded-For: 10.9.9.9\r\n\r\n");

        var v1 = await ExchangeAsync(proxy.ProxyUri, [.. "PROXY TCP4 198.51.100.7 127.0.0.1 40000 80\r\n"u8, .. request]);
        var v2 = await ExchangeAsync(proxy.ProxyUri, [.. ProxyV2(command: 0x21, family: 0x21, [
            0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x42, // 2001:db8::42
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,                // ::1
            0x9c, 0x40, 0x00, 0x50,
            0x04, 0x00, 0x02, 0xab, 0xcd]), .. request]);                     // a NOOP TLV
        var local = await ExchangeAsync(proxy.ProxyUri, [.. ProxyV2(command: 0x20, family: 0x00, []), .. request]);

        Assert.StartsWith("HTTP/1.1 200", v1);
        Assert.Contains("X-Forwarded-For: 198.51.100.7\r\n", v1);
        Assert.Contains("X-Forwarded-For: 2001:db8::42\r\n", v2);
        // LOCAL: the load balancer speaks for itself, and as a trusted proxy its chain is kept.
        Assert.Contains("X-Forwarded-For: 10.9.9.9, 127.0.0.1\r\n", local);
    }

    [Fact]
    public async Task ProxyProtocol_FromAnUntrustedPeer_OrMissing_ClosesTheConnection()
    {
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions { Name = "a" });
        var trusted = ProxyHarness.Settings(("a", upstream.Uri));
        trusted["Listeners:main:ProxyProtocol"] = "true";
        trusted["Listeners:main:TrustedProxies"] = "127.0.0.1";
        var untrusted = new Dictionary<string, string?>(trusted) { ["Listeners:main:TrustedProxies"] = "10.0.0.0/8" };
        const string request = "GET /headers HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

        string missing, malformed, spoofed;
        await using (var proxy = await ProxyHarness.StartAsync(trusted, null, upstream))
        {
            missing = await ExchangeAsync(proxy.ProxyUri, Encoding.ASCII.GetBytes(request));
            malformed = await ExchangeAsync(proxy.ProxyUri, Encoding.ASCII.GetBytes("PROXY TCP4 198.51.100.7 127.0.0.1 99999 80\r\n" + request));
            Assert.Contains(proxy.Logs.Lines, l => l.Contains("PROXY v1 port", StringComparison.Ordinal));
            using var admin = new HttpClient { BaseAddress = proxy.Server.AdminUri };
            var metrics = await admin.GetStringAsync("/metrics").WaitAsync(Bound);
            Assert.Contains("ferry_listener_connections_refused_total{ferry_listener=\"main\",reason=\"invalid_header\"} 2\n", metrics);
        }
        await using (var proxy = await ProxyHarness.StartAsync(untrusted, null))
        {
            spoofed = await ExchangeAsync(proxy.ProxyUri, Encoding.ASCII.GetBytes("PROXY TCP4 198.51.100.7 127.0.0.1 40000 80\r\n" + request));
            Assert.Contains(proxy.Logs.Lines, l => l.Contains("not in TrustedProxies", StringComparison.Ordinal));
        }

        Assert.Equal("", missing);
        Assert.Equal("", malformed);
        Assert.Equal("", spoofed);
        Assert.Equal(0, upstream.RequestsReceived);
    }

    [Fact]
    public async Task ProxyProtocol_HeaderThatNeverCompletes_ClosesTheConnectionAfterTheTimeout()
    {
        var time = new ManualTimeProvider();
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions { Name = "a" });
        var settings = ProxyHarness.Settings(("a", upstream.Uri));
        settings["Listeners:main:ProxyProtocol"] = "true";
        settings["Listeners:main:TrustedProxies"] = "127.0.0.1";
        await using var proxy = await ProxyHarness.StartAsync(settings, time, upstream);
        var timers = time.ScheduledTimers;

        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await socket.ConnectAsync(proxy.ProxyUri.Host, proxy.ProxyUri.Port).WaitAsync(Bound);
        await socket.SendAsync("PROXY TCP4 198.51.100.7 "u8.ToArray());
        await time.WaitForTimersAsync(timers + 1).WaitAsync(Bound);
        time.Advance(TimeSpan.FromSeconds(10));
        var n = await socket.ReceiveAsync(new byte[16].AsMemory()).AsTask().WaitAsync(Bound);

        Assert.Equal(0, n);
        Assert.Contains(proxy.Logs.Lines, l => l.Contains("no complete PROXY protocol header within 10 s", StringComparison.Ordinal));
    }

    private static byte[] ProxyV2(byte command, byte family, byte[] body) =>
        [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, command, family, (byte)(body.Length >> 8), (byte)body.Length, .. body];

    // Sends bytes and reads until the server closes; a reset counts as a close.
    private static async Task<string> ExchangeAsync(Uri proxy, byte[] data)
    {
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await socket.ConnectAsync(proxy.Host, proxy.Port).WaitAsync(Bound);
        await socket.SendAsync(data);
        var received = new MemoryStream();
        var buffer = new byte[8192];
        try
        {
            int n;
            while ((n = await socket.ReceiveAsync(buffer.AsMemory()).AsTask().WaitAsync(Bound)) > 0)
            {
                received.Write(buffer, 0, n);
            }
        }
        catch (SocketException)
        {
        }
        return Encoding.Latin1.GetString(received.ToArray());
    }
}
