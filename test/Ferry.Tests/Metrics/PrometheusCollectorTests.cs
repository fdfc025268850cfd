using System.Diagnostics.Metrics;
using Ferry.Metrics;

namespace Ferry.Tests.Metrics;

public sealed class PrometheusCollectorTests : IDisposable
{
    // A meter of its own per test, so that measurements from other tests in the process cannot appear.
    private readonly Meter _meter = new("Ferry.Tests." + Guid.NewGuid().ToString("N"));
    private readonly PrometheusCollector _collector;

    public PrometheusCollectorTests() => _collector = new PrometheusCollector(i => i.Meter == _meter);

    public void Dispose()
    {
        _collector.Dispose();
        _meter.Dispose();
    }

    [Fact]
    public void Counter_IsSummedPerTagSet_WithTotalSuffixAndSortedLabels()
    {
        var counter = _meter.CreateCounter<long>("ferry.requests", "{request}", "Client requests.");
        counter.Add(1, new("ferry.route", "r"), new("error.type", "connection_refused"));
        counter.Add(2, new("error.type", "connection_refused"), new("ferry.route", "r"));
        counter.Add(1, new KeyValuePair<string, object?>("ferry.route", "other"));

        Assert.Equal("""
            # HELP ferry_requests_total Client requests.
            # TYPE ferry_requests_total counter
            ferry_requests_total{error_type="connection_refused",ferry_route="r"} 3
            ferry_requests_total{ferry_route="other"} 1

            """.ReplaceLineEndings("\n"), _collector.Scrape());
    }

    [Fact]
    public void ManyTagSets_RecordedRepeatedly_EachKeepItsOwnSum()
    {
        // More tag sets than the collector remembers recent ones, in an interleaved order and with values built anew
        // each time (equal strings, other instances; a fresh box for each number): every set still sums on its own.
        var counter = _meter.CreateCounter<long>("ferry.attempts", "{attempt}");
        for (var round = 1; round <= 3; round++)
        {
            for (var i = 0; i < 300; i++)
            {
                counter.Add(round, new("ferry.destination", $"d{i}"), new("http.response.status_code", 200 + i % 3));
            }
        }

        var text = _collector.Scrape();
        for (var i = 0; i < 300; i++)
        {
            Assert.Contains($"ferry_attempts_total{{ferry_destination=\"d{i}\",http_response_status_code=\"{200 + i % 3}\"}} 6\n", text);
        }
        Assert.Equal(300, text.Split('\n').Count(l => l.StartsWith("ferry_attempts_total{", StringComparison.Ordinal)));
    }

    [Fact]
    public void UpDownCounter_IsAGauge_AndLabelValuesAreEscaped()
    {
        var counter = _meter.CreateUpDownCounter<int>("ferry.active", "{connection}", "Line one\nline \\ two.");
        counter.Add(5, new KeyValuePair<string, object?>("path", "a\"b\\c\nd"));
        counter.Add(-2, new KeyValuePair<string, object?>("path", "a\"b\\c\nd"));
        counter.Add(1);

        Assert.Equal("""
            # HELP ferry_active Line one\nline \\ two.
            # TYPE ferry_active gauge
            ferry_active 1
            ferry_active{path="a\"b\\c\nd"} 3

            """.ReplaceLineEndings("\n"), _collector.Scrape());
    }

    [Fact]
    public void ObservableInstruments_ReportTheirCurrentValue_AndUnreportedSeriesDisappear()
    {
        var destinations = new List<string> { "a", "b" };
        var opened = 10L;
        _meter.CreateObservableCounter("ferry.opened", () => destinations.Select(d => new Measurement<long>(opened, new KeyValuePair<string, object?>("destination", d))));
        _meter.CreateObservableGauge("ferry.idle_timeout", () => 4.5, "s");
        _meter.CreateObservableUpDownCounter("ferry.queued", () => 0L);

        var first = _collector.Scrape();
        opened = 12;
        destinations.Remove("a");
        var second = _collector.Scrape();

        Assert.Equal("""
            # TYPE ferry_idle_timeout_seconds gauge
            ferry_idle_timeout_seconds 4.5
            # TYPE ferry_opened_total counter
            ferry_opened_total{destination="a"} 10
            ferry_opened_total{destination="b"} 10
            # TYPE ferry_queued gauge
            ferry_queued 0

            """.ReplaceLineEndings("\n"), first);
        Assert.Contains("ferry_opened_total{destination=\"b\"} 12\n", second);
        Assert.DoesNotContain("destination=\"a\"", second);
    }

