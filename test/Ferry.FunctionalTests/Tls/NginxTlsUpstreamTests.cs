using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Ferry.FunctionalTests.Support;
using Ferry.Upstream;
using Xunit.Abstractions;

namespace Ferry.FunctionalTests.Tls;

// nginx as a real TLS destination: its keepalive_timeout closes idle connections with close_notify and FIN, and its
// $ssl_session_reused says whether Ferry's new connections resumed the TLS session.
public sealed class NginxTlsUpstreamTests(ITestOutputHelper output)
{
    private const string Nginx = "/usr/sbin/nginx";
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);

    public sealed class NginxFactAttribute : FactAttribute
    {
        public NginxFactAttribute()
        {
            if (!File.Exists(Nginx) && !string.Equals(Environment.GetEnvironmentVariable("CI"), "true", StringComparison.OrdinalIgnoreCase))
            {
                Skip = $"nginx is not installed ({Nginx} missing; apt-get install nginx)";
            }
        }
    }

    [NginxFact]
    public async Task IdleTlsConnectionsClosedByNginx_LeaveThePoolAtOnce_AndNewOnesResumeTheSession()
    {
        var certificates = TestCertificates.Shared;
        var prefix = Directory.CreateTempSubdirectory("ferry-nginx-tls-").FullName;
        var port = Loopback.FreePort();
        File.WriteAllText(Path.Combine(prefix, "nginx.conf"), $$"""
            worker_processes 1;
            pid {{prefix}}/nginx.pid;
            error_log {{prefix}}/error.log;
            events { worker_connections 64; }
            http {
                access_log off;
                client_body_temp_path {{prefix}}/body;
                proxy_temp_path {{prefix}}/proxy;
                fastcgi_temp_path {{prefix}}/fastcgi;
                uwsgi_temp_path {{prefix}}/uwsgi;
                scgi_temp_path {{prefix}}/scgi;
                keepalive_timeout 2s;
                server {
                    listen 127.0.0.1:{{port}} ssl;
                    ssl_certificate {{certificates.ServerCertificateFile}};
                    ssl_certificate_key {{certificates.ServerKeyFile}};
                    ssl_protocols TLSv1.2 TLSv1.3;
                    location / { return 200 "reused=$ssl_session_reused protocol=$ssl_protocol\n"; }
                }
            }
            """);
        var start = new ProcessStartInfo(Nginx) { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
        foreach (var argument in new[] { "-p", prefix, "-e", Path.Combine(prefix, "error.log"), "-c", Path.Combine(prefix, "nginx.conf"), "-g", "daemon off;" })
        {
            start.ArgumentList.Add(argument);
        }
        using var nginx = Process.Start(start)!;
        try
        {
            await Loopback.WaitListeningAsync(port, nginx, Bound, async () =>
            {
                var log = File.Exists(Path.Combine(prefix, "error.log")) ? await File.ReadAllTextAsync(Path.Combine(prefix, "error.log")) : "";
                return $"nginx exited with code {nginx.ExitCode}: {await nginx.StandardError.ReadToEndAsync()}{log}";
            });
            // A host name, not 127.0.0.1: the runtime resumes TLS sessions by server name, and sends no SNI for an IP.
            var settings = ProxyHarness.Settings(("nginx", new Uri($"https://localhost:{port}/")));
            settings["Clusters:c:Tls:CaFile"] = certificates.CaFile;
            await using var proxy = await ProxyHarness.StartAsync(settings, null);
            var pool = proxy.Destination("nginx").Pool;

            var bodies = new List<string>();
            for (var connection = 0; connection < 3; connection++)
            {
                for (var i = 0; i < 3; i++)
                {
                    using var response = await proxy.Client.GetAsync("/").WaitAsync(Bound);
                    Assert.Equal(HttpStatusCode.OK, response.StatusCode);
                    bodies.Add((await response.Content.ReadAsStringAsync()).Trim());
                }
                // Past nginx's 2 s keepalive_timeout: it closes the idle connection, and the idle watch sees it.
                var closed = pool.Retired(RetireReason.ClosedWhileIdle);
                await Wait.Until(() => pool.Retired(RetireReason.ClosedWhileIdle) > closed, TimeSpan.FromSeconds(10));
                Assert.Equal(0, pool.Idle);
            }

            output.WriteLine($"bodies: {string.Join(" | ", bodies)}; opened {pool.Opened}, reused {pool.Reused}, "
                + $"closed while idle {pool.Retired(RetireReason.ClosedWhileIdle)} (FIN {pool.ClosedByFin}, RST {pool.ClosedByReset})");
            Assert.Equal(3, pool.Opened);
            Assert.Equal(6, pool.Reused);
            Assert.Equal(3, pool.ClosedByFin);
            Assert.Equal("reused=. protocol=TLSv1.3", bodies[0]);
            // Each connection's first request shows how it was established: the later ones resumed the first's session.
            Assert.Equal("reused=r protocol=TLSv1.3", bodies[3]);
            Assert.Equal("reused=r protocol=TLSv1.3", bodies[6]);
        }
        finally
        {
            nginx.Kill(entireProcessTree: true);
            await nginx.WaitForExitAsync().WaitAsync(Bound);
            Directory.Delete(prefix, recursive: true);
        }
    }
}
