using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using System.Globalization;
using System.Numerics;
using System.Text;

namespace Ferry.Metrics;

// Aggregates System.Diagnostics.Metrics measurements in process and renders them in the Prometheus text exposition
// format 0.0.4 (https://prometheus.io/docs/instrumenting/exposition_formats/). Names follow OpenTelemetry's
// Prometheus compatibility rules: '.' and other invalid characters become '_', the unit becomes a suffix
// ("s" → "_seconds"), monotonic counters end in "_total", and annotations such as "{request}" are dropped.
internal sealed class PrometheusCollector : IDisposable
{
    // The runtime's meter is process-wide; Ferry's and ASP.NET Core's are created per host by its IMeterFactory.
    public const string RuntimeMeter = "System.Runtime";
    public static readonly string[] ServerMeters = [FerryMetrics.MeterName, "Microsoft.AspNetCore.Server.Kestrel", "Microsoft.AspNetCore.Hosting"];

    // OpenTelemetry SDK's default explicit bucket boundaries, for histograms without advice and a unit other than seconds.
    private static readonly double[] DefaultBounds = [0, 5, 10, 25, 50, 75, 100, 250, 500, 750, 1000, 2500, 5000, 7500, 10000];

    // ASP.NET Core's advice for its "s" histograms (http.server.request.duration), used for any seconds histogram
    // without advice of its own.
    private static readonly double[] SecondsBounds = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10];

    [ThreadStatic] private static char[]? t_key;
    [ThreadStatic] private static KeyValuePair<string, object?>[]? t_tags;

    private readonly MeterListener _listener;
    private readonly ConcurrentDictionary<string, Family> _families = new(StringComparer.Ordinal);
    private readonly Lock _scrapeLock = new();

    // Listens to every instrument <paramref name="include"/> accepts, from now on.
    public PrometheusCollector(Func<Instrument, bool> include)
    {
        _listener = new MeterListener
        {
            InstrumentPublished = (instrument, listener) =>
            {
                if (include(instrument) && FamilyFor(instrument) is { } family)
                {
                    listener.EnableMeasurementEvents(instrument, family);
                }
            },
        };
        _listener.SetMeasurementEventCallback<double>(static (i, v, tags, state) => ((Family)state!).Record(v, tags));
        _listener.SetMeasurementEventCallback<float>(static (i, v, tags, state) => ((Family)state!).Record(v, tags));
        _listener.SetMeasurementEventCallback<long>(static (i, v, tags, state) => ((Family)state!).Record(v, tags));
        _listener.SetMeasurementEventCallback<int>(static (i, v, tags, state) => ((Family)state!).Record((long)v, tags));
        _listener.SetMeasurementEventCallback<short>(static (i, v, tags, state) => ((Family)state!).Record((long)v, tags));
        _listener.SetMeasurementEventCallback<byte>(static (i, v, tags, state) => ((Family)state!).Record((long)v, tags));
        _listener.SetMeasurementEventCallback<decimal>(static (i, v, tags, state) => ((Family)state!).Record((double)v, tags));
        _listener.Start();
    }

    // The meters of one Ferry server: its own "Ferry" and ASP.NET Core meters (created by its IMeterFactory, so that
    // other servers in the same process are not mixed in) and the process-wide runtime meter.
    public static PrometheusCollector ForServer(IMeterFactory meterFactory) => new(instrument =>
        instrument.Meter.Name == RuntimeMeter
        || (ReferenceEquals(instrument.Meter.Scope, meterFactory) && ServerMeters.Contains(instrument.Meter.Name)));

    public const string ContentType = "text/plain; version=0.0.4; charset=utf-8";

    public string Scrape()
    {
        var text = new StringBuilder(16 * 1024);
        lock (_scrapeLock)
        {
            // Observable instruments report their current values now; series that were not reported (a destination
            // removed by a reload) disappear instead of freezing at their last value.
            foreach (var family in _families.Values)
            {
                if (family.Observable)
                {
                    family.ClearSeries();
                }
            }
            _listener.RecordObservableInstruments();
            foreach (var family in _families.Values.OrderBy(f => f.Name, StringComparer.Ordinal))
            {
                family.WriteTo(text);
            }
        }
        return text.ToString();
    }

    public void Dispose() => _listener.Dispose();

    private Family? FamilyFor(Instrument instrument)
    {
        var type = instrument.GetType();
        var generic = type.IsGenericType ? type.GetGenericTypeDefinition() : type;
        (Kind Kind, bool Observable)? shape = generic.Name switch
        {
            "Counter`1" => (Kind.Counter, false),
            "ObservableCounter`1" => (Kind.Counter, true),
            "UpDownCounter`1" => (Kind.UpDownCounter, false),
            "ObservableUpDownCounter`1" => (Kind.Gauge, true),
            "Gauge`1" => (Kind.Gauge, false),
            "ObservableGauge`1" => (Kind.Gauge, true),
            "Histogram`1" => (Kind.Histogram, false),
            _ => null,
        };
        if (shape is not { } s)
        {
            return null;
        }
        var name = MetricName(instrument.Name, instrument.Unit, s.Kind == Kind.Counter);
        var bounds = s.Kind == Kind.Histogram ? Bounds(instrument) : null;
        var family = _families.GetOrAdd(name, _ => new Family(name, s.Kind, s.Observable, instrument.Description, bounds));
        // Two instruments may only share a name when they aggregate the same way (the same meter recreated).
        return family.Kind == s.Kind && family.Observable == s.Observable ? family : null;
    }

    private static double[] Bounds(Instrument instrument)
    {
        var advice = instrument switch
        {
            Histogram<double> h => h.Advice?.HistogramBucketBoundaries?.Select(b => b).ToArray(),
            Histogram<float> h => h.Advice?.HistogramBucketBoundaries?.Select(b => (double)b).ToArray(),
            Histogram<long> h => h.Advice?.HistogramBucketBoundaries?.Select(b => (double)b).ToArray(),
            Histogram<int> h => h.Advice?.HistogramBucketBoundaries?.Select(b => (double)b).ToArray(),
            _ => null,
        };
        return advice is { Length: > 0 } ? advice : instrument.Unit == "s" ? SecondsBounds : DefaultBounds;
    }

    internal static string MetricName(string instrumentName, string? unit, bool counter)
    {
        var name = Sanitize(instrumentName, allowColon: true);
        var suffix = UnitSuffix(unit);
        if (suffix.Length > 0 && !name.EndsWith("_" + suffix, StringComparison.Ordinal))
        {
            name += "_" + suffix;
        }
        if (counter && !name.EndsWith("_total", StringComparison.Ordinal))
        {
            name += "_total";
        }
        return name;
    }

    // OpenTelemetry's unit mapping for Prometheus (specification, "Metric Metadata" in the Prometheus compatibility
    // section): UCUM abbreviations become words, "{...}" annotations are dropped, "a/b" becomes "a_per_b".
    internal static string UnitSuffix(string? unit)
    {
        if (string.IsNullOrEmpty(unit))
        {
            return "";
        }
        var withoutAnnotations = new StringBuilder();
        var depth = 0;
        foreach (var c in unit)
        {
            if (c == '{')
            {
                depth++;
            }
            else if (c == '}')
            {
                depth = Math.Max(0, depth - 1);
            }
            else if (depth == 0)
            {
                withoutAnnotations.Append(c);
            }
        }
        var parts = withoutAnnotations.ToString().Split('/', 2);
        var main = UnitWord(parts[0]);
        var per = parts.Length == 2 ? PerUnitWord(parts[1]) : "";
        var suffix = per.Length == 0 ? main : main.Length == 0 ? "per_" + per : main + "_per_" + per;
        return Sanitize(suffix, allowColon: false).Trim('_');
    }

    // The denominator of a rate is singular: "By/s" is "bytes_per_second".
    private static string PerUnitWord(string unit) => unit switch
    {
        "d" => "day",
        "h" => "hour",
        "min" => "minute",
        "s" => "second",
        "ms" => "millisecond",
        _ => UnitWord(unit),
    };

    private static string UnitWord(string unit) => unit switch
    {
        "" => "",
        "d" => "days",
        "h" => "hours",
        "min" => "minutes",
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "GiBy" => "gibibytes",
        "KBy" => "kilobytes",
        "MBy" => "megabytes",
        "GBy" => "gigabytes",
        "bit" => "bits",
        "Hz" => "hertz",
        "%" => "percent",
        "1" => "",
        _ => unit,
    };

    // [a-zA-Z_:][a-zA-Z0-9_:]* for metric names, no ':' for labels; runs of invalid characters become one '_'.
    internal static string Sanitize(string name, bool allowColon)
    {
        var result = new StringBuilder(name.Length + 1);
        foreach (var c in name)
        {
            var valid = char.IsAsciiLetterOrDigit(c) || c == '_' || (allowColon && c == ':');
            if (valid)
            {
                result.Append(c);
            }
            else if (result.Length == 0 || result[^1] != '_')
            {
                result.Append('_');
            }
        }
        if (result.Length == 0 || char.IsAsciiDigit(result[0]))
        {
            result.Insert(0, '_');
        }
        return result.ToString();
    }

    internal static string FormatValue(double value) =>
        double.IsPositiveInfinity(value) ? "+Inf"
        : double.IsNegativeInfinity(value) ? "-Inf"
        : double.IsNaN(value) ? "NaN"
        : value.ToString(CultureInfo.InvariantCulture);

    private enum Kind { Counter, UpDownCounter, Gauge, Histogram }

    private sealed class Family(string name, Kind kind, bool observable, string? description, double[]? bounds)
    {
        private readonly ConcurrentDictionary<string, Series>.AlternateLookup<ReadOnlySpan<char>> _lookup =
            new ConcurrentDictionary<string, Series>(StringComparer.Ordinal).GetAlternateLookup<ReadOnlySpan<char>>();

        // The series of tag lists recorded lately, by a hash of the tags. A call site records the same few tag lists
        // again and again; comparing them with one seen before costs less than building its label key (sorting the
        // tags, formatting every value) for every measurement. Entries are immutable and replaced whole.
        private readonly RecentTags?[] _recent = new RecentTags?[1 << RecentSlotBits];

        public string Name { get; } = name;
        public Kind Kind { get; } = kind;
        public bool Observable { get; } = observable;
        public ConcurrentDictionary<string, Series> Series => _lookup.Dictionary;

        // Only the scrape clears series (observable ones, under its lock, before they report again).
        public void ClearSeries()
        {
            Array.Clear(_recent);
            Series.Clear();
        }

        public void Record(double value, ReadOnlySpan<KeyValuePair<string, object?>> tags)
        {
            var series = Find(tags);
            switch (Kind)
            {
                case Kind.Counter when Observable:
                case Kind.Gauge:
                    // Observable counters report their running total; gauges their current value.
                    series.Set(value);
                    break;
                case Kind.Histogram:
                    var i = 0;
                    while (i < bounds!.Length && value > bounds[i])
                    {
                        i++;
                    }
                    series.Observe(i, value);
                    break;
                default:
                    series.Add(value);
                    break;
            }
        }

        // Integer counters keep an integer total: an atomic add instead of a compare-and-swap loop on a double.
        public void Record(long value, ReadOnlySpan<KeyValuePair<string, object?>> tags)
        {
            if (Kind == Kind.UpDownCounter || (Kind == Kind.Counter && !Observable))
            {
                Find(tags).Add(value);
            }
            else
            {
                Record((double)value, tags);
            }
        }

        private Series Find(ReadOnlySpan<KeyValuePair<string, object?>> tags)
        {
            var slot = TagsHash(tags);
            if (Volatile.Read(ref _recent[slot]) is { } recent && recent.Matches(tags))
            {
                return recent.Series;
            }
            var key = LabelKey(tags);
            if (!_lookup.TryGetValue(key, out var series))
            {
                var created = new Series(bounds?.Length + 1 ?? 0);
                series = _lookup.TryAdd(key, created) || !_lookup.TryGetValue(key, out var existing) ? created : existing;
            }
            Volatile.Write(ref _recent[slot], new RecentTags(tags.ToArray(), series));
            return series;
        }

        public void WriteTo(StringBuilder text)
        {
            if (Series.IsEmpty)
            {
                return;
            }
            if (!string.IsNullOrEmpty(description))
            {
                text.Append("# HELP ").Append(Name).Append(' ')
                    .Append(description.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("\n", "\\n", StringComparison.Ordinal)).Append('\n');
            }
            text.Append("# TYPE ").Append(Name).Append(' ').Append(Kind switch
            {
                Kind.Counter => "counter",
                Kind.Histogram => "histogram",
                _ => "gauge",
            }).Append('\n');
            foreach (var (labels, series) in Series.OrderBy(s => s.Key, StringComparer.Ordinal))
            {
                if (Kind != Kind.Histogram)
                {
                    Sample(text, Name, labels, null, FormatValue(series.Value));
                    continue;
                }
                // The count is the sum of the buckets read here, so that it always equals the +Inf bucket, even
                // while requests are being recorded; the sum may lag or lead them by the observations in flight.
                var buckets = series.Buckets();
                long cumulative = 0;
                for (var i = 0; i < buckets.Length; i++)
                {
                    cumulative += buckets[i];
                    var le = i < bounds!.Length ? FormatValue(bounds[i]) : "+Inf";
                    Sample(text, Name + "_bucket", labels, le, cumulative.ToString(CultureInfo.InvariantCulture));
                }
                Sample(text, Name + "_sum", labels, null, FormatValue(series.Value));
                Sample(text, Name + "_count", labels, null, cumulative.ToString(CultureInfo.InvariantCulture));
            }
        }

        private static void Sample(StringBuilder text, string name, string labels, string? le, string value)
        {
            text.Append(name);
            if (labels.Length > 0 || le is not null)
            {
                text.Append('{').Append(labels);
                if (le is not null)
                {
                    text.Append(labels.Length > 0 ? "," : "").Append("le=\"").Append(le).Append('"');
                }
                text.Append('}');
            }
            text.Append(' ').Append(value).Append('\n');
        }
    }

    private sealed class RecentTags(KeyValuePair<string, object?>[] tags, Series series)
    {
        public Series Series { get; } = series;

        public bool Matches(ReadOnlySpan<KeyValuePair<string, object?>> other)
        {
            if (other.Length != tags.Length)
            {
                return false;
            }
            for (var i = 0; i < tags.Length; i++)
            {
                if (!string.Equals(tags[i].Key, other[i].Key, StringComparison.Ordinal) || !Equals(tags[i].Value, other[i].Value))
                {
                    return false;
                }
            }
            return true;
        }
    }

    private const int RecentSlotBits = 6;

    // The hash only picks a recent slot; Matches decides. String.GetHashCode (randomized, over every character) of
    // every key and value cost more than the rest of a measurement, so a key counts by its length and a string value
    // by its length and three of its characters. A poor spread only sends more tag lists down the label key path.
    private static int TagsHash(ReadOnlySpan<KeyValuePair<string, object?>> tags)
    {
        var hash = (uint)tags.Length;
        foreach (var tag in tags)
        {
            hash = hash * 31 + (uint)tag.Key.Length;
            hash = hash * 31 + tag.Value switch
            {
                null => 0u,
                string { Length: 0 } => 1u,
                string s => (uint)s.Length ^ (uint)s[0] << 8 ^ (uint)s[s.Length / 2] << 16 ^ (uint)s[^1] << 24,
                var value => (uint)value.GetHashCode(),
            };
        }
        // Fibonacci hashing: the top bits of the product depend on every bit of the hash.
        return (int)((hash * 0x9E3779B9u) >> (32 - RecentSlotBits));
    }

    // One series' aggregate. Sums and bucket counts are striped by recording thread: each thread adds into a cell of
    // its own with atomic operations and no lock, so that cores serving the same route do not take turns on one lock
    // and one cache line; a scrape adds the cells up. Threads whose ids share a stripe share its cell, which the
    // atomic operations keep exact. A thread records into one cell only, in order, so a single thread's sum of
    // doubles is the one a single accumulator would hold.
    private sealed class Series(int buckets)
    {
        // More stripes than cores: thread ids are not dense, and a lazily allocated cell costs nothing until used.
        private static readonly int StripeMask = (int)Math.Min(BitOperations.RoundUpToPowerOf2((uint)Environment.ProcessorCount * 4), 256) - 1;

        // A cell: [Pad] integer total, [Pad + 1] double total (its bits), [Pad + 2 ...] histogram bucket counts (the
        // last one is +Inf). Cache lines of padding on both sides keep two threads' cells off one line even when the
        // GC compacts them next to each other.
        private const int Pad = 8;
        private const int IntegerTotal = Pad;
        private const int DoubleTotal = Pad + 1;
        private const int FirstBucket = Pad + 2;

        private readonly long[]?[] _cells = new long[]?[StripeMask + 1];
        private double _last; // gauges and observable counters: the value last reported

        public void Set(double value) => Volatile.Write(ref _last, value);

        public void Add(long value) => Interlocked.Add(ref Cell()[IntegerTotal], value);

        public void Add(double value) => AddDouble(ref Cell()[DoubleTotal], value);

        public void Observe(int bucket, double value)
        {
            var cell = Cell();
            Interlocked.Increment(ref cell[FirstBucket + bucket]);
            AddDouble(ref cell[DoubleTotal], value);
        }

        // The last value set, or the total of every cell.
        public double Value
        {
            get
            {
                long integer = 0;
                var real = 0.0;
                var any = false;
                foreach (var cell in _cells)
                {
                    if (cell is not null)
                    {
                        any = true;
                        integer += Volatile.Read(ref cell[IntegerTotal]);
                        real += BitConverter.Int64BitsToDouble(Volatile.Read(ref cell[DoubleTotal]));
                    }
                }
                return any ? integer + real : Volatile.Read(ref _last);
            }
        }

        // Observations per bucket, summed over the cells.
        public long[] Buckets()
        {
            var counts = new long[buckets];
            foreach (var cell in _cells)
            {
                if (cell is not null)
                {
                    for (var i = 0; i < counts.Length; i++)
                    {
                        counts[i] += Volatile.Read(ref cell[FirstBucket + i]);
                    }
                }
            }
            return counts;
        }

        private long[] Cell()
        {
            var stripe = Environment.CurrentManagedThreadId & StripeMask;
            return Volatile.Read(ref _cells[stripe]) ?? NewCell(stripe);
        }

        private long[] NewCell(int stripe)
        {
            var cell = new long[FirstBucket + buckets + Pad];
            return Interlocked.CompareExchange(ref _cells[stripe], cell, null) ?? cell;
        }

        private static void AddDouble(ref long bits, double value)
        {
            var seen = Volatile.Read(ref bits);
            while (true)
            {
                var sum = BitConverter.DoubleToInt64Bits(BitConverter.Int64BitsToDouble(seen) + value);
                var before = Interlocked.CompareExchange(ref bits, sum, seen);
                if (before == seen)
                {
                    return;
                }
                seen = before;
            }
        }
    }

    // The series identity: its label pairs sorted by name and already in exposition syntax (name="escaped value"),
    // built in a per-thread buffer so that recording into an existing series allocates nothing.
    private static ReadOnlySpan<char> LabelKey(ReadOnlySpan<KeyValuePair<string, object?>> tags)
    {
        if (tags.Length == 0)
        {
            return [];
        }
        var sorted = t_tags ??= new KeyValuePair<string, object?>[16];
        if (sorted.Length < tags.Length)
        {
            sorted = t_tags = new KeyValuePair<string, object?>[tags.Length];
        }
        tags.CopyTo(sorted);
        var span = sorted.AsSpan(0, tags.Length);
        span.Sort(static (a, b) => string.CompareOrdinal(a.Key, b.Key));

        var buffer = t_key ??= new char[256];
        var length = 0;
        for (var i = 0; i < span.Length; i++)
        {
            if (i > 0)
            {
                Append(ref buffer, ref length, ",");
            }
            AppendLabelName(ref buffer, ref length, span[i].Key);
            Append(ref buffer, ref length, "=\"");
            AppendLabelValue(ref buffer, ref length, span[i].Value);
            Append(ref buffer, ref length, "\"");
        }
        t_key = buffer;
        Array.Clear(sorted, 0, tags.Length);
        return buffer.AsSpan(0, length);
    }

    private static void AppendLabelName(ref char[] buffer, ref int length, string name)
    {
        foreach (var c in name)
        {
            var ok = char.IsAsciiLetterOrDigit(c) || c == '_';
            Append(ref buffer, ref length, ok ? c : '_');
        }
    }

    private static void AppendLabelValue(ref char[] buffer, ref int length, object? value)
    {
        switch (value)
        {
            case null:
                return;
            case string s:
                foreach (var c in s)
                {
                    switch (c)
                    {
                        case '\\': Append(ref buffer, ref length, "\\\\"); break;
                        case '"': Append(ref buffer, ref length, "\\\""); break;
                        case '\n': Append(ref buffer, ref length, "\\n"); break;
                        default: Append(ref buffer, ref length, c); break;
                    }
                }
                return;
            case bool b:
                Append(ref buffer, ref length, b ? "true" : "false");
                return;
            case ISpanFormattable f:
                while (true)
                {
                    if (f.TryFormat(buffer.AsSpan(length), out var written, default, CultureInfo.InvariantCulture))
                    {
                        length += written;
                        return;
                    }
                    Array.Resize(ref buffer, buffer.Length * 2);
                }
            default:
                AppendLabelValue(ref buffer, ref length, value.ToString());
                return;
        }
    }

    private static void Append(ref char[] buffer, ref int length, char c)
    {
        if (length == buffer.Length)
        {
            Array.Resize(ref buffer, buffer.Length * 2);
        }
        buffer[length++] = c;
    }

    private static void Append(ref char[] buffer, ref int length, string s)
    {
        foreach (var c in s)
        {
            Append(ref buffer, ref length, c);
        }
    }
}
