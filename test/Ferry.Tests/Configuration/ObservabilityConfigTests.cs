using Ferry.Configuration;
using static Ferry.Tests.Configuration.ConfigTestJson;

namespace Ferry.Tests.Configuration;

public sealed class ObservabilityConfigTests
{
    private static string With(string sections) =>
        Minimal().TrimEnd().TrimEnd('}') + "," + sections + "}";

    [Fact]
    public void Defaults_LogJsonToStdout_MetricsAndTracingOn_NoExportNoToken()
    {
        var config = LoadValid(Minimal());

        Assert.Equal(AccessLogConfig.Default, config.AccessLog);
        Assert.Equal(new AccessLogConfig(true, AccessLogFormat.Json, "stdout", 8192), config.AccessLog);
        Assert.Equal(new MetricsConfig(true, null), config.Metrics);
        Assert.Equal(new TracingConfig(true, null), config.Tracing);
        Assert.Null(config.Admin.Token);
    }

    [Fact]
    public void EverySetting_IsRead()
    {
        var config = LoadValid(With("""
            "AccessLog": { "Enabled": false, "Format": "combined", "Path": "/var/log/ferry/access.log", "BufferSize": 100 },
            "Metrics": { "Enabled": true, "Otlp": { "Endpoint": "http://127.0.0.1:4318", "Protocol": "http/protobuf", "Interval": "5s" } },
            "Tracing": { "Enabled": true, "Otlp": { "Endpoint": "http://127.0.0.1:4317" } },
            "Admin": { "Token": "s3cr3t-T0ken" }
            """));

        Assert.Equal(new AccessLogConfig(false, AccessLogFormat.Combined, "/var/log/ferry/access.log", 100), config.AccessLog);
        Assert.Equal(new OtlpConfig(new Uri("http://127.0.0.1:4318"), OtlpProtocol.HttpProtobuf, TimeSpan.FromSeconds(5)), config.Metrics.Otlp);
        Assert.Equal(new OtlpConfig(new Uri("http://127.0.0.1:4317"), OtlpProtocol.Grpc, OtlpConfig.DefaultInterval), config.Tracing.Otlp);
        Assert.Equal("s3cr3t-T0ken", config.Admin.Token);
    }

    [Theory]
    [InlineData("\"AccessLog\": { \"Format\": \"xml\" }", "AccessLog:Format: 'xml' is not an access log format (json, combined)")]
    [InlineData("\"AccessLog\": { \"BufferSize\": 0 }", "AccessLog:BufferSize: '0' must be between 1 and 1048576")]
    [InlineData("\"Metrics\": { \"Otlp\": { \"Endpoint\": \"localhost:4317\" } }", "Metrics:Otlp:Endpoint: 'localhost:4317' is not an http or https URI")]
    [InlineData("\"Tracing\": { \"Otlp\": { \"Endpoint\": \"http://c:4317\", \"Protocol\": \"thrift\" } }",
        "Tracing:Otlp:Protocol: 'thrift' is not an OTLP protocol (grpc, http/protobuf)")]
    [InlineData("\"Metrics\": { \"Otlp\": { \"Endpoint\": \"http://c:4317\", \"Interval\": \"0s\" } }", "Metrics:Otlp:Interval: '0s' must be greater than zero")]
    [InlineData("\"Admin\": { \"Token\": \"has space\" }", "Admin:Token: must contain only letters, digits and -._~+/= (RFC 6750 b64token)")]
    public void Errors_NameTheirPath(string sections, string error)
    {
        var result = Load(With(sections));

        Assert.Equal([error], result.Errors);
        Assert.Null(result.Config);
    }

    [Fact]
    public void UnknownKeys_AreWarnedAbout()
    {
        var result = Load(With("\"AccessLog\": { \"Fromat\": \"json\" }, \"Metrics\": { \"Otlp\": { \"Endpiont\": \"http://c:4317\" } }"));

        Assert.Equal(["AccessLog:Fromat: unknown setting (did you mean 'Format'?)", "Metrics:Otlp:Endpiont: unknown setting (did you mean 'Endpoint'?)"], result.Warnings);
    }
}
