using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Authentication;
using Ferry.FunctionalTests.Support;
using Ferry.Lab;
using Ferry.Tests.Support;
using Ferry.Upstream;
using Xunit.Abstractions;

namespace Ferry.FunctionalTests.Tls;

// https destinations over loopback: Lab upstreams serving TLS with certificates the tests make (TestCertificates).
public sealed class UpstreamTlsTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);
    private static TestCertificates Certificates => TestCertificates.Shared;

    private static LabUpstream Https(string name, Func<LabUpstreamOptions, LabUpstreamOptions>? configure = null)
    {
        var options = new LabUpstreamOptions { Name = name, ServerCertificate = Certificates.Server };
        return LabUpstream.Start(configure is null ? options : configure(options));
    }

    private static Dictionary<string, string?> Settings(LabUpstream upstream, params (string Key, string Value)[] tls)
    {
        var settings = ProxyHarness.Settings((upstream.Name, upstream.Uri));
        foreach (var (key, value) in tls)
        {
            settings[$"Clusters:c:{key}"] = value;
        }
        return settings;
    }

    [Fact]
    public async Task HttpsDestination_IsServed_OverOnePooledTlsConnection()
    {
        await using var upstream = Https("tls");
        await using var proxy = await ProxyHarness.StartAsync(Settings(upstream, ("Tls:CaFile", Certificates.CaFile)), null, upstream);

        for (var i = 0; i < 5; i++)
        {
            using var get = await proxy.Client.GetAsync("/").WaitAsync(Bound);
            Assert.Equal(HttpStatusCode.OK, get.StatusCode);
            Assert.Equal("hello from tls\n", await get.Content.ReadAsStringAsync());
        }
        using var post = await proxy.Client.PostAsync("/echo", new StringContent("over tls")).WaitAsync(Bound);

        Assert.Equal("over tls", await post.Content.ReadAsStringAsync());
        var pool = proxy.Destination("tls").Pool;
        Assert.Equal(1, pool.Opened);
        Assert.Equal(5, pool.Reused);
        Assert.Equal(1, upstream.ConnectionsAccepted);
        Assert.Equal(0, upstream.TlsHandshakeFailures);
    }

    [Fact]
    public async Task UntrustedCertificate_Is502TlsCertificateError_AndCountsAgainstTheDestination()
    {
        await using var upstream = Https("untrusted");
        await using var proxy = await ProxyHarness.StartAsync(Settings(upstream, ("Tls:CaFile", Certificates.OtherCaFile)), null, upstream);

        using var response = await proxy.Client.GetAsync("/").WaitAsync(Bound);

        Assert.Equal(HttpStatusCode.BadGateway, response.StatusCode);
        Assert.StartsWith("ferry; error=tls_certificate_error", ProxyAssert.ProxyStatus(response));
        Assert.Contains(proxy.Logs.Lines, l => l.Contains("the certificate chain is not trusted", StringComparison.Ordinal));
        Assert.Equal(0, upstream.RequestsReceived);
        Assert.Equal(0, proxy.Destination("untrusted").Pool.Opened);
    }

    [Fact]
    public async Task CertificateForAnotherName_Is502TlsCertificateError_UnlessServerNameSaysThatName()
    {
        await using var upstream = Https("named", o => o with { ServerCertificate = Certificates.OtherName });
        await using (var proxy = await ProxyHarness.StartAsync(Settings(upstream, ("Tls:CaFile", Certificates.CaFile)), null))
        {
            using var response = await proxy.Client.GetAsync("/").WaitAsync(Bound);
            Assert.Equal(HttpStatusCode.BadGateway, response.StatusCode);
            Assert.StartsWith("ferry; error=tls_certificate_error", ProxyAssert.ProxyStatus(response));
            Assert.Contains(proxy.Logs.Lines, l => l.Contains("the certificate is not valid for '127.0.0.1'", StringComparison.Ordinal));
        }
        // The cluster's name, then a destination's own.
        await using (var proxy = await ProxyHarness.StartAsync(
            Settings(upstream, ("Tls:CaFile", Certificates.CaFile), ("Tls:ServerName", "other.example")), null))
        {
            using var response = await proxy.Client.GetAsync("/").WaitAsync(Bound);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        }
        await using (var proxy = await ProxyHarness.StartAsync(
            Settings(upstream, ("Tls:CaFile", Certificates.CaFile), ("Tls:ServerName", "wrong.example"),
                ("Destinations:named:Tls:ServerName", "other.example")), null, upstream))
        {
            using var response = await proxy.Client.GetAsync("/").WaitAsync(Bound);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        }
    }

    [Fact]
    public async Task DangerousAcceptAnyServerCertificate_AcceptsAnUntrustedOne()
    {
        await using var upstream = Https("any", o => o with { ServerCertificate = Certificates.OtherName });
        await using var proxy = await ProxyHarness.StartAsync(Settings(upstream, ("Tls:DangerousAcceptAnyServerCertificate", "true")), null, upstream);

        using var response = await proxy.Client.GetAsync("/").WaitAsync(Bound);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
    }

    [Fact]
    public async Task PlainHttpBehindAnHttpsAddress_Is502TlsProtocolError()
    {
        // A plain HTTP server answers the ClientHello the way nginx does: a 400 and a close.
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(4);
        var server = Task.Run(async () =>
        {
            using var socket = await listener.AcceptAsync();
            var buffer = new byte[4096];
            await socket.ReceiveAsync(buffer);
            await socket.SendAsync("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"u8.ToArray());
            socket.Shutdown(SocketShutdown.Both);
        });
        var settings = ProxyHarness.Settings(("plain", new Uri($"https://127.0.0.1:{((IPEndPoint)listener.LocalEndPoint!).Port}/")));
        await using var proxy = await ProxyHarness.StartAsync(settings, null);

        using var response = await proxy.Client.GetAsync("/").WaitAsync(Bound);

        Assert.Equal(HttpStatusCode.BadGateway, response.StatusCode);
        Assert.StartsWith("ferry; error=tls_protocol_error", ProxyAssert.ProxyStatus(response));
        await server.WaitAsync(Bound);
    }

    [Fact]
    public async Task ClientCertificate_RequiredByTheDestination_IsSentWhenConfigured()
    {
        await using var upstream = Https("mtls", o => o with
        {
            ClientCertificateCheck = c => c.Issuer == Certificates.Ca.Subject,
        });
        await using (var proxy = await ProxyHarness.StartAsync(Settings(upstream, ("Tls:CaFile", Certificates.CaFile)), null))
        {
            using var response = await proxy.Client.GetAsync("/").WaitAsync(Bound);
            output.WriteLine($"without a client certificate: {(int)response.StatusCode} {ProxyAssert.ProxyStatus(response)}");
            Assert.Equal(HttpStatusCode.BadGateway, response.StatusCode);
            Assert.Matches("^ferry; error=(tls_protocol_error|connection_terminated)", ProxyAssert.ProxyStatus(response));
            Assert.Equal(0, upstream.RequestsReceived);
        }
        await using (var proxy = await ProxyHarness.StartAsync(Settings(upstream,
            ("Tls:CaFile", Certificates.CaFile),
            ("Tls:ClientCertificate:Path", Certificates.ClientCertificateFile),
            ("Tls:ClientCertificate:KeyPath", Certificates.ClientKeyFile)), null, upstream))
        {
            using var response = await proxy.Client.GetAsync("/").WaitAsync(Bound);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            Assert.Contains("CN=ferry-client", upstream.ClientCertificateSubjects);
        }
    }

    [Fact]
    public async Task IdleWatch_SeesCloseNotifyAndFin_OnAnIdleTlsConnection_AtOnce()
    {
        var time = new ManualTimeProvider();
        await using var upstream = Https("w", o => o with { TimeProvider = time, IdleTimeout = TimeSpan.FromSeconds(5) });
        await using var proxy = await ProxyHarness.StartAsync(Settings(upstream, ("Tls:CaFile", Certificates.CaFile)), time, upstream);
        var pool = proxy.Destination("w").Pool;

        (await proxy.Client.GetAsync("/").WaitAsync(Bound)).EnsureSuccessStatusCode();
        Assert.Equal(1, pool.Idle);
        time.Advance(TimeSpan.FromSeconds(5));

        await Wait.Until(() => pool.Idle == 0 && pool.Retired(RetireReason.ClosedWhileIdle) == 1);
        Assert.Equal(1, pool.ClosedByFin);
        Assert.Equal(TimeSpan.FromSeconds(5), pool.Learner.IdleTimeout);
    }

    [Fact]
    public async Task IdleWatch_SeesCloseNotifyAlone_WhileTheTcpConnectionStaysOpen()
    {
        // A destination that sends close_notify on an idle connection and keeps its socket open: nothing but the TLS
        // layer says the connection is over.
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(4);
        var address = new Uri($"https://127.0.0.1:{((IPEndPoint)listener.LocalEndPoint!).Port}/");
        var settings = ProxyHarness.Settings(("n", address));
        settings["Clusters:c:Tls:CaFile"] = Certificates.CaFile;
        await using var proxy = await ProxyHarness.StartAsync(settings, null);
        var pool = proxy.Destination("n").Pool;
        var serverDone = new TaskCompletionSource();

        var server = Task.Run(async () =>
        {
            using var socket = await listener.AcceptAsync();
            await using var tls = new SslStream(new NetworkStream(socket, ownsSocket: false));
            await tls.AuthenticateAsServerAsync(new SslServerAuthenticationOptions
            {
                ServerCertificate = Certificates.Server,
                EnabledSslProtocols = SslProtocols.Tls12 | SslProtocols.Tls13,
            });
            var buffer = new byte[4096];
            var head = "";
            while (!head.Contains("\r\n\r\n", StringComparison.Ordinal))
            {
                var n = await tls.ReadAsync(buffer);
                Assert.NotEqual(0, n);
                head += System.Text.Encoding.ASCII.GetString(buffer, 0, n);
            }
            await tls.WriteAsync("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"u8.ToArray());
            await Wait.Until(() => pool.Idle == 1);
            await tls.ShutdownAsync();
            // Held open until the test has seen what it came for.
            await serverDone.Task.WaitAsync(Bound);
        });

        using (var response = await proxy.Client.GetAsync("/").WaitAsync(Bound))
        {
            Assert.Equal("ok", await response.Content.ReadAsStringAsync());
        }
        await Wait.Until(() => pool.Retired(RetireReason.ClosedWhileIdle) == 1);
        Assert.Equal(0, pool.Idle);
        serverDone.SetResult();
        await server.WaitAsync(Bound);
    }

    [Fact]
    public async Task ActiveHealthCheck_OfAnHttpsDestination_IsMadeOverTls_WithTheClusterSettings()
    {
        await using var upstream = Https("checked");
        var settings = Settings(upstream, ("Tls:CaFile", Certificates.CaFile), ("HealthCheck:Active:Enabled", "true"),
            ("HealthCheck:Active:Interval", "1h"), ("HealthCheck:Active:Path", "/"));
        await using (var proxy = await ProxyHarness.StartAsync(settings, null))
        {
            var checker = proxy.Server.State.Current.Clusters["c"].HealthChecker!;
            var (passed, reason) = await checker.CheckAsync(proxy.Destination("checked"), CancellationToken.None).WaitAsync(Bound);
            Assert.True(passed, reason);
            Assert.Equal("status 200", reason);
        }
        settings["Clusters:c:Tls:CaFile"] = Certificates.OtherCaFile;
        await using (var proxy = await ProxyHarness.StartAsync(settings, null, upstream))
        {
            var checker = proxy.Server.State.Current.Clusters["c"].HealthChecker!;
            var (passed, reason) = await checker.CheckAsync(proxy.Destination("checked"), CancellationToken.None).WaitAsync(Bound);
            Assert.False(passed);
            Assert.Contains("the certificate chain is not trusted", reason, StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task WebSocket_ToAnHttpsDestination_IsTunnelledOverTls()
    {
        await using var upstream = Https("ws");
        await using var proxy = await ProxyHarness.StartAsync(Settings(upstream, ("Tls:CaFile", Certificates.CaFile)), null, upstream);
        using var socket = new System.Net.WebSockets.ClientWebSocket();
        var uri = new UriBuilder(proxy.ProxyUri) { Scheme = "ws", Path = "/ws" }.Uri;

        await socket.ConnectAsync(uri, CancellationToken.None).WaitAsync(Bound);
        await socket.SendAsync("over tls"u8.ToArray(), System.Net.WebSockets.WebSocketMessageType.Text, true, CancellationToken.None).WaitAsync(Bound);
        var buffer = new byte[64];
        var received = await socket.ReceiveAsync(buffer, CancellationToken.None).WaitAsync(Bound);
        await socket.CloseAsync(System.Net.WebSockets.WebSocketCloseStatus.NormalClosure, "done", CancellationToken.None).WaitAsync(Bound);

        Assert.Equal("over tls", System.Text.Encoding.UTF8.GetString(buffer, 0, received.Count));
        Assert.Equal(System.Net.WebSockets.WebSocketCloseStatus.NormalClosure, socket.CloseStatus);
        await Wait.Until(() => proxy.Destination("ws").Pool.Active == 0);
        Assert.Empty(upstream.Errors);
    }
}
