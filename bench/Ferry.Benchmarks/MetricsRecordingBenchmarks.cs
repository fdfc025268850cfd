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
// Nothing listening is the floor. docs/decisions/2026-12-03-prometheus-exporter.md. RecordRequestOnTwoThreads records
// the same series from two threads at once, as two cores serving the same route do
// (docs/decisions/2026-12-03-metrics-recording.md).
[MemoryDiagnoser]
public class MetricsRecordingBenchmarks
{
    private const int PerThread = 20_000;

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

    [Benchmark(OperationsPerInvoke = 2 * PerThread)]
    public void RecordRequestOnTwoThreads() => Concurrently.Run(2, PerThread, () => _metrics.Record(_record));
}

// The per-second request counts of the status page (RequestStats.Record), alone and from two threads at once.
[MemoryDiagnoser]
public class RequestStatsBenchmarks
{
    private const int PerThread = 20_000;
    private ProxyStateHolder _state = null!;
    private RequestStats _stats = null!;
    private RequestRecord _record = null!;

    [GlobalSetup]
    public void Setup()
    {
        _state = SampleRequests.State();
        _stats = new RequestStats(TimeProvider.System);
        _record = SampleRequests.Record(_state);
    }

    [GlobalCleanup]
    public void Cleanup() => _state.Current.DisposeAsync().AsTask().GetAwaiter().GetResult();

    [Benchmark]
    public void RecordStats() => _stats.Record(_record);

    [Benchmark(OperationsPerInvoke = 2 * PerThread)]
    public void RecordStatsOnTwoThreads() => Concurrently.Run(2, PerThread, () => _stats.Record(_record));
}

internal static class Concurrently
{
    // Dedicated threads released together, so that their loops overlap instead of one finishing before the next starts.
    public static void Run(int threads, int iterations, Action action)
    {
        using var start = new Barrier(threads);
        var workers = new Thread[threads];
        for (var t = 0; t < threads; t++)
        {
            workers[t] = new Thread(() =>
            {
                start.SignalAndWait();
                for (var i = 0; i < iterations; i++)
                {
                    action();
                }
            });
            workers[t].Start();
        }
        foreach (var worker in workers)
        {
            worker.Join();
        }
    }
}
