using System.Diagnostics.Metrics;
using System.Net;
using BenchmarkDotNet.Attributes;
using Ferry.Configuration;
using Ferry.Forwarding;
using Ferry.Hosting;
using Ferry.Metrics;
using Ferry.Model;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using OpenTelemetry;
using OpenTelemetry.Metrics;

namespace Ferry.Benchmarks;

// What recording one request's metrics costs (FerryMetrics.Record: the request counter and duration, one attempt with
// its upstream timings) with the measurements aggregated by Ferry's PrometheusCollector, or by the OpenTelemetry SDK
// with its Prometheus exporter (OpenTelemetry.Exporter.Prometheus.AspNetCore), the candidate library of issue 16.
// Nothing listening is the floor. docs/decisions/2026-12-03-prometheus-exporter.md.
[MemoryDiagnoser]
public class MetricsRecordingBenchmarks
{
    private ServiceProvider _services = null!;
    private ProxyStateHolder _state = null!;
    private FerryMetrics _metrics = null!;
    private IDisposable? _collector;
    private RequestRecord _record = null!;

    [Params("none", "ferry", "opentelemetry")]
    public string Aggregator { get; set; } = "ferry";

    [GlobalSetup]
    public void Setup()
    {
        var settings = new Dictionary<string, string?>
        {
            ["Listeners:main:Address"] = "127.0.0.1:0",
            ["Routes:r:ClusterId"] = "c",
            ["Clusters:c:Destinations:a:Address"] = "http://127.0.0.1:8080",
        };
        var config = FerryConfigLoader.Load(new ConfigurationBuilder().AddInMemoryCollection(settings).Build()).Config!;
        _state = new ProxyStateHolder(ProxyState.Build(config, FerryServer.PoolFactory(TimeProvider.System), TimeProvider.System));
        _services = new ServiceCollection().AddMetrics().BuildServiceProvider();
        var meters = _services.GetRequiredService<IMeterFactory>();
        _collector = Aggregator switch
        {
            "ferry" => PrometheusCollector.ForServer(meters),
            "opentelemetry" => Sdk.CreateMeterProviderBuilder().AddMeter(FerryMetrics.MeterName).AddPrometheusExporter().Build(),
            _ => null,
        };
        _metrics = new FerryMetrics(meters, _state, null);
        _record = new RequestRecord
        {
            StartTime = DateTimeOffset.UtcNow,
            Method = "GET",
            Target = "/",
            Protocol = "HTTP/1.1",
            ClientAddress = IPAddress.Loopback.ToString(),
            Host = "127.0.0.1:8000",
            RouteId = "r",
            ClusterId = "c",
            Status = 200,
            BytesOut = 6,
            Duration = TimeSpan.FromMicroseconds(350),
        };
        _record.Attempts.Add(new AttemptRecord
        {
            Destination = _state.Current.Clusters["c"].Destinations[0],
            Status = 200,
            HeadTime = TimeSpan.FromMicroseconds(300),
            ResponseTime = TimeSpan.FromMicroseconds(320),
            Reused = true,
            IdleTime = TimeSpan.FromMicroseconds(50),
            ConnectionRequests = 12,
        });
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _collector?.Dispose();
        _services.Dispose();
        _state.Current.DisposeAsync().AsTask().GetAwaiter().GetResult();
    }

    [Benchmark]
    public void RecordRequest() => _metrics.Record(_record);
}
