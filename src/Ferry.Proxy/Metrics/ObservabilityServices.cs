using System.Diagnostics.Metrics;
using Ferry.AccessLog;
using Ferry.Configuration;
using Ferry.Forwarding;
using OpenTelemetry;
using OpenTelemetry.Exporter;
using OpenTelemetry.Metrics;
using OpenTelemetry.Trace;

namespace Ferry.Metrics;

internal static class ObservabilityServices
{
    // Registers RequestTelemetry (the request path's sink), FerryTracing, and what they feed: the access log writer,
    // the Ferry meter with its Prometheus collector, the per-second stats and the OTLP exporters. Everything is
    // started with the host (so that no early request is missed) and flushed when the host is disposed.
    public static IServiceCollection AddFerryObservability(this IServiceCollection services, FerryConfig config)
    {
        services.AddMetrics();
        if (config.AccessLog.Enabled)
        {
            services.AddSingleton(sp => new AccessLogWriter(config.AccessLog, sp.GetRequiredService<ILogger<AccessLogWriter>>()));
        }
        if (config.Metrics.Enabled)
        {
            services.AddSingleton(sp => new FerryMetrics(
                sp.GetRequiredService<IMeterFactory>(),
                sp.GetRequiredService<ProxyStateHolder>(),
                sp.GetService<AccessLogWriter>() is { } log ? () => log.Dropped : null,
                sp.GetService<Loops.EventLoops>()));
            services.AddSingleton(sp => PrometheusCollector.ForServer(sp.GetRequiredService<IMeterFactory>()));
        }
        services.AddSingleton(sp => new RequestStats(sp.GetRequiredService<TimeProvider>()));
        services.AddSingleton(sp => new RequestTelemetry(
            sp.GetService<FerryMetrics>(), sp.GetRequiredService<RequestStats>(), sp.GetService<AccessLogWriter>()));
        services.AddSingleton(new FerryTracing(config.Tracing));
        services.AddHostedService(sp => new ObservabilityStartup(config, sp));
        return services;
    }

    // Creates the collectors before the listeners accept traffic, and owns the OTLP providers.
    private sealed class ObservabilityStartup(FerryConfig config, IServiceProvider services) : IHostedService, IDisposable
    {
        private MeterProvider? _meterProvider;
        private TracerProvider? _tracerProvider;

        public Task StartAsync(CancellationToken cancellationToken)
        {
            services.GetService<PrometheusCollector>();
            services.GetService<FerryMetrics>();
            services.GetService<AccessLogWriter>()?.ListenForSighup();
            services.GetRequiredService<RequestTelemetry>();
            if (config.Metrics is { Enabled: true, Otlp: { } metricsOtlp })
            {
                _meterProvider = Sdk.CreateMeterProviderBuilder()
                    .AddMeter(FerryMetrics.MeterName, PrometheusCollector.RuntimeMeter)
                    .AddMeter(PrometheusCollector.ServerMeters)
                    .AddOtlpExporter((exporter, reader) =>
                    {
                        Configure(exporter, metricsOtlp, "v1/metrics");
                        reader.PeriodicExportingMetricReaderOptions.ExportIntervalMilliseconds = (int)metricsOtlp.Interval.TotalMilliseconds;
                    })
                    .Build();
            }
            if (config.Tracing is { Enabled: true, Otlp: { } tracingOtlp })
            {
                _tracerProvider = Sdk.CreateTracerProviderBuilder()
                    .AddSource(FerryTracing.SourceName)
                    .AddOtlpExporter(exporter => Configure(exporter, tracingOtlp, "v1/traces"))
                    .Build();
            }
            return Task.CompletedTask;
        }

        // Set in code, the http/protobuf endpoint is used as is, so the signal's path is added here the way the
        // OTEL_EXPORTER_OTLP_ENDPOINT variable would add it (OTLP exporter specification, "Endpoint URLs for OTLP/HTTP").
        private static void Configure(OtlpExporterOptions exporter, OtlpConfig otlp, string signalPath)
        {
            exporter.Protocol = otlp.Protocol == OtlpProtocol.Grpc ? OtlpExportProtocol.Grpc : OtlpExportProtocol.HttpProtobuf;
            exporter.Endpoint = otlp.Protocol == OtlpProtocol.HttpProtobuf && otlp.Endpoint.AbsolutePath == "/"
                ? new Uri(otlp.Endpoint, signalPath)
                : otlp.Endpoint;
        }

        // The last interval's points and the last spans are pushed before the process ends; 5 s is the OpenTelemetry
        // SDK's own default export timeout (OTEL_EXPORTER_OTLP_TIMEOUT is 10 s per request, the reader's flush 5 s).
        public Task StopAsync(CancellationToken cancellationToken)
        {
            _meterProvider?.ForceFlush((int)TimeSpan.FromSeconds(5).TotalMilliseconds);
            _tracerProvider?.ForceFlush((int)TimeSpan.FromSeconds(5).TotalMilliseconds);
            return Task.CompletedTask;
        }

        public void Dispose()
        {
            _meterProvider?.Dispose();
            _tracerProvider?.Dispose();
        }
    }
}
