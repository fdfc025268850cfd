using System.Net;
using System.Net.Http.Headers;
using System.Text.Json;
using Ferry.Configuration;
using Ferry.Errors;
using Ferry.Forwarding;
using Ferry.FunctionalTests.Support;
using Ferry.Lab;
using Ferry.Metrics;
using Microsoft.Extensions.Configuration;

namespace Ferry.FunctionalTests.Observability;

public sealed class AdminObservabilityTests : IAsyncLifetime
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);
    private readonly string _directory = Directory.CreateTempSubdirectory("ferry-obs-").FullName;
    private LabUpstream _upstream = null!;
    private ProxyHarness _proxy = null!;

    public async Task InitializeAsync()
    {
        _upstream = LabUpstream.Start(new LabUpstreamOptions { Name = "a" });
        _proxy = await ProxyHarness.StartAsync(_upstream);
    }

    public async Task DisposeAsync()
    {
        await _proxy.DisposeAsync();
        Directory.Delete(_directory, recursive: true);
    }

    private FerryConfig Config(params (string Key, string Value)[] extra)
    {
        var settings = ProxyHarness.Settings(("a", _upstream.Uri));
        settings["AccessLog:Path"] = Path.Combine(_directory, "access.log");
        foreach (var (key, value) in extra)
        {
            settings[key] = value;
        }
        var result = FerryConfigLoader.Load(new ConfigurationBuilder().AddInMemoryCollection(settings).Build());
        Assert.True(result.IsValid, string.Join("\n", result.Errors));
        return result.Config!;
    }

    private RequestRecord Record(int status, ProxyError error = ProxyError.None)
    {
        var record = new RequestRecord
        {
            StartTime = DateTimeOffset.UtcNow,
            Method = "GET",
            Target = "/x",
            Protocol = "HTTP/1.1",
            ClientAddress = "127.0.0.1",
            RouteId = "all",
            ClusterId = "c",
            Status = status,
            Error = error,
            Duration = TimeSpan.FromMilliseconds(2),
        };
        record.Attempts.Add(new AttemptRecord { Destination = _proxy.Destination("a"), Status = status, ConnectTime = TimeSpan.FromMilliseconds(1), Error = error });
        return record;
    }

    [Fact]
    public async Task Metrics_ExposeCompletedRequests_PoolsAndKestrel_InPrometheusText()
    {
        await using var host = await ObservabilityHost.StartAsync(Config(), _proxy.Server.State);
        host.Telemetry.Complete(Record(200));
        host.Telemetry.Complete(Record(502, ProxyError.ConnectionRefused));

        var response = await host.Client.GetAsync("/metrics").WaitAsync(Bound);
        var text = await response.Content.ReadAsStringAsync();

        Assert.Equal("text/plain; version=0.0.4; charset=utf-8", response.Content.Headers.ContentType!.ToString());
        Assert.Contains("ferry_requests_total{ferry_cluster=\"c\",ferry_route=\"all\",ferry_status_class=\"2xx\"} 1\n", text);
        Assert.Contains("ferry_requests_total{error_type=\"connection_refused\",ferry_cluster=\"c\",ferry_route=\"all\",ferry_status_class=\"5xx\"} 1\n", text);
        Assert.Contains("ferry_upstream_connections{ferry_cluster=\"c\",ferry_destination=\"a\",http_connection_state=\"idle\"} 0\n", text);
        Assert.Contains("# TYPE dotnet_gc_collections_total counter\n", text);
        // The admin listener's own connection is counted by its Kestrel meter.
        Assert.Contains("kestrel_active_connections{", text);

        // ASP.NET Core records a request's duration just after its response: the earlier scrape is in the next one.
        var deadline = DateTime.UtcNow + Bound;
        while (!text.Contains("# TYPE http_server_request_duration_seconds histogram\n", StringComparison.Ordinal))
        {
            Assert.True(DateTime.UtcNow < deadline, "http.server.request.duration never appeared");
            text = await host.Client.GetStringAsync("/metrics").WaitAsync(Bound);
        }
    }

    [Fact]
    public async Task Stats_CountRequestsAnd5xxByCause()
    {
        await using var host = await ObservabilityHost.StartAsync(Config(), _proxy.Server.State);
        host.Telemetry.Complete(Record(200));
        host.Telemetry.Complete(Record(502, ProxyError.ConnectionTerminated));
        host.Telemetry.Complete(Record(503));

        using var stats = JsonDocument.Parse(await host.Client.GetStringAsync("/stats?seconds=60").WaitAsync(Bound));

        Assert.Equal(60, stats.RootElement.GetProperty("requests").GetArrayLength());
        Assert.Equal(3, stats.RootElement.GetProperty("requests").EnumerateArray().Sum(e => e.GetInt32()));
        var errors = stats.RootElement.GetProperty("errors");
        Assert.Equal(1, errors.GetProperty("connection_terminated").EnumerateArray().Sum(e => e.GetInt32()));
        Assert.Equal(1, errors.GetProperty(RequestStats.DestinationCause).EnumerateArray().Sum(e => e.GetInt32()));
    }

    [Fact]
    public async Task StatusPage_AndStatus_AreServed()
    {
        await using var host = await ObservabilityHost.StartAsync(Config(), _proxy.Server.State);

        var page = await host.Client.GetAsync("/").WaitAsync(Bound);
        using var status = JsonDocument.Parse(await host.Client.GetStringAsync("/status").WaitAsync(Bound));

        Assert.Equal("text/html; charset=utf-8", page.Content.Headers.ContentType!.ToString());
        Assert.Contains("<svg id=\"chart\"", await page.Content.ReadAsStringAsync());
        var destination = status.RootElement.GetProperty("clusters")[0].GetProperty("destinations")[0];
        Assert.Equal(0, destination.GetProperty("queued").GetInt32());
        Assert.Equal(0, destination.GetProperty("pool").GetProperty("reuseRatio").GetDouble());
        // The adaptive limit is on by default, and starts above zero.
        var limit = destination.GetProperty("concurrencyLimit");
        Assert.True(limit.GetProperty("adaptive").GetBoolean());
        Assert.True(limit.GetProperty("limit").GetInt32() > 0);
        Assert.Equal(0, limit.GetProperty("inFlight").GetInt32());
        Assert.Equal(0, limit.GetProperty("slowConnects").GetInt64());
    }

    [Fact]
    public async Task AccessLog_WritesOneLinePerCompletedRequest()
    {
        var path = Path.Combine(_directory, "access.log");
        await using (var host = await ObservabilityHost.StartAsync(Config(("AccessLog:Format", "combined")), _proxy.Server.State))
        {
            host.Telemetry.Complete(Record(200));
            host.Telemetry.Complete(Record(502, ProxyError.ConnectionRefused));
        }

        var lines = File.ReadAllLines(path);

        Assert.Equal(2, lines.Length);
        Assert.Contains("\"GET /x HTTP/1.1\" 200 0", lines[0]);
        Assert.Contains("error=connection_refused", lines[1]);
    }

    [Fact]
    public async Task Token_ProtectsEverythingButHealthz()
    {
        await using var host = await ObservabilityHost.StartAsync(Config(("Admin:Token", "t0ken")), _proxy.Server.State);
        var client = host.Client;

        var healthz = await client.GetAsync("/healthz").WaitAsync(Bound);
        var anonymous = await client.GetAsync("/metrics").WaitAsync(Bound);
        var wrong = await Send(client, "/status", "t0kem");
        var right = await Send(client, "/status", "t0ken");
        var page = await client.GetAsync("/?access_token=t0ken").WaitAsync(Bound);
        var stats = await client.GetAsync("/stats?access_token=t0ken").WaitAsync(Bound);

        Assert.Equal(HttpStatusCode.OK, healthz.StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, anonymous.StatusCode);
        Assert.Equal("Bearer", anonymous.Headers.WwwAuthenticate.Single().Scheme);
        Assert.Equal(HttpStatusCode.Unauthorized, wrong.StatusCode);
        Assert.Equal(HttpStatusCode.OK, right.StatusCode);
        Assert.Equal(HttpStatusCode.OK, page.StatusCode);
        Assert.Equal(HttpStatusCode.OK, stats.StatusCode);
    }

    private static Task<HttpResponseMessage> Send(HttpClient client, string path, string token)
    {
        var request = new HttpRequestMessage(HttpMethod.Get, path);
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
        return client.SendAsync(request).WaitAsync(Bound);
    }
}
