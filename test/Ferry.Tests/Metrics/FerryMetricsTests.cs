using System.Diagnostics.Metrics;
using Ferry.AccessLog;
using Ferry.Metrics;
using Ferry.Tests.Support;
using Microsoft.Extensions.DependencyInjection;

namespace Ferry.Tests.Metrics;

public sealed class FerryMetricsTests : IAsyncLifetime
{
    private readonly TestRecords _records = new();
    private readonly ServiceProvider _services = new ServiceCollection().AddMetrics().BuildServiceProvider();

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        await _services.DisposeAsync();
        await _records.DisposeAsync();
    }

    [Fact]
    public void CompletedRequests_ShowUpInTheExposition()
    {
        var factory = _services.GetRequiredService<IMeterFactory>();
        using var collector = PrometheusCollector.ForServer(factory);
        var metrics = new FerryMetrics(factory, _records.State, () => 7);
        var telemetry = new RequestTelemetry(metrics, new RequestStats(_records.Clock), null);

        telemetry.Complete(_records.Reused());
        telemetry.Complete(_records.Replayed());
        telemetry.Complete(_records.BadGateway());
        var text = collector.Scrape();

        Assert.Contains("ferry_requests_total{ferry_cluster=\"c\",ferry_route=\"r\",ferry_status_class=\"2xx\"} 2\n", text);
        Assert.Contains("ferry_requests_total{error_type=\"connection_refused\",ferry_cluster=\"c\",ferry_route=\"r\",ferry_status_class=\"5xx\"} 1\n", text);
        Assert.Contains("ferry_upstream_retries_total{ferry_cluster=\"c\",ferry_destination=\"a\",ferry_retry_kind=\"replay\"} 1\n", text);
        Assert.Contains("ferry_upstream_attempts_total{error_type=\"connection_terminated\",ferry_cluster=\"c\",ferry_destination=\"a\",ferry_reused=\"true\"} 1\n", text);
        Assert.Contains("ferry_upstream_attempts_total{ferry_cluster=\"c\",ferry_destination=\"a\",ferry_reused=\"false\"} 1\n", text);
        Assert.Contains("ferry_upstream_connect_duration_seconds_bucket{ferry_cluster=\"c\",ferry_destination=\"a\",le=\"0.00025\"} 1\n", text);
        Assert.Contains("ferry_upstream_head_duration_seconds_count{ferry_cluster=\"c\",ferry_destination=\"a\"} 2\n", text);
        Assert.Contains("ferry_upstream_connections{ferry_cluster=\"c\",ferry_destination=\"b\",http_connection_state=\"idle\"} 0\n", text);
        Assert.Contains("ferry_destination_health{ferry_cluster=\"c\",ferry_destination=\"a\"} 1\n", text);
        Assert.Contains("ferry_upstream_connections_retired_total{ferry_cluster=\"c\",ferry_destination=\"a\",ferry_retire_reason=\"closed_while_idle\"} 0\n", text);
        Assert.Contains("ferry_upstream_keepalive_idle_timeout_seconds{ferry_cluster=\"c\",ferry_destination=\"a\"} ", text);
        Assert.Contains("ferry_access_log_dropped_total 7\n", text);
    }

    [Fact]
    public void AnotherServersMeter_IsNotCollected()
    {
        using var other = new ServiceCollection().AddMetrics().BuildServiceProvider();
        using var collector = PrometheusCollector.ForServer(_services.GetRequiredService<IMeterFactory>());
        var foreign = new FerryMetrics(other.GetRequiredService<IMeterFactory>(), _records.State, null);

        foreign.Record(_records.Reused());

        Assert.DoesNotContain("ferry_", collector.Scrape());
    }

    [Fact]
    public void RuntimeMeter_IsCollected()
    {
        using var collector = PrometheusCollector.ForServer(_services.GetRequiredService<IMeterFactory>());

        Assert.Contains("# TYPE dotnet_gc_collections_total counter\n", collector.Scrape());
    }
}
