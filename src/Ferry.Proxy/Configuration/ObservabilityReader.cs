using Microsoft.Extensions.Configuration;

namespace Ferry.Configuration;

/// <summary>Reads AccessLog, Metrics and Tracing.</summary>
internal static class ObservabilityReader
{
    public static (AccessLogConfig AccessLog, MetricsConfig Metrics, TracingConfig Tracing) Read(ConfigReader reader, IConfiguration root)
    {
        var section = reader.Section(root, "AccessLog");
        using var keys = reader.CheckKeys(section);
        var defaults = AccessLogConfig.Default;
        var format = reader.Choice(section, "Format", defaults.Format, "an access log format",
            ("json", AccessLogFormat.Json), ("combined", AccessLogFormat.Combined));

        var accessLog = new AccessLogConfig(
            reader.Bool(section, "Enabled", defaults.Enabled),
            format,
            reader.String(section, "Path") ?? defaults.Path,
            reader.Int(section, "BufferSize", defaults.BufferSize, min: 1, max: 1 << 20));

        var metrics = reader.Section(root, "Metrics");
        using var metricsKeys = reader.CheckKeys(metrics);
        var tracing = reader.Section(root, "Tracing");
        using var tracingKeys = reader.CheckKeys(tracing);
        return (accessLog,
            new MetricsConfig(reader.Bool(metrics, "Enabled", MetricsConfig.Default.Enabled), ReadOtlp(reader, metrics)),
            new TracingConfig(reader.Bool(tracing, "Enabled", TracingConfig.Default.Enabled), ReadOtlp(reader, tracing)));
    }

    private static OtlpConfig? ReadOtlp(ConfigReader reader, IConfiguration parent)
    {
        var section = reader.Section(parent, "Otlp");
        using var keys = reader.CheckKeys(section);
        var protocol = reader.Choice(section, "Protocol", OtlpProtocol.Grpc, "an OTLP protocol",
            ("grpc", OtlpProtocol.Grpc), ("http/protobuf", OtlpProtocol.HttpProtobuf));

        var interval = reader.Duration(section, "Interval", OtlpConfig.DefaultInterval, positive: true);
        var text = reader.String(section, "Endpoint");
        if (text is null)
        {
            return null;
        }

        if (!Uri.TryCreate(text, UriKind.Absolute, out var endpoint) || (endpoint.Scheme != Uri.UriSchemeHttp && endpoint.Scheme != Uri.UriSchemeHttps))
        {
            reader.Error(section.GetSection("Endpoint").Path, $"'{text}' is not an http or https URI");
            return null;
        }

        return new OtlpConfig(endpoint, protocol, interval);
    }
}
