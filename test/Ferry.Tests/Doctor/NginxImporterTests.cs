using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Ferry.Configuration;
using Ferry.Doctor;
using Ferry.Tests.Support;

namespace Ferry.Tests.Doctor;

public sealed class NginxImporterTests
{
    private const string Main = """
        events {}
        http {
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header Connection "";
            proxy_connect_timeout 2s;
            proxy_read_timeout 1m30s;

            upstream api {
                least_conn;
                server 10.0.0.11:8000 weight=3 max_fails=0;
                server api-2.internal:8000;
                server 10.0.0.13 backup;
                server 10.0.0.14:8000 down;
                server unix:/run/api.sock;
                keepalive 64;
                keepalive_timeout 4s;
                keepalive_requests 500;
                keepalive_time 30m;
            }

            include sites/*.conf;
        }
        """;

    private const string Site = """
        server {
            listen 80;
            listen 127.0.0.1:80;
            listen 443 ssl;
            server_name example.com .example.org;

            location /api/ {
                proxy_pass http://api/;
            }

            location = /healthz {
                proxy_pass http://api;
            }

            location /static {
                root /srv/www;
            }

            location ~ \.php$ {
                proxy_pass http://api;
            }

            location /v1/ {
                proxy_pass http://api/v2/;
            }

            location / {
                proxy_set_header X-Id $request_id;
                proxy_send_timeout 5s;
                proxy_pass http://10.0.0.20:8080;
            }
        }

        server {
            listen 8080;
            location / {
                proxy_pass http://$upstream_from_map;
            }
            location /other {
                proxy_pass https://api;
            }
        }
        """;

    [Fact]
    public void ImportsTheProxyingSubsetAndLoadsWithoutErrorsOrWarnings()
    {
        using var dir = new TempDirectory();
        var main = dir.Write("nginx.conf", Main);
        dir.Write("sites/example.conf", Site);
        var (directives, _) = NginxConfigParser.ParseFile(main);
        var import = NginxImporter.Import(directives, main);

        var output = dir.Write("ferry.json", import.Json);
        var result = FerryConfigLoader.Load(FerryConfigLoader.Build(output, [], new Dictionary<string, string>()));
        Assert.Empty(result.Errors);
        Assert.Empty(result.Warnings);
        var config = result.Config!;

        // listen 80 and 127.0.0.1:80 share nginx's wildcard socket; the ssl listener is not translated.
        Assert.Equal([new IPEndPoint(IPAddress.Any, 80), new IPEndPoint(IPAddress.Any, 8080)], config.Listeners.Select(l => l.EndPoint));

        var routes = config.Routes.ToDictionary(r => r.RouteId);
        Assert.Equal(["example.com=/healthz", "example.com/api/", "example.com/v1/", "example.com/"], config.Routes.Select(r => r.RouteId));
        Assert.Equal(["example.com", "example.org", "*.example.org"], routes["example.com/api/"].Match.Hosts);
        Assert.Equal("/api", routes["example.com/api/"].Match.PathPrefix);
        Assert.Equal([new PathRule(PathRuleKind.RemovePrefix, "/api")], routes["example.com/api/"].Transforms.Path);
        Assert.Equal(
            [new PathRule(PathRuleKind.RemovePrefix, "/v1"), new PathRule(PathRuleKind.Prefix, "/v2")],
            routes["example.com/v1/"].Transforms.Path);
        Assert.Equal("/healthz", routes["example.com=/healthz"].Match.Path);
        Assert.Same(TransformsConfig.None, routes["example.com=/healthz"].Transforms);
        Assert.Equal("api", routes["example.com/api/"].ClusterId);
        Assert.Equal("10.0.0.20-8080", routes["example.com/"].ClusterId);

        var api = config.Clusters["api"];
        Assert.Equal("LeastRequests", api.LoadBalancingPolicy);
        Assert.Equal(
            [("http://10.0.0.11:8000/", 3, false), ("http://api-2.internal:8000/", 1, false), ("http://10.0.0.13/", 1, true)],
            api.Destinations.Select(d => (d.Address.ToString(), d.Weight, d.Backup)));
        Assert.Equal(TimeSpan.FromSeconds(4), api.KeepAlive.IdleTimeout);
        Assert.Equal(500, api.KeepAlive.MaxRequests);
        Assert.Equal(TimeSpan.FromMinutes(30), api.KeepAlive.MaxLifetime);
        Assert.Equal(KeepAliveConfig.Default.MaxIdle, api.KeepAlive.MaxIdle);
        Assert.Equal(TimeSpan.FromSeconds(2), api.Timeouts.Connect);
        Assert.Equal(TimeSpan.FromSeconds(90), api.Timeouts.ResponseHead);
        Assert.Equal(TimeSpan.FromSeconds(90), api.Timeouts.BodyInactivity);
        Assert.Equal(TimeoutsConfig.Default.SendRequest, api.Timeouts.SendRequest);
        Assert.True(api.Forwarding.PreserveHost);

        // The "/" location has its own proxy_set_header, which discards the inherited Host $host: nginx then sends
        // the upstream's name, as PreserveHost=false does.
        var literal = config.Clusters["10.0.0.20-8080"];
        Assert.False(literal.Forwarding.PreserveHost);
        Assert.Equal(TimeSpan.FromSeconds(5), literal.Timeouts.SendRequest);
        Assert.Equal("http://10.0.0.20:8080/", Assert.Single(literal.Destinations).Address.ToString());
    }

