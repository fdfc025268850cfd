namespace Ferry.Configuration;

internal enum AccessLogFormat
{
    Json,     // one JSON object per line
    Combined, // nginx "combined" followed by key=value fields
}

/// <summary>Where and how request lines are written. <see cref="Path"/> is "stdout" or a file path.</summary>
internal sealed record AccessLogConfig(bool Enabled, AccessLogFormat Format, string Path, int BufferSize)
{
    public const string Stdout = "stdout";

    // 8192 lines absorb a burst of several seconds at thousands of requests/s while a slow disk catches up, and cost
    // only references to records already allocated.
    public static AccessLogConfig Default { get; } = new(Enabled: true, AccessLogFormat.Json, Stdout, BufferSize: 8192);
}

internal enum OtlpProtocol
{
    Grpc,
    HttpProtobuf,
}

/// <summary>An OpenTelemetry collector to push to.</summary>
internal sealed record OtlpConfig(Uri Endpoint, OtlpProtocol Protocol, TimeSpan Interval)
{
    // OpenTelemetry's default periodic export interval for metrics (OTEL_METRIC_EXPORT_INTERVAL is 60 s; 15 s is the
    // common Prometheus scrape interval, which keeps pushed and scraped series comparable).
    public static readonly TimeSpan DefaultInterval = TimeSpan.FromSeconds(15);
}

/// <summary>The "Ferry" meter, exposed at the admin listener's /metrics, and optionally pushed over OTLP.</summary>
internal sealed record MetricsConfig(bool Enabled, OtlpConfig? Otlp)
{
    public static MetricsConfig Default { get; } = new(Enabled: true, Otlp: null);
}

/// <summary>Activities of the "Ferry" ActivitySource, exported over OTLP when an endpoint is set.</summary>
internal sealed record TracingConfig(bool Enabled, OtlpConfig? Otlp)
{
    public static TracingConfig Default { get; } = new(Enabled: true, Otlp: null);
}
