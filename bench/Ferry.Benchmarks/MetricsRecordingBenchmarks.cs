using System.Diagnostics.Metrics;
using BenchmarkDotNet.Attributes;
using Ferry.Forwarding;
using Ferry.Metrics;
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
        _state = SampleRequests.State();
        _services = new ServiceCollection().AddMetrics().BuildServiceProvider();
        var meters = _services.GetRequiredService<IMeterFactory>();
        _collector = Aggregator switch
        {
            "ferry" => PrometheusCollector.ForServer(meters),
            "opentelemetry" => Sdk.CreateMeterProviderBuilder().AddMeter(FerryMetrics.MeterName).AddPrometheusExporter().Build(),
            _ => null,
        };
        _metrics = new FerryMetrics(meters, _state, null);
        _record = SampleRequests.Record(_state);
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