    [Fact]
    public void ListsWhatIsNotTranslatedWithFileAndLine()
    {
        using var dir = new TempDirectory();
        var main = dir.Write("nginx.conf", Main);
        var site = dir.Write("sites/example.conf", Site);
        var (directives, _) = NginxConfigParser.ParseFile(main);
        var notes = NginxImporter.Import(directives, main).Notes;

        void Noted(string file, int line, string text) =>
            Assert.Contains(notes, n => n.File == file && n.Line == line && n.Message.Contains(text, StringComparison.Ordinal));

        Noted(main, 11, "max_fails=0 not translated");
        Noted(main, 14, "marked down");
        Noted(main, 15, "unix socket destinations");
        Noted(main, 16, "\"keepalive 64\" not translated on purpose");
        Noted(site, 4, "TLS");
        Noted(site, 16, "\"root\" in a location not translated");
        Noted(site, 19, "regular expression");
        Noted(site, 28, "\"proxy_set_header X-Id $request_id\" not translated");
        Noted(site, 37, "variables are resolved per request");
        Noted(site, 40, "upstream \"api\" is also reached with http://");
        Noted(site, 1, "Ferry routes match on every listener");
    }

    [Theory]
    [InlineData("location /api/ { proxy_pass http://b/; }", "/api", "/api")]
    [InlineData("location /api/ { proxy_pass http://b/v2/; }", "/api", "/api")]
    [InlineData("location /api/ { proxy_pass http://b/api/; }", "/api", null)]
    [InlineData("location /api { proxy_pass http://b; }", "/api", null)]
    [InlineData("location / { proxy_pass http://b/; }", "/", null)]
    [InlineData("location ^~ /img/ { proxy_pass http://b; }", "/img", null)]
    public void ProxyPassUriBecomesPathRemovePrefixOnlyWhenEquivalent(string location, string prefix, string? removePrefix)
    {
        var text = $"upstream b {{ server 10.0.0.1:80; }}\nserver {{ listen 127.0.0.1:8080; {location} }}\n";
        var import = NginxImporter.Import(NginxConfigParser.ParseText(text, "x.conf", "/nonexistent"), "x.conf");
        var route = Assert.Single(LoadValid(import.Json).Routes);
        Assert.Equal(prefix, route.Match.PathPrefix);
        Assert.Equal(removePrefix, route.Transforms.Path.FirstOrDefault(r => r.Kind == PathRuleKind.RemovePrefix)?.Value);
    }

