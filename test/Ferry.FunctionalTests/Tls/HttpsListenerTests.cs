using System.Net;
using System.Net.Http.Headers;
using System.Net.Security;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Security.Authentication;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json;
using Ferry.FunctionalTests.Support;
using Ferry.Lab;

namespace Ferry.FunctionalTests.Tls;

// HTTPS listeners over loopback: Ferry terminates TLS from the client and forwards to a plain Lab upstream.
public sealed partial class HttpsListenerTests : IDisposable
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);

    private readonly string _directory = Directory.CreateTempSubdirectory("ferry-https-").FullName;
    private readonly TestCertificates _certificates = TestCertificates.Shared;

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    private (string Cert, string Key) WritePem(string name, X509Certificate2 certificate, string? directory = null)
    {
        directory ??= _directory;
        var cert = Path.Combine(directory, name + ".pem");
        var key = Path.Combine(directory, name + ".key");
        File.WriteAllText(cert, certificate.ExportCertificatePem());
        using var ecdsa = certificate.GetECDsaPrivateKey()!;
        File.WriteAllText(key, ecdsa.ExportPkcs8PrivateKeyPem());
        return (cert, key);
    }

    // Writes to a temporary name and renames over the target, as editors and cert-manager do.
    private static void ReplaceByRename(string path, string contents)
    {
        var temporary = path + ".tmp";
        File.WriteAllText(temporary, contents);
        File.Move(temporary, path, overwrite: true);
    }

    private static Dictionary<string, string?> Settings(LabUpstream upstream, string cert, string key)
    {
        var settings = ProxyHarness.Settings(("a", upstream.Uri));
        settings["Listeners:main:Certificate:Path"] = cert;
        settings["Listeners:main:Certificate:KeyPath"] = key;
        return settings;
    }

    // A client that trusts the test CA, records the certificate each new connection was shown, and never reuses one.
    private sealed class Client : IDisposable
    {
        private string? _lastSerial;

        public Client(Uri baseAddress, string? serverName = null, Version? version = null)
        {
            var handler = new SocketsHttpHandler
            {
                UseProxy = false,
                AllowAutoRedirect = false,
                PooledConnectionLifetime = TimeSpan.Zero,
                SslOptions = new SslClientAuthenticationOptions
                {
                    RemoteCertificateValidationCallback = (_, certificate, _, _) =>
                    {
                        Volatile.Write(ref _lastSerial, certificate is null ? null : new X509Certificate2(certificate).SerialNumber);
                        return certificate is not null;
                    },
                },
            };
            Http = new HttpClient(handler) { BaseAddress = baseAddress, Timeout = Bound };
            // SocketsHttpHandler takes the server name it sends from the Host header, not from SslOptions.TargetHost.
            Http.DefaultRequestHeaders.Host = serverName;
            if (version is not null)
            {
                Http.DefaultRequestVersion = version;
                Http.DefaultVersionPolicy = HttpVersionPolicy.RequestVersionExact;
            }
        }

        public HttpClient Http { get; }

        public string? LastSerial => Volatile.Read(ref _lastSerial);

        public async Task<HttpResponseMessage> GetOnNewConnectionAsync(string path)
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, path);
            request.Headers.ConnectionClose = true;
            return await Http.SendAsync(request);
        }

        public void Dispose() => Http.Dispose();
    }

    // One TLS handshake with SslStream: the certificate and ALPN protocol the server chose for this client hello.
    private static async Task<(X509Certificate2 Certificate, SslApplicationProtocol Alpn, SslProtocols Protocol)> HandshakeAsync(
        Uri uri, string? serverName, SslProtocols protocols = SslProtocols.None, List<SslApplicationProtocol>? alpn = null)
    {
        using var tcp = new TcpClient();
        await tcp.ConnectAsync(IPAddress.Loopback, uri.Port).WaitAsync(Bound);
        await using var tls = new SslStream(tcp.GetStream());
        await tls.AuthenticateAsClientAsync(new SslClientAuthenticationOptions
        {
            TargetHost = serverName ?? "",
            EnabledSslProtocols = protocols,
            ApplicationProtocols = alpn,
            RemoteCertificateValidationCallback = (_, _, _, _) => true,
        }).WaitAsync(Bound);
        return (new X509Certificate2(tls.RemoteCertificate!), tls.NegotiatedApplicationProtocol, tls.SslProtocol);
    }

    [Fact]
    public async Task HttpsListener_ForwardsToAPlainUpstream_AndTellsItTheSchemeWasHttps()
    {
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions { Name = "a" });
        var (cert, key) = WritePem("server", _certificates.Server);
        var settings = Settings(upstream, cert, key);
        var accessLog = Path.Combine(_directory, "access.log");
        settings["AccessLog:Path"] = accessLog;
        await using (var proxy = await ProxyHarness.StartAsync(settings, null, upstream))
        {
            using var client = new Client(proxy.ProxyUri, "localhost");

            Assert.Equal("https", proxy.ProxyUri.Scheme);
            using var response = await client.Http.GetAsync("/headers");

            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            Assert.Contains("X-Forwarded-Proto: https\r\n", await response.Content.ReadAsStringAsync());
            Assert.Equal(_certificates.Server.SerialNumber, client.LastSerial);
            Assert.False(response.Headers.Contains("Strict-Transport-Security")); // off by default
        }

        // Disposing the server drained the access log.
        using var line = JsonDocument.Parse(Assert.Single(File.ReadAllLines(accessLog)));
        Assert.StartsWith("TLSv1.", line.RootElement.GetProperty("tls").GetString());
    }

    [Fact]
    public async Task Pkcs12CertificateWithPassword_IsServed()
    {
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions { Name = "a" });
        var pfx = Path.Combine(_directory, "server.pfx");
        File.WriteAllBytes(pfx, _certificates.Server.Export(X509ContentType.Pkcs12, "s3cret"));
        var settings = ProxyHarness.Settings(("a", upstream.Uri));
        settings["Listeners:main:Certificate:Path"] = pfx;
        settings["Listeners:main:Certificate:Password"] = "s3cret";
        await using var proxy = await ProxyHarness.StartAsync(settings, null, upstream);

        var (certificate, _, _) = await HandshakeAsync(proxy.ProxyUri, "localhost");

        Assert.Equal(_certificates.Server.SerialNumber, certificate.SerialNumber);
    }

    [Fact]
    public async Task Sni_ChoosesByServerName_ExactThenWildcardThenDefault()
    {
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions { Name = "a" });
        using var a = _certificates.IssueServer("a.example", "a.example");
        using var b = _certificates.IssueServer("b.example", "b.example");
        using var wild = _certificates.IssueServer("wild", "*.wild.example");
        var settings = Settings(upstream, WritePem("default", _certificates.Server).Cert, Path.Combine(_directory, "default.key"));
        foreach (var (host, certificate) in new[] { ("a.example", a), ("B.Example", b), ("*.wild.example", wild) })
        {
            var (cert, key) = WritePem(host.Replace('*', '_'), certificate);
            settings[$"Listeners:main:Sni:{host}:Certificate:Path"] = cert;
            settings[$"Listeners:main:Sni:{host}:Certificate:KeyPath"] = key;
        }
        await using var proxy = await ProxyHarness.StartAsync(settings, null, upstream);

        Assert.Equal(a.SerialNumber, (await HandshakeAsync(proxy.ProxyUri, "a.example")).Certificate.SerialNumber);
        Assert.Equal(b.SerialNumber, (await HandshakeAsync(proxy.ProxyUri, "b.example")).Certificate.SerialNumber);
        Assert.Equal(wild.SerialNumber, (await HandshakeAsync(proxy.ProxyUri, "x.wild.example")).Certificate.SerialNumber);
        // A wildcard covers one label only, as in the certificate itself.
        Assert.Equal(_certificates.Server.SerialNumber, (await HandshakeAsync(proxy.ProxyUri, "y.x.wild.example")).Certificate.SerialNumber);
        Assert.Equal(_certificates.Server.SerialNumber, (await HandshakeAsync(proxy.ProxyUri, "unknown.example")).Certificate.SerialNumber);
        Assert.Equal(_certificates.Server.SerialNumber, (await HandshakeAsync(proxy.ProxyUri, null)).Certificate.SerialNumber);

        // The request then goes through like any other.
        using var client = new Client(proxy.ProxyUri, "a.example");
        using var response = await client.Http.GetAsync("/");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(a.SerialNumber, client.LastSerial);
    }

    [Fact]
    public async Task SniWithoutDefault_FailsTheHandshakeForAnUnknownName()
    {
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions { Name = "a" });
        using var a = _certificates.IssueServer("a.example", "a.example");
        var (cert, key) = WritePem("a", a);
        var settings = ProxyHarness.Settings(("a", upstream.Uri));
        settings["Listeners:main:Sni:a.example:Certificate:Path"] = cert;
        settings["Listeners:main:Sni:a.example:Certificate:KeyPath"] = key;
        await using var proxy = await ProxyHarness.StartAsync(settings, null, upstream);

        Assert.Equal(a.SerialNumber, (await HandshakeAsync(proxy.ProxyUri, "a.example")).Certificate.SerialNumber);
        var refused = await Record.ExceptionAsync(() => HandshakeAsync(proxy.ProxyUri, "other.example"));
        Assert.True(refused is AuthenticationException or IOException, refused?.ToString());
        Assert.Equal(0, upstream.RequestsReceived);
    }

    [Fact]
    public async Task SslProtocols_Tls13Only_RefusesATls12Client_AndTheDefaultAcceptsBoth()
    {
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions { Name = "a" });
        var (cert, key) = WritePem("server", _certificates.Server);
        await using var defaults = await ProxyHarness.StartAsync(Settings(upstream, cert, key), null, upstream);
        var settings = Settings(upstream, cert, key);
        settings["Listeners:main:SslProtocols:0"] = "Tls13";
        await using var tls13 = await ProxyHarness.StartAsync(settings, null);

        Assert.Equal(SslProtocols.Tls12, (await HandshakeAsync(defaults.ProxyUri, "localhost", SslProtocols.Tls12)).Protocol);
        Assert.Equal(SslProtocols.Tls13, (await HandshakeAsync(defaults.ProxyUri, "localhost", SslProtocols.Tls13)).Protocol);
        Assert.Equal(SslProtocols.Tls13, (await HandshakeAsync(tls13.ProxyUri, "localhost", SslProtocols.Tls13)).Protocol);
        var refused = await Record.ExceptionAsync(() => HandshakeAsync(tls13.ProxyUri, "localhost", SslProtocols.Tls12));
        Assert.True(refused is AuthenticationException or IOException, refused?.ToString());
    }

    // .NET's client may refuse to offer TLS 1.1 itself, which would prove nothing; openssl s_client offers it, and the
    // server's protocol_version alert (RFC 8446 §6.2) shows that the refusal is Ferry's.
    [OpenSslFact]
    public async Task DefaultListener_RefusesTls11_WithAProtocolVersionAlert()
    {
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions { Name = "a" });
        var (cert, key) = WritePem("server", _certificates.Server);
        await using var proxy = await ProxyHarness.StartAsync(Settings(upstream, cert, key), null, upstream);

        async Task<string> SClientAsync(string version)
        {
            var start = new System.Diagnostics.ProcessStartInfo("/usr/bin/openssl")
            {
                RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false,
            };
            // @SECLEVEL=0 lets this OpenSSL offer TLS 1.1 at all (Debian's default level forbids it).
            foreach (var argument in new[] { "s_client", "-connect", $"127.0.0.1:{proxy.ProxyUri.Port}", "-servername", "localhost", version, "-cipher", "DEFAULT:@SECLEVEL=0" })
            {
                start.ArgumentList.Add(argument);
            }
            using var process = System.Diagnostics.Process.Start(start)!;
            process.StandardInput.Close();
            var output = process.StandardOutput.ReadToEndAsync();
            var error = process.StandardError.ReadToEndAsync();
            try
            {
                await process.WaitForExitAsync().WaitAsync(Bound);
            }
            finally
            {
                process.Kill(entireProcessTree: true);
            }
            return await output + await error;
        }

        var tls11 = await SClientAsync("-tls1_1");
        var tls12 = await SClientAsync("-tls1_2");

        Assert.Contains("alert protocol version", tls11);
        Assert.Contains("Protocol  : TLSv1.2", tls12);
    }

    [Fact]
    public async Task Http1AndHttp2_NegotiatesH2ThroughAlpn_AndHttp1OnlyDoesNot()
    {
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions { Name = "a" });
        var (cert, key) = WritePem("server", _certificates.Server);
        var settings = Settings(upstream, cert, key);
        settings["Listeners:main:Protocols"] = "Http1AndHttp2";
        await using var both = await ProxyHarness.StartAsync(settings, null, upstream);
        await using var http1 = await ProxyHarness.StartAsync(Settings(upstream, cert, key), null);
        List<SslApplicationProtocol> offered = [SslApplicationProtocol.Http2, SslApplicationProtocol.Http11];

        Assert.Equal(SslApplicationProtocol.Http2, (await HandshakeAsync(both.ProxyUri, "localhost", alpn: offered)).Alpn);
        Assert.Equal(SslApplicationProtocol.Http11, (await HandshakeAsync(both.ProxyUri, "localhost", alpn: [SslApplicationProtocol.Http11])).Alpn);
        Assert.Equal(SslApplicationProtocol.Http11, (await HandshakeAsync(http1.ProxyUri, "localhost", alpn: offered)).Alpn);

        using var client = new Client(both.ProxyUri, "localhost", HttpVersion.Version20);
        using var response = await client.Http.GetAsync("/headers");
        Assert.Equal(HttpVersion.Version20, response.Version);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
    }

    [Fact]
    public async Task ProxyProtocolHeader_ComesBeforeTheTlsHandshake()
    {
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions { Name = "a" });
        var (cert, key) = WritePem("server", _certificates.Server);
        var settings = Settings(upstream, cert, key);
        settings["Listeners:main:ProxyProtocol"] = "true";
        settings["Listeners:main:TrustedProxies"] = "127.0.0.1";
        await using var proxy = await ProxyHarness.StartAsync(settings, null, upstream);

        using var tcp = new TcpClient();
        await tcp.ConnectAsync(IPAddress.Loopback, proxy.ProxyUri.Port).WaitAsync(Bound);
        var stream = tcp.GetStream();
        await stream.WriteAsync("PROXY TCP4 198.51.100.7 127.0.0.1 40000 443\r\n"u8.ToArray());
        await using var tls = new SslStream(stream);
        await tls.AuthenticateAsClientAsync(new SslClientAuthenticationOptions
        {
            TargetHost = "localhost",
            RemoteCertificateValidationCallback = (_, _, _, _) => true,
        }).WaitAsync(Bound);
        await tls.WriteAsync("GET /headers HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"u8.ToArray());
        using var reader = new StreamReader(tls, Encoding.Latin1);
        var response = await reader.ReadToEndAsync().WaitAsync(Bound);

        Assert.StartsWith("HTTP/1.1 200", response);
        Assert.Contains("X-Forwarded-For: 198.51.100.7\r\n", response);
        Assert.Contains("X-Forwarded-Proto: https\r\n", response);
    }

    [Fact]
    public async Task CertificateReplacedByRename_NewConnectionsGetIt_WithNoFailedRequest_AndOpenConnectionsContinue()
    {
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions { Name = "a" });
        using var first = _certificates.IssueServer("localhost", "localhost");
        using var second = _certificates.IssueServer("localhost", "localhost");
        var (cert, key) = WritePem("server", first);
        await using var proxy = await ProxyHarness.StartAsync(Settings(upstream, cert, key), null, upstream);

        // A keep-alive connection made before the change: it must go on working with the certificate it was made with.
        var handshakes = 0;
        using var kept = new HttpClient(new SocketsHttpHandler
        {
            UseProxy = false,
            MaxConnectionsPerServer = 1,
            SslOptions = new SslClientAuthenticationOptions
            {
                RemoteCertificateValidationCallback = (_, _, _, _) => Interlocked.Increment(ref handshakes) > 0,
            },
        })
        { BaseAddress = proxy.ProxyUri, Timeout = Bound };
        kept.DefaultRequestHeaders.Host = "localhost";
        (await kept.GetAsync("/")).EnsureSuccessStatusCode();

        var requests = 0;
        var failures = new System.Collections.Concurrent.ConcurrentQueue<string>();
        using var replaced = new ManualResetEventSlim();
        using var stop = new CancellationTokenSource(Bound);
        // Four loops of requests, each on a new connection, until one of them is shown the new certificate; bounded by
        // Bound and by 5000 requests each.
        async Task LoopAsync()
        {
            using var client = new Client(proxy.ProxyUri, "localhost");
            for (var i = 0; i < 5000 && !stop.IsCancellationRequested; i++)
            {
                Interlocked.Increment(ref requests);
                try
                {
                    using var response = await client.GetOnNewConnectionAsync("/");
                    if (response.StatusCode != HttpStatusCode.OK)
                    {
                        failures.Enqueue($"status {(int)response.StatusCode}");
                    }
                }
                catch (HttpRequestException ex)
                {
                    failures.Enqueue(ex.ToString());
                }
                if (replaced.IsSet && client.LastSerial == second.SerialNumber)
                {
                    await stop.CancelAsync();
                }
            }
        }
        var loops = Enumerable.Range(0, 4).Select(_ => Task.Run(LoopAsync)).ToArray();
        await Wait.Until(() => Volatile.Read(ref requests) >= 40 || loops.All(l => l.IsCompleted), Bound);
        using (var ecdsa = second.GetECDsaPrivateKey()!)
        {
            // The key first, then the certificate: between the two the pair does not match and the old one stays.
            ReplaceByRename(key, ecdsa.ExportPkcs8PrivateKeyPem());
        }
        ReplaceByRename(cert, second.ExportCertificatePem());
        replaced.Set();
        await Task.WhenAll(loops);

        Console.WriteLine($"certificate reload under load: {requests} requests over new connections in 4 loops, {failures.Count} failed");
        Assert.Empty(failures);
        Assert.True(stop.IsCancellationRequested, "no new connection was shown the new certificate");
        var slot = Assert.Single(proxy.Server.Certificates.Listeners.Single().Slots);
        Assert.Equal(second.SerialNumber, slot.Current!.SerialNumber);
        // The store logs the reload right after the swap: a handshake on another thread can see the new certificate
        // before the line is written.
        await Wait.Until(() => proxy.Logs.Lines.Any(l => l.Contains("certificate for default reloaded", StringComparison.Ordinal)), Bound);
        (await kept.GetAsync("/")).EnsureSuccessStatusCode();
        Assert.Equal(1, handshakes);
    }

    [DllImport("libc", SetLastError = true, EntryPoint = "rename")]
    private static extern int Rename(string from, string to);

    // Linux only (libc rename(2)), as is Ferry's deployment target.
    [Fact]
    public async Task KubernetesSecretSymlinkSwap_IsPickedUp()
    {
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions { Name = "a" });
        using var first = _certificates.IssueServer("localhost", "localhost");
        using var second = _certificates.IssueServer("localhost", "localhost");
        // The layout kubelet writes: tls.crt -> ..data/tls.crt, ..data -> ..<timestamp>, updated by swapping ..data.
        var volume = Directory.CreateDirectory(Path.Combine(_directory, "secret")).FullName;
        WritePem("tls", first, Directory.CreateDirectory(Path.Combine(volume, "..2026_12_02_a")).FullName);
        Directory.CreateSymbolicLink(Path.Combine(volume, "..data"), "..2026_12_02_a");
        File.CreateSymbolicLink(Path.Combine(volume, "tls.crt"), "..data/tls.pem");
        File.CreateSymbolicLink(Path.Combine(volume, "tls.key"), "..data/tls.key");
        await using var proxy = await ProxyHarness.StartAsync(Settings(upstream, Path.Combine(volume, "tls.crt"), Path.Combine(volume, "tls.key")), null, upstream);
        Assert.Equal(first.SerialNumber, (await HandshakeAsync(proxy.ProxyUri, "localhost")).Certificate.SerialNumber);

        WritePem("tls", second, Directory.CreateDirectory(Path.Combine(volume, "..2026_12_02_b")).FullName);
        Directory.CreateSymbolicLink(Path.Combine(volume, "..data_tmp"), "..2026_12_02_b");
        Assert.Equal(0, Rename(Path.Combine(volume, "..data_tmp"), Path.Combine(volume, "..data")));

        var deadline = DateTime.UtcNow + Bound;
        while ((await HandshakeAsync(proxy.ProxyUri, "localhost")).Certificate.SerialNumber != second.SerialNumber)
        {
            Assert.True(DateTime.UtcNow < deadline, "the swapped certificate was not served in time");
            await Task.Delay(50);
        }
    }

    [Fact]
    public async Task BadReplacement_KeepsTheOldCertificate_AndShowsInStatusAndMetrics()
    {
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions { Name = "a" });
        using var first = _certificates.IssueServer("localhost", "localhost");
        var (cert, key) = WritePem("server", first);
        await using var proxy = await ProxyHarness.StartAsync(Settings(upstream, cert, key), null, upstream);
        using var admin = new HttpClient { BaseAddress = proxy.Server.AdminUri, Timeout = Bound };

        ReplaceByRename(cert, "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n");
        JsonElement entry = default;
        var deadline = DateTime.UtcNow + Bound;
        while (true)
        {
            using var status = JsonDocument.Parse(await admin.GetStringAsync("/status"));
            entry = status.RootElement.GetProperty("certificates")[0].Clone();
            if (entry.GetProperty("lastReloadResult").GetString() == "failure")
            {
                break;
            }
            Assert.True(DateTime.UtcNow < deadline, "the failed reload did not show in /status");
            await Task.Delay(50);
        }

        Assert.Equal("main", entry.GetProperty("listener").GetString());
        Assert.Equal("default", entry.GetProperty("serverName").GetString());
        Assert.Equal(first.SerialNumber, entry.GetProperty("serialNumber").GetString());
        Assert.Equal("CN=localhost", entry.GetProperty("subject").GetString());
        Assert.Contains(cert, entry.GetProperty("lastReloadError").GetString());
        Assert.Equal(first.SerialNumber, (await HandshakeAsync(proxy.ProxyUri, "localhost")).Certificate.SerialNumber);
        using var client = new Client(proxy.ProxyUri, "localhost");
        using (var response = await client.Http.GetAsync("/"))
        {
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        }
        Assert.Contains(proxy.Logs.Lines, l => l.StartsWith("Error", StringComparison.Ordinal) && l.Contains("not reloaded, still serving CN=localhost", StringComparison.Ordinal));
        var metrics = await admin.GetStringAsync("/metrics");
        Assert.Contains("ferry_listener_certificate_reloads_total{ferry_listener=\"main\",ferry_server_name=\"default\",result=\"failure\"} 1", metrics);
        Assert.Contains($"ferry_listener_certificate_not_after_seconds{{ferry_listener=\"main\",ferry_server_name=\"default\"}} {new DateTimeOffset(first.NotAfter.ToUniversalTime()).ToUnixTimeSeconds()}", metrics);

        // An on-demand reload of the still-bad file fails again and changes nothing; a good file then loads.
        Assert.Equal("failure", Assert.Single(proxy.Server.Certificates.Reload()).LastResult);
        using var second = _certificates.IssueServer("localhost", "localhost");
        File.WriteAllText(cert, second.ExportCertificatePem());
        using (var ecdsa = second.GetECDsaPrivateKey()!)
        {
            File.WriteAllText(key, ecdsa.ExportPkcs8PrivateKeyPem());
        }
        proxy.Server.Certificates.Reload();
        Assert.Equal(second.SerialNumber, (await HandshakeAsync(proxy.ProxyUri, "localhost")).Certificate.SerialNumber);
    }

    [Fact]
    public async Task Hsts_IsSentOnRelayedAndOwnResponses()
    {
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions { Name = "a" });
        var (cert, key) = WritePem("server", _certificates.Server);
        var settings = Settings(upstream, cert, key);
        settings["Listeners:main:Hsts:Enabled"] = "true";
        settings["Listeners:main:Hsts:MaxAge"] = "3600";
        settings["Listeners:main:Hsts:IncludeSubDomains"] = "true";
        settings["Routes:all:Match:PathPrefix"] = "/known";
        await using var proxy = await ProxyHarness.StartAsync(settings, null, upstream);
        using var client = new Client(proxy.ProxyUri, "localhost");

        using var relayed = await client.Http.GetAsync("/known");
        using var own = await client.Http.GetAsync("/elsewhere");

        Assert.Equal(HttpStatusCode.NotFound, relayed.StatusCode); // the Lab upstream's own 404
        Assert.False(relayed.Headers.Contains("Proxy-Status"));
        Assert.Equal(HttpStatusCode.NotFound, own.StatusCode);     // Ferry's: no route
        Assert.True(own.Headers.Contains("Proxy-Status"));
        foreach (var response in new[] { relayed, own })
        {
            Assert.Equal("max-age=3600; includeSubDomains", Assert.Single(response.Headers.GetValues("Strict-Transport-Security")));
        }
    }

    [Fact]
    public async Task RedirectListener_Answers308ToHttps_KeepingPathAndQuery_AndRefusesABadHost()
    {
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions { Name = "a" });
        var settings = ProxyHarness.Settings(("a", upstream.Uri));
        settings["Listeners:main:RedirectToHttps:Enabled"] = "true";
        settings["Listeners:main:RedirectToHttps:Port"] = "8443";
        await using var proxy = await ProxyHarness.StartAsync(settings, null, upstream);

        using var request = new HttpRequestMessage(HttpMethod.Post, "/a/b%20c?x=1&y=%2F") { Content = new StringContent("body") };
        request.Headers.Host = "Example.COM:8080";
        using var response = await proxy.Client.SendAsync(request);
        Assert.Equal(HttpStatusCode.PermanentRedirect, response.StatusCode);
        Assert.Equal("https://Example.COM:8443/a/b%20c?x=1&y=%2F", response.Headers.Location!.OriginalString);
        Assert.Equal(0, upstream.RequestsReceived);

        foreach (var host in new[] { "evil.example\\@good.example", "a..b", "x:99999", "[::1%25eth0]", "user@host" })
        {
            var raw = await RawAsync(proxy.ProxyUri, $"GET /p HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
            Assert.True(raw.StartsWith("HTTP/1.1 400", StringComparison.Ordinal), $"{host}: {raw}");
            Assert.DoesNotContain("Location:", raw, StringComparison.OrdinalIgnoreCase);
        }
        var ipv6 = await RawAsync(proxy.ProxyUri, "GET / HTTP/1.1\r\nHost: [::1]:8080\r\nConnection: close\r\n\r\n");
        Assert.Contains("Location: https://[::1]:8443/\r\n", ipv6);
    }

    private static async Task<string> RawAsync(Uri uri, string request)
    {
        using var tcp = new TcpClient();
        await tcp.ConnectAsync(IPAddress.Loopback, uri.Port).WaitAsync(Bound);
        var stream = tcp.GetStream();
        await stream.WriteAsync(Encoding.ASCII.GetBytes(request));
        using var reader = new StreamReader(stream, Encoding.Latin1);
        return await reader.ReadToEndAsync().WaitAsync(Bound);
    }
}
