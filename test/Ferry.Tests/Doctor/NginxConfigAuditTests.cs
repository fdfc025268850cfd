using Ferry.Doctor;
using Ferry.Tests.Support;

namespace Ferry.Tests.Doctor;

public sealed class NginxConfigAuditTests
{
    private static IReadOnlyList<NginxFinding> Audit(string text, NginxAuditConfig? config = null) =>
        NginxConfigAudit.Audit(NginxConfigParser.ParseText(text, "nginx.conf", "/nonexistent"), "nginx.conf", config ?? NginxAuditConfig.Unknown);

    // Everything right for a backend with a 5 s idle timeout; each test breaks one thing.
    private const string Good = """
        http {
            upstream app {
                server 10.0.0.1:8000 max_fails=0;
                server 10.0.0.2:8000 max_fails=0;
                keepalive 128;
                keepalive_timeout 4s;
            }
            server {
                listen 80;
                location / {
                    proxy_http_version 1.1;
                    proxy_set_header Connection "";
                    proxy_pass http://app;
                }
            }
        }
        """;

    private static readonly NginxAuditConfig Backend5s = new(TimeSpan.FromSeconds(5), BackendMaxRequests: 1000, Concurrency: 50);

    [Fact]
    public void AGoodConfigurationHasNoFinding() => Assert.Empty(Audit(Good, Backend5s));

    [Fact]
    public void ProxyPassWithoutHttp11()
    {
        var finding = Assert.Single(Audit(Good.Replace("proxy_http_version 1.1;", ""), Backend5s));
        Assert.Equal(("http10-upstream", FindingSeverity.Error, 13), (finding.Code, finding.Severity, finding.Line));
        Assert.Contains("no proxy_http_version in scope", finding.Message);
        Assert.Contains("keepalive in upstream \"app\" (nginx.conf:2) is wasted", finding.Message);
    }

    [Fact]
    public void ProxyHttpVersionIsInheritedFromOuterLevels()
    {
        var text = Good.Replace("proxy_http_version 1.1;", "").Replace("listen 80;", "listen 80; proxy_http_version 1.1;");
        Assert.Empty(Audit(text, Backend5s));
    }

    [Fact]
    public void ConnectionHeaderNotCleared()
    {
        var finding = Assert.Single(Audit(Good.Replace("proxy_set_header Connection \"\";", ""), Backend5s));
        Assert.Equal(("connection-header", FindingSeverity.Error, 13), (finding.Code, finding.Severity, finding.Line));
        Assert.Contains("Connection: close", finding.Message);
    }

    [Fact]
    public void ProxySetHeaderAtALevelDiscardsTheParentsList()
    {
        var text = Good.Replace("proxy_set_header Connection \"\";", "proxy_set_header X-Id $request_id;")
            .Replace("listen 80;", "listen 80; proxy_set_header Connection \"\";");
        var finding = Assert.Single(Audit(text, Backend5s));
        Assert.Equal("connection-header", finding.Code);
        Assert.Contains("The proxy_set_header Connection at nginx.conf:9 does not apply here", finding.Message);
        Assert.Contains("(nginx.conf:12)", finding.Message);

        // With no proxy_set_header of its own, the location inherits the server's list.
        Assert.Empty(Audit(Good.Replace("proxy_set_header Connection \"\";", "").Replace("listen 80;", "listen 80; proxy_set_header Connection \"\";"), Backend5s));
    }

    [Fact]
    public void ConnectionFromAVariableIsWorthChecking()
    {
        var finding = Assert.Single(Audit(Good.Replace("Connection \"\"", "Connection $connection_upgrade"), Backend5s));
        Assert.Equal(("connection-header", FindingSeverity.Info, 12), (finding.Code, finding.Severity, finding.Line));
    }

    [Fact]
    public void UpstreamWithoutKeepalive()
    {
        var finding = Assert.Single(Audit(Good.Replace("keepalive 128;", ""), Backend5s));
        Assert.Equal(("no-upstream-keepalive", FindingSeverity.Warning, 2), (finding.Code, finding.Severity, finding.Line));
    }

    [Fact]
    public void ProxyPassToALiteralAddressCannotKeepAlive()
    {
        var finding = Assert.Single(Audit(Good.Replace("proxy_pass http://app;", "proxy_pass http://10.0.0.9:8000/;"), Backend5s));
        Assert.Equal(("literal-proxy-pass", FindingSeverity.Warning, 13), (finding.Code, finding.Severity, finding.Line));
        Assert.Contains("upstream 10.0.0.9 { server 10.0.0.9:8000; keepalive 64; }", finding.Fix);

        // Variables are resolved per request: nothing can be said.
        Assert.Empty(Audit(Good.Replace("proxy_pass http://app;", "proxy_pass http://$backend;"), Backend5s));
    }

    [Fact]
    public void KeepaliveTooSmall()
    {
        var finding = Assert.Single(Audit(Good.Replace("keepalive 128;", "keepalive 32;"), Backend5s));
        Assert.Equal(("keepalive-small", 5), (finding.Code, finding.Line));
        Assert.Contains("below twice the expected concurrency (50)", finding.Message);
        Assert.StartsWith("keepalive 100;", finding.Fix);

        // Without a known concurrency, the documentation's 32 (or less) is what is flagged.
        var unknown = new NginxAuditConfig(TimeSpan.FromSeconds(5), null, null);
        Assert.Contains(Audit(Good.Replace("keepalive 128;", "keepalive 32;"), unknown), f => f.Code == "keepalive-small");
        Assert.DoesNotContain(Audit(Good.Replace("keepalive 128;", "keepalive 33;"), unknown), f => f.Code == "keepalive-small");
    }