    [Fact]
    public void AnUntranslatablePathRewriteCreatesNoRoute()
    {
        // "/api" replaced by "/" would send "/api/x" as "//x": nothing in Ferry does that.
        var text = "upstream b { server 10.0.0.1:80; }\nserver { location /api { proxy_pass http://b/; } }\n";
        var import = NginxImporter.Import(NginxConfigParser.ParseText(text, "x.conf", "/nonexistent"), "x.conf");
        Assert.Empty(LoadValid(import.Json).Routes);
        Assert.Contains(import.Notes, n => n.Line == 2 && n.Message.Contains("Route not translated"));
    }

    private static (NginxImport Import, RouteConfig Route) ImportOneRoute(string text)
    {
        var import = NginxImporter.Import(NginxConfigParser.ParseText(text, "x.conf", "/nonexistent"), "x.conf");
        return (import, Assert.Single(LoadValid(import.Json).Routes));
    }

    [Fact]
    public void ProxyPassUriReplacingThePrefix_BecomesRemoveThenAddPrefix()
    {
        var (_, route) = ImportOneRoute("server { location /v1/ { proxy_pass http://10.0.0.1/api/v2/; } }");

        Assert.Equal([new PathRule(PathRuleKind.RemovePrefix, "/v1"), new PathRule(PathRuleKind.Prefix, "/api/v2")], route.Transforms.Path);
    }

    [Fact]
    public void ProxyPassUriOfAnExactLocation_BecomesPathSet()
    {
        var (_, route) = ImportOneRoute("server { location = /login { proxy_pass http://10.0.0.1/auth/login; } }");

        Assert.Equal("/login", route.Match.Path);
        Assert.Equal([new PathRule(PathRuleKind.Set, "/auth/login")], route.Transforms.Path);
    }

    [Theory]
    [InlineData("rewrite ^/old/(.*)$ /new/$1 break;", "/old", "/new")]
    [InlineData("rewrite ^/old/(.*) /new/v2/$1 break;", "/old", "/new/v2")]
    [InlineData("rewrite ^/old/(.*)$ /$1 break;", "/old", null)]
    [InlineData("rewrite ^/a\\.b/(.*)$ /c/$1 break;", "/a.b", "/c")]
    public void PrefixRewriteWithBreak_BecomesPathRules(string rewrite, string remove, string? prefix)
    {
        // proxy_pass's URI part is ignored by nginx after a rewrite ... break.
        var (import, route) = ImportOneRoute($"server {{ location /old/ {{ {rewrite} proxy_pass http://10.0.0.1/ignored/; }} }}");

        PathRule[] expected = prefix is null
            ? [new(PathRuleKind.RemovePrefix, remove)]
            : [new(PathRuleKind.RemovePrefix, remove), new(PathRuleKind.Prefix, prefix)];
        Assert.Equal(expected, route.Transforms.Path);
        Assert.Empty(import.Notes);
    }

    [Theory]
    [InlineData("rewrite ^/old/(.*)$ /new/$1 last;")]
    [InlineData("rewrite ^/old/(.*)$ /new/$1;")]
    [InlineData("rewrite ^/old/(\\d+)$ /new/$1 break;")]
    [InlineData("rewrite ^/old/(.*)$ /new?x=$1 break;")]
    [InlineData("rewrite ^/old/(.*)$ http://other/$1 break;")]
    public void OtherRewrites_AreNotedAndTheRouteForwardsUnchanged(string rewrite)
    {
        var (import, route) = ImportOneRoute($"server {{ location /old/ {{ {rewrite} proxy_pass http://10.0.0.1; }} }}");

        Assert.Empty(route.Transforms.Path);
        var note = Assert.Single(import.Notes);
        Assert.Contains("not translated: Ferry expresses a single \"rewrite ^/old/(.*)$ /new/$1 break;\"", note.Message);
    }

    [Fact]
    public void ProxySetHeader_BecomesRequestHeaderRules_InheritedOnlyByLevelsWithoutAny()
    {
        var (import, route) = ImportOneRoute("""
            server {
                proxy_set_header X-Server 1;
                location / {
                    proxy_set_header Host $host;
                    proxy_set_header X-Env prod;
                    proxy_set_header Cookie "";
                    proxy_set_header X-Id $request_id;
                    proxy_set_header Content-Length 0;
                    proxy_pass http://10.0.0.1;
                }
            }
            """);

        Assert.Equal(
            [new HeaderRule("X-Env", HeaderAction.Set, "prod"), new HeaderRule("Cookie", HeaderAction.Remove, "")],
            route.Transforms.RequestHeaders);
        Assert.Equal(
            ["\"proxy_set_header X-Id $request_id\" not translated: variables are resolved per request",
             "\"proxy_set_header Content-Length 0\" not translated: Ferry writes this header itself"],
            import.Notes.Select(n => n.Message));
    }

