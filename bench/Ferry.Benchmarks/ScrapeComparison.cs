using System.Diagnostics.Metrics;
using System.Text.RegularExpressions;
using Ferry.Errors;
using Ferry.Forwarding;
using Ferry.Hosting;
using Ferry.Metrics;
using Ferry.Model;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using OpenTelemetry.Metrics;

namespace Ferry.Benchmarks;

// `dotnet run -c Release --project bench/Ferry.Benchmarks -- compare-scrape`: the same requests recorded by
// FerryMetrics, scraped from Ferry's PrometheusCollector and from OpenTelemetry's Prometheus exporter (ASP.NET Core
// middleware), then a reload that removes the destination. Prints the series only one of them has, comparing names,
// labels and values (the runtime's values excepted; comments and the exporter's own target_info left out).
internal static partial class ScrapeComparison
{
    public static async Task<int> RunAsync()
    {
        var state = SampleRequests.State("a", "http://127.0.0.1:8080");
        using var services = new ServiceCollection().AddMetrics().BuildServiceProvider();
        var meters = services.GetRequiredService<IMeterFactory>();
        using var collector = PrometheusCollector.ForServer(meters);

        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        using var meterProvider = OpenTelemetry.Sdk.CreateMeterProviderBuilder().AddMeter(FerryMetrics.MeterName, PrometheusCollector.RuntimeMeter)
            .AddPrometheusExporter(o => o.ScrapeResponseCacheDurationMilliseconds = 0).Build();
        await using var app = builder.Build();
        app.UseOpenTelemetryPrometheusScrapingEndpoint(meterProvider, null, null, null, null);
        await app.StartAsync();
        using var http = new HttpClient { BaseAddress = new Uri(app.Urls.First()) };

        var metrics = new FerryMetrics(meters, state, null);
        metrics.Record(SampleRequests.Record(state));
        metrics.Record(SampleRequests.Record(state, duration: TimeSpan.FromMilliseconds(12)));
        metrics.Record(SampleRequests.Record(state, 502, ProxyError.ConnectionRefused, TimeSpan.FromMilliseconds(3)));
        metrics.RecordReload(true);

        var differences = Compare("after three requests", collector.Scrape(), await http.GetStringAsync("/metrics"));

        // A reload that replaces destination a with b: a's pool series should go.
        var old = state.Swap(ProxyState.Build(SampleRequests.Config("b", "http://127.0.0.1:8081"), FerryServer.PoolFactory(TimeProvider.System), TimeProvider.System));
        await old.DisposeAsync();
        differences += Compare("after a reload that replaced the destination", collector.Scrape(), await http.GetStringAsync("/metrics"));
        await state.Current.DisposeAsync();
        return differences == 0 ? 0 : 1;
    }

    private static int Compare(string when, string ferry, string openTelemetry)
    {
        var a = Series(ferry);
        var b = Series(openTelemetry);
        var onlyFerry = a.Except(b).Order(StringComparer.Ordinal).ToArray();
        var onlyOtel = b.Except(a).Order(StringComparer.Ordinal).ToArray();
        Console.WriteLine($"## {when}: {a.Count} series from Ferry's collector, {b.Count} from OpenTelemetry's exporter, {a.Intersect(b).Count()} identical");
        foreach (var line in onlyFerry)
        {
            Console.WriteLine($"  only Ferry:         {line}");
        }
        foreach (var line in onlyOtel)
        {
            Console.WriteLine($"  only OpenTelemetry: {line}");
        }
        return onlyFerry.Length + onlyOtel.Length;
    }

    // "name{labels} value [timestamp]" → "name{sorted labels} value", without scope labels the exporter adds.
    private static HashSet<string> Series(string text)
    {
        var set = new HashSet<string>(StringComparer.Ordinal);
        foreach (var raw in text.Split('\n'))
        {
            var line = raw.Trim();
            if (line.Length == 0 || line.StartsWith('#') || line.StartsWith("target_info", StringComparison.Ordinal))
            {
                continue;
            }
            var match = SeriesLine().Match(line);
            if (!match.Success)
            {
                set.Add("unparsed: " + line);
                continue;
            }
            var labels = match.Groups["labels"].Value.Length == 0 ? [] : LabelPair().Matches(match.Groups["labels"].Value)
                .Select(m => m.Value)
                .Where(l => !l.StartsWith("otel_scope_", StringComparison.Ordinal))
                .Order(StringComparer.Ordinal)
                .ToArray();
            var value = double.Parse(match.Groups["value"].Value, System.Globalization.CultureInfo.InvariantCulture);
            // The runtime's values move between the two scrapes; its series are compared without them.
            var name = match.Groups["name"].Value;
            set.Add($"{name}{{{string.Join(",", labels)}}}" + (name.StartsWith("dotnet_", StringComparison.Ordinal) ? "" : $" {value:R}"));
        }
        return set;
    }

    [GeneratedRegex("""^(?<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?<labels>.*)\})?\s+(?<value>\S+)(\s+\d+)?$""")]
    private static partial Regex SeriesLine();

    [GeneratedRegex("""[a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*"\s*""")]
    private static partial Regex LabelPair();
}