    [Fact]
    public void Histogram_WritesCumulativeBucketsSumAndCount_WithAdvisedBoundaries()
    {
        var histogram = _meter.CreateHistogram<double>("ferry.upstream.duration", "s", "Attempt time.",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = [0.01, 0.1, 1] });
        foreach (var v in new[] { 0.005, 0.01, 0.05, 2.0 })
        {
            histogram.Record(v, new KeyValuePair<string, object?>("ferry.destination", "a"));
        }

        Assert.Equal("""
            # HELP ferry_upstream_duration_seconds Attempt time.
            # TYPE ferry_upstream_duration_seconds histogram
            ferry_upstream_duration_seconds_bucket{ferry_destination="a",le="0.01"} 2
            ferry_upstream_duration_seconds_bucket{ferry_destination="a",le="0.1"} 3
            ferry_upstream_duration_seconds_bucket{ferry_destination="a",le="1"} 3
            ferry_upstream_duration_seconds_bucket{ferry_destination="a",le="+Inf"} 4
            ferry_upstream_duration_seconds_sum{ferry_destination="a"} 2.065
            ferry_upstream_duration_seconds_count{ferry_destination="a"} 4

            """.ReplaceLineEndings("\n"), _collector.Scrape());
    }

    [Fact]
    public void Histogram_WithoutAdviceOrTags_UsesDefaultBuckets()
    {
        _meter.CreateHistogram<long>("payload", "By").Record(7);

        var text = _collector.Scrape();

        Assert.Contains("# TYPE payload_bytes histogram\n", text);
        Assert.Contains("payload_bytes_bucket{le=\"5\"} 0\npayload_bytes_bucket{le=\"10\"} 1\n", text);
        Assert.Contains("payload_bytes_bucket{le=\"+Inf\"} 1\npayload_bytes_sum 7\npayload_bytes_count 1\n", text);
    }

    [Fact]
    public void Gauge_KeepsTheLastValue_AndNonStringTagsAreFormatted()
    {
        var gauge = _meter.CreateGauge<double>("temperature");
        gauge.Record(1.25, new("port", 8080), new("up", true));
        gauge.Record(-3, new("port", 8080), new("up", true));

        Assert.Equal("""
            # TYPE temperature gauge
            temperature{port="8080",up="true"} -3

            """.ReplaceLineEndings("\n"), _collector.Scrape());
    }

    [Fact]
    public void UnusedInstruments_AreNotWritten() =>
        Assert.Equal("", Scrape(() => _meter.CreateCounter<long>("never")));

    [Theory]
    [InlineData("http.server.request.duration", "s", false, "http_server_request_duration_seconds")]
    [InlineData("dotnet.gc.collections", "{collection}", true, "dotnet_gc_collections_total")]
    [InlineData("dotnet.process.cpu.time", "s", true, "dotnet_process_cpu_time_seconds_total")]
    [InlineData("kestrel.active_connections", "{connection}", false, "kestrel_active_connections")]
    [InlineData("dotnet.gc.heap.total_allocated", "By", true, "dotnet_gc_heap_total_allocated_bytes_total")]
    [InlineData("ferry.throughput", "By/s", false, "ferry_throughput_bytes_per_second")]
    [InlineData("ferry.health", "1", false, "ferry_health")]
    [InlineData("already_seconds", "s", false, "already_seconds")]
    [InlineData("9lives--x", null, true, "_9lives_x_total")]
    public void MetricName_FollowsOpenTelemetryPrometheusRules(string name, string? unit, bool counter, string expected) =>
        Assert.Equal(expected, PrometheusCollector.MetricName(name, unit, counter));

    private string Scrape(Action create)
    {
        create();
        return _collector.Scrape();
    }
}