    [Fact]
    public void ProxyHideHeaderAndAddHeader_BecomeResponseHeaderRules()
    {
        var (import, route) = ImportOneRoute("""
            server {
                add_header X-Frame-Options DENY;
                location / {
                    proxy_hide_header Server;
                    add_header Strict-Transport-Security "max-age=31536000" always;
                    add_header Cache-Control no-store;
                    add_header X-Request $request_id;
                    proxy_pass http://10.0.0.1;
                }
            }
            """);

        Assert.Equal(
            [new ResponseHeaderRule("Server", HeaderAction.Remove, "", ResponseCondition.Always),
             new ResponseHeaderRule("Strict-Transport-Security", HeaderAction.Append, "max-age=31536000", ResponseCondition.Always),
             new ResponseHeaderRule("Cache-Control", HeaderAction.Append, "no-store", ResponseCondition.Success)],
            route.Transforms.ResponseHeaders);
        Assert.Equal(["\"add_header X-Request $request_id\" not translated: variables are resolved per request"], import.Notes.Select(n => n.Message));
    }

    [Fact]
    public void AddHeaderOfTheServer_IsInheritedByALocationWithoutAny()
    {
        var (_, route) = ImportOneRoute("server { add_header X-Frame-Options DENY; location / { proxy_pass http://10.0.0.1; } }");

        Assert.Equal([new ResponseHeaderRule("X-Frame-Options", HeaderAction.Append, "DENY", ResponseCondition.Success)], route.Transforms.ResponseHeaders);
    }

    [Theory]
    [InlineData("client_max_body_size 10m;", "", 10L * 1024 * 1024)]
    [InlineData("client_max_body_size 10m;", "client_max_body_size 0;", 0)]
    [InlineData("", "client_max_body_size 512K;", 512 * 1024)]
    [InlineData("", "", RequestLimitsConfig.DefaultMaxRequestBodySize)]
    public void ClientMaxBodySize_BecomesMaxRequestBodySize(string server, string location, long expected)
    {
        var (import, route) = ImportOneRoute($"server {{ {server} location / {{ {location} proxy_pass http://10.0.0.1; }} }}");

        Assert.Equal(expected, route.MaxRequestBodySize);
        Assert.Empty(import.Notes);
    }

    [Fact]
    public void ClientMaxBodySizeFerryCannotRead_IsNoted()
    {
        var (import, route) = ImportOneRoute("server { location / { client_max_body_size 1.5m; proxy_pass http://10.0.0.1; } }");

        Assert.Equal(RequestLimitsConfig.DefaultMaxRequestBodySize, route.MaxRequestBodySize);
        Assert.Contains("\"client_max_body_size 1.5m\" not translated", Assert.Single(import.Notes).Message);
    }

    [Fact]
    public void ProxyPassHttps_ToAnUpstream_BecomesHttpsDestinations_WithTheProxySslSettings()
    {
        using var dir = new TempDirectory();
        using var key = ECDsa.Create();
        using var ca = new CertificateRequest("CN=ca", key, HashAlgorithmName.SHA256).CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(1));
        var caFile = dir.Write("ca.pem", ca.ExportCertificatePem());
        var import = NginxImporter.Import(NginxConfigParser.ParseText($$"""
            upstream api { server 10.0.0.1:8443; server 10.0.0.2; }
            server {
                location / {
                    proxy_ssl_verify on;
                    proxy_ssl_trusted_certificate {{caFile}};
                    proxy_ssl_protocols TLSv1.2;
                    proxy_pass https://api;
                }
            }
            """, "x.conf", "/nonexistent"), "x.conf");

        var cluster = LoadValid(import.Json).Clusters["api"];