    [Fact]
    public void KeepaliveTimeoutNotBelowTheBackends()
    {
        var finding = Assert.Single(Audit(Good.Replace("keepalive_timeout 4s;", "keepalive_timeout 5s;"), Backend5s));
        Assert.Equal(("keepalive-timeout", FindingSeverity.Error, 6), (finding.Code, finding.Severity, finding.Line));
        Assert.StartsWith("keepalive_timeout 4s;", finding.Fix);

        // The default (60s) is reported on the upstream line; 2s gunicorn gets 1s.
        var gunicorn = new NginxAuditConfig(TimeSpan.FromSeconds(2), null, 50);
        var byDefault = Assert.Single(Audit(Good.Replace("keepalive_timeout 4s;", ""), gunicorn));
        Assert.Equal(("keepalive-timeout", 2), (byDefault.Code, byDefault.Line));
        Assert.Contains("the default keepalive_timeout (60s)", byDefault.Message);
        Assert.StartsWith("keepalive_timeout 1s;", byDefault.Fix);

        // Unknown backend: a reminder, not an error.
        var unknown = Assert.Single(Audit(Good, new NginxAuditConfig(null, null, 50)));
        Assert.Equal(("keepalive-timeout", FindingSeverity.Info), (unknown.Code, unknown.Severity));
    }

    [Fact]
    public void KeepaliveRequestsAboveTheBackendsMax()
    {
        var config = Backend5s with { BackendMaxRequests = 100 };
        var finding = Assert.Single(Audit(Good, config));
        Assert.Equal(("keepalive-requests", 2), (finding.Code, finding.Line));
        Assert.Contains("keepalive_requests 1000 (default)", finding.Message);
        Assert.Empty(Audit(Good.Replace("keepalive 128;", "keepalive 128; keepalive_requests 100;"), config));
    }

    [Fact]
    public void MaxFailsCanEjectEveryServer()
    {
        var finding = Assert.Single(Audit(Good.Replace(" max_fails=0", ""), Backend5s));
        Assert.Equal(("max-fails-eject-all", 2), (finding.Code, finding.Line));
        Assert.Contains("the defaults max_fails=1 fail_timeout=10s", finding.Message);

        // A backup server, one server that never fails, or a single server (nginx never ejects it) are safe.
        Assert.Empty(Audit(Good.Replace(" max_fails=0", "").Replace("keepalive 128;", "server 10.0.0.3:8000 backup; keepalive 128;"), Backend5s));
        Assert.Empty(Audit(Good.Replace("10.0.0.1:8000 max_fails=0", "10.0.0.1:8000"), Backend5s));
        Assert.Empty(Audit(Good.Replace(" max_fails=0", "").Replace("server 10.0.0.2:8000;", ""), Backend5s));
    }

    [Fact]
    public void MaxConnsWithoutQueue()
    {
        var finding = Assert.Single(Audit(Good.Replace("10.0.0.2:8000 max_fails=0", "10.0.0.2:8000 max_fails=0 max_conns=50"), Backend5s));
        Assert.Equal(("max-conns-no-queue", 4), (finding.Code, finding.Line));
        Assert.Empty(Audit(Good.Replace("10.0.0.2:8000 max_fails=0", "10.0.0.2:8000 max_fails=0 max_conns=50").Replace("keepalive 128;", "keepalive 128; queue 100;"), Backend5s));
    }

    [Theory]
    [InlineData("backlog=128", "Warning")]
    [InlineData("backlog=1024", "Info")]
    public void SmallListenBacklog(string backlog, string severity)
    {
        var finding = Assert.Single(Audit(Good.Replace("listen 80;", $"listen 80 {backlog};"), Backend5s));
        Assert.Equal(("listen-backlog", 9), (finding.Code, finding.Line));
        Assert.Equal(severity, finding.Severity.ToString());
        Assert.Empty(Audit(Good.Replace("listen 80;", "listen 80 backlog=4096;"), Backend5s));
    }

    [Fact]
    public void AuditsFragmentsAndIncludedFilesWithTheirOwnLines()
    {
        using var dir = new TempDirectory();
        var main = dir.Write("nginx.conf", "http {\n    proxy_http_version 1.1;\n    include sites/*.conf;\n}\n");
        var site = dir.Write("sites/app.conf", "upstream app { server 10.0.0.1:8000; keepalive 64; }\nserver {\n    location / { proxy_pass http://app; }\n}\n");
        var findings = ConfigAudit.Run(main, Backend5s).Findings;
        var connection = Assert.Single(findings, f => f.Code == "connection-header");
        Assert.Equal((site, 3), (connection.File, connection.Line));
        Assert.DoesNotContain(findings, f => f.Code == "http10-upstream");

        // The site file alone is a fragment (no http block): it is audited as one, and now lacks proxy_http_version.
        Assert.Contains(ConfigAudit.Run(site, Backend5s).Findings, f => f.Code == "http10-upstream" && f.File == site);
    }

    [Fact]
    public void AnUnparsableFileIsReportedNotThrown()
    {
        using var dir = new TempDirectory();
        var main = dir.Write("nginx.conf", "http {\n");
        var audit = ConfigAudit.Run(main, Backend5s);
        Assert.Empty(audit.Findings);
        Assert.Contains("nginx.conf:1: unexpected end of file", audit.Error);
    }
}
