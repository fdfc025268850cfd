using System.Net;
using Ferry.Configuration;
using Ferry.Doctor;

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
        Assert.Equal(["example.com=/healthz", "example.com/api/", "example.com/"], config.Routes.Select(r => r.RouteId));
        Assert.Equal(["example.com", "example.org", "*.example.org"], routes["example.com/api/"].Match.Hosts);
        Assert.Equal("/api", routes["example.com/api/"].Match.PathPrefix);
        Assert.Equal("/api", routes["example.com/api/"].PathRemovePrefix);
        Assert.Equal("/healthz", routes["example.com=/healthz"].Match.Path);
        Assert.Null(routes["example.com=/healthz"].PathRemovePrefix);
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
        Noted(site, 24, "replaces the path prefix \"/v1/\" with \"/v2/\"");
        Noted(site, 28, "\"proxy_set_header X-Id $request_id\" not translated");
        Noted(site, 37, "variables are resolved per request");
        Noted(site, 40, "Ferry speaks plain HTTP");
        Noted(site, 1, "Ferry routes match on every listener");
    }

    [Theory]
    [InlineData("location /api/ { proxy_pass http://b/; }", "/api", "/api")]
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
        Assert.Equal(removePrefix, route.PathRemovePrefix);
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

    private static FerryConfig LoadValid(string json)
    {
        using var dir = new TempDirectory();
        var result = FerryConfigLoader.Load(FerryConfigLoader.Build(dir.Write("ferry.json", json), [], new Dictionary<string, string>()));
        Assert.Empty(result.Errors);
        return result.Config!;
    }
}