        // An upstream block's servers default to port 80 whatever the scheme, as in nginx.
        Assert.Equal(["https://10.0.0.1:8443/", "https://10.0.0.2:80/"], cluster.Destinations.Select(d => d.Address.ToString()));
        Assert.Equal(ca.Thumbprint, Assert.Single(cluster.Tls.TrustedCertificates!).Thumbprint);
        Assert.Equal("api", cluster.Tls.ServerName);
        Assert.Contains("\"proxy_ssl_protocols TLSv1.2\" not translated", Assert.Single(import.Notes).Message);
    }

    [Fact]
    public void ProxyPassHttps_WithoutProxySslVerify_IsNoted_BecauseFerryChecksTheCertificate()
    {
        var (import, _) = ImportOneRoute("server { location / { proxy_pass https://api.example; } }");
        var config = LoadValid(import.Json);

        var destination = Assert.Single(config.Clusters["api.example-443-tls"].Destinations);
        Assert.Equal("https://api.example/", destination.Address.ToString());
        Assert.Same(TlsConfig.Default, config.Clusters["api.example-443-tls"].Tls);
        Assert.Contains("proxy_ssl_verify is off", Assert.Single(import.Notes).Message);
    }

    [Fact]
    public void AnUpstreamReachedWithBothSchemes_KeepsTheFirst_AndNotesTheOther()
    {
        var import = NginxImporter.Import(NginxConfigParser.ParseText("""
            upstream api { server 10.0.0.1:8000; }
            server {
                location /a/ { proxy_pass http://api; }
                location /b/ { proxy_pass https://api; }
            }
            """, "x.conf", "/nonexistent"), "x.conf");

        var route = Assert.Single(LoadValid(import.Json).Routes);
        Assert.Equal("/a", route.Match.PathPrefix);
        Assert.Contains(import.Notes, n => n.Message.Contains("is also reached with http://", StringComparison.Ordinal));
    }

    [Theory]
    // rate=10r/s burst=20 nodelay: 21 requests at once, then one every 100 ms.
    [InlineData("rate=10r/s", "burst=20 nodelay", 21, 1, 100, 0)]
    // Without nodelay nginx delays the burst: one at once, 20 waiting for their token.
    [InlineData("rate=10r/s", "burst=20", 1, 1, 100, 20)]
    [InlineData("rate=10r/s", "burst=20 delay=5", 6, 1, 100, 15)]
    [InlineData("rate=10r/s", "", 1, 1, 100, 0)]
    [InlineData("rate=30r/m", "burst=5 nodelay", 6, 1, 2000, 0)]
    [InlineData("rate=15r/s", "burst=3 nodelay", 4, 2, 133.333, 0)]
    [InlineData("rate=100r/s", "nodelay", 1, 10, 100, 0)]
    public void LimitReq_BecomesATokenBucket(string rate, string parameters, int tokenLimit, int tokensPerPeriod, double periodMs, int queueLimit)
    {
        var (import, route) = ImportOneRoute($$"""
            limit_req_zone $binary_remote_addr zone=perip:10m {{rate}};
            limit_req_status 429;
            server { location / { limit_req zone=perip {{parameters}}; proxy_pass http://10.0.0.1; } }
            """);

        var config = LoadValid(import.Json);
        var policy = config.RateLimiterPolicies["perip"];
        Assert.Equal("perip", route.RateLimiterPolicy);
        Assert.Equal((RateLimiterKind.TokenBucket, tokenLimit, tokensPerPeriod, queueLimit, RateLimiterKey.ClientIp),
            (policy.Kind, policy.Limit, policy.TokensPerPeriod, policy.QueueLimit, policy.Key));
        Assert.Equal(periodMs, policy.Period.TotalMilliseconds, precision: 3);
        Assert.Equal(RateLimiterPolicyConfig.DefaultMaxPartitions, policy.MaxPartitions); // 10m holds more states than Ferry's default
        Assert.Empty(import.Notes);
    }

    [Fact]
    public void LimitReqZoneKeyedByAHeader_IsAHeaderKey_AndTheDefault503IsNoted()
    {
        var (import, route) = ImportOneRoute("""
            limit_req_zone $http_x_api_key zone=keys:1m rate=5r/s;
            server { limit_req zone=keys burst=10 nodelay; location /api/ { proxy_pass http://10.0.0.1; } }
            """);

        var policy = LoadValid(import.Json).RateLimiterPolicies["keys"];
        Assert.Equal("keys", route.RateLimiterPolicy); // inherited from the server, as nginx does
        Assert.Equal((RateLimiterKey.Header, "X-Api-Key", 16_000, 11, 1, 200.0),
            (policy.Key, policy.HeaderName, policy.MaxPartitions, policy.Limit, policy.TokensPerPeriod, policy.Period.TotalMilliseconds));
        Assert.Contains("without limit_req_status nginx refuses with 503; Ferry refuses with 429", Assert.Single(import.Notes).Message);
    }

    [Fact]
    public void LimitConn_BecomesAConcurrencyLimit()
    {
        var (import, route) = ImportOneRoute("""
            limit_conn_zone $binary_remote_addr zone=addr:10m;
            limit_conn_status 429;
            server { location / { limit_conn addr 4; proxy_pass http://10.0.0.1; } }
            """);

        var policy = LoadValid(import.Json).RateLimiterPolicies["addr"];
        Assert.Equal("addr", route.RateLimiterPolicy);
        Assert.Equal((RateLimiterKind.Concurrency, 4, RateLimiterKey.ClientIp, 0), (policy.Kind, policy.Limit, policy.Key, policy.QueueLimit));
        Assert.Empty(import.Notes);
    }

    [Fact]
    public void SameZoneWithOtherParameters_GetsItsOwnPolicy_AndWhatFerryCannotSayIsNoted()
    {
        var import = NginxImporter.Import(NginxConfigParser.ParseText("""
            limit_req_zone $binary_remote_addr zone=one:10m rate=1r/s;
            limit_req_zone $request_uri zone=uri:10m rate=1r/s;
            limit_conn_zone $binary_remote_addr zone=addr:10m;
            limit_req_status 503;
            server {
                location /a/ { limit_req zone=one burst=5; proxy_pass http://10.0.0.1; }
                location /b/ { limit_req zone=one burst=5; proxy_pass http://10.0.0.1; }
                location /c/ { limit_req zone=one burst=9 nodelay; limit_conn addr 2; proxy_pass http://10.0.0.1; }
                location /d/ { limit_req zone=uri; proxy_pass http://10.0.0.1; }
                location /e/ { limit_req zone=missing; proxy_pass http://10.0.0.1; }
            }
            """, "x.conf", "/nonexistent"), "x.conf");

        var config = LoadValid(import.Json);
        var policies = config.Routes.ToDictionary(r => r.Match.PathPrefix!, r => r.RateLimiterPolicy);
        Assert.Equal("one", policies["/a"]);
        Assert.Equal("one", policies["/b"]);
        Assert.Equal("one-2", policies["/c"]);
        Assert.Null(policies["/d"]);
        Assert.Null(policies["/e"]);
        Assert.Equal(["one", "one-2"], config.RateLimiterPolicies.Keys.Order());
        var notes = string.Join("\n", import.Notes.Select(n => n.Message));
        Assert.Contains("\"limit_req_status 503\" not translated: Ferry refuses with 429", notes);
        Assert.Contains("zone \"one\" is also used with other parameters", notes);
        Assert.Contains("\"limit_conn addr 2\" not translated: a Ferry route has one rate limiter policy", notes);
        Assert.Contains("\"limit_req_zone $request_uri zone=uri:10m rate=1r/s\" not translated: Ferry partitions by the client address", notes);
        Assert.Contains("\"limit_req zone=missing\" not translated: no limit_req_zone in this http block defines the zone", notes);
    }

    private static FerryConfig LoadValid(string json)
    {
        using var dir = new TempDirectory();
        var result = FerryConfigLoader.Load(FerryConfigLoader.Build(dir.Write("ferry.json", json), [], new Dictionary<string, string>()));
        Assert.Empty(result.Errors);
        return result.Config!;
    }
}
