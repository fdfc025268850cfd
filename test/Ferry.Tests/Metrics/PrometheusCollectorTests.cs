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
    public void ConcurrentRecording_FromManyThreads_GivesExactTotalsAndBucketCounts()
    {
        const int Threads = 8;
        const int PerThread = 20_000;
        var requests = _meter.CreateCounter<long>("ferry.requests", "{request}");
        var bytes = _meter.CreateCounter<double>("ferry.sent", "By");
        var duration = _meter.CreateHistogram<double>("ferry.duration", "s",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = [1, 2] });

        RunTogether(Threads, t =>
        {
            var route = new KeyValuePair<string, object?>("ferry.route", t % 2 == 0 ? "even" : "odd");
            for (var i = 0; i < PerThread; i++)
            {
                requests.Add(1, route);
                requests.Add(2);
                bytes.Add(0.5, route);
                // Whole and half values: every partial sum is exact in a double, whatever the order of additions.
                duration.Record(i % 3 + 0.5, route);
            }
        });

        var text = _collector.Scrape();
        const int PerRoute = Threads / 2 * PerThread;
        Assert.Contains($"ferry_requests_total {2 * Threads * PerThread}\n", text);
        foreach (var route in new[] { "even", "odd" })
        {
            var labels = $"ferry_route=\"{route}\"";
            Assert.Contains($"ferry_requests_total{{{labels}}} {PerRoute}\n", text);
            Assert.Contains($"ferry_sent_bytes_total{{{labels}}} {PerRoute / 2}\n", text);
            // Per thread: 6,667 values of 0.5, 6,667 of 1.5 and 6,666 of 2.5.
            var (low, mid, high) = (Threads / 2 * 6_667, Threads / 2 * 6_667, Threads / 2 * 6_666);
            Assert.Contains($$"""
                ferry_duration_seconds_bucket{{{labels}},le="1"} {{low}}
                ferry_duration_seconds_bucket{{{labels}},le="2"} {{low + mid}}
                ferry_duration_seconds_bucket{{{labels}},le="+Inf"} {{low + mid + high}}
                ferry_duration_seconds_sum{{{labels}}} {{(low + 3 * mid + 5 * high) / 2}}
                ferry_duration_seconds_count{{{labels}}} {{PerRoute}}

                """.ReplaceLineEndings("\n"), text);
        }
    }

    [Fact]
    public void ScrapeDuringRecording_CountsEqualTheInfBucket_AndNeverGoBack()
    {
        var requests = _meter.CreateCounter<long>("ferry.requests", "{request}");
        var duration = _meter.CreateHistogram<double>("ferry.duration", "s",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = [1] });
        using var stop = new CancellationTokenSource();
        var writers = Enumerable.Range(0, 4).Select(_ => Task.Factory.StartNew(() =>
        {
            while (!stop.IsCancellationRequested)
            {
                requests.Add(1);
                duration.Record(0.5);
            }
        }, TaskCreationOptions.LongRunning)).ToArray();

        long lastRequests = 0, lastCount = 0;
        var scrapes = 0;
        var until = DateTime.UtcNow.AddMilliseconds(300);
        while (DateTime.UtcNow < until || lastCount == 0)
        {
            var lines = _collector.Scrape().Split('\n');
            var inf = Value(lines, "ferry_duration_seconds_bucket{le=\"+Inf\"}");
            var count = Value(lines, "ferry_duration_seconds_count");
            var total = Value(lines, "ferry_requests_total");
            Assert.Equal(inf, count);
            Assert.True(count >= lastCount && total >= lastRequests, $"went back: {lastCount} → {count}, {lastRequests} → {total}");
            (lastCount, lastRequests) = (count, total);
            scrapes++;
        }
        stop.Cancel();
        Assert.True(Task.WaitAll(writers, TimeSpan.FromSeconds(10)));

        Assert.True(scrapes > 1);
        var final = _collector.Scrape().Split('\n');
        Assert.Equal(Value(final, "ferry_requests_total"), Value(final, "ferry_duration_seconds_count"));
    }

    private static long Value(string[] lines, string series) =>
        lines.FirstOrDefault(l => l.StartsWith(series + " ", StringComparison.Ordinal)) is { } line
            ? long.Parse(line[(series.Length + 1)..], System.Globalization.CultureInfo.InvariantCulture)
            : 0;

    private static void RunTogether(int threads, Action<int> body)
    {
        using var start = new Barrier(threads);
        var workers = Enumerable.Range(0, threads).Select(t => new Thread(() =>
        {
            start.SignalAndWait();
            body(t);
        })).ToArray();
        foreach (var worker in workers)
        {
            worker.Start();
        }
        foreach (var worker in workers)
        {
            Assert.True(worker.Join(TimeSpan.FromSeconds(30)));
        }
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
