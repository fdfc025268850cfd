namespace Ferry.Doctor;

/// <summary>
/// Counts from nginx error logs, accumulated line by line so that logs of any size are streamed: per cause, per
/// upstream address and per minute. Lines below [error] (warn, notice, info, debug) are counted but not classified:
/// nginx logs the failures that produce a 5xx at [error] or above, while [warn] is mostly buffering chatter.
/// </summary>
internal sealed class ErrorLogReport
{
    private static readonly int CauseCount = Enum.GetValues<FailureCause>().Length;
    private static readonly HashSet<string> ClassifiedLevels = new(StringComparer.Ordinal) { "error", "crit", "alert", "emerg" };

    // cause → lines classified as that cause.
    private readonly long[] _causes = new long[CauseCount];
    // upstream address (as in the line's upstream field) → lines per cause.
    private readonly Dictionary<string, long[]> _upstreams = new(StringComparer.Ordinal);
    // minute (the log's local time, seconds dropped) → lines per cause.
    private readonly SortedDictionary<DateTime, long[]> _minutes = [];
    private readonly List<string> _files = [];

    /// <summary>Every line read, including empty ones.</summary>
    public long Lines { get; private set; }

    /// <summary>Lines that are not in nginx's error log format (or cut because absurdly long).</summary>
    public long UnparsedLines { get; private set; }

    /// <summary>Well-formed lines below [error], not classified.</summary>
    public long IgnoredLines { get; private set; }

    public IReadOnlyList<string> Files => _files;

    public long Count(FailureCause cause) => _causes[(int)cause];

    public long Classified => _causes.Sum();

    public IEnumerable<(string Upstream, IReadOnlyList<long> Causes)> Upstreams =>
        _upstreams.OrderByDescending(u => u.Value.Sum()).ThenBy(u => u.Key, StringComparer.Ordinal)
            .Select(u => (u.Key, (IReadOnlyList<long>)u.Value));

    public IEnumerable<(DateTime Minute, IReadOnlyList<long> Causes)> Minutes =>
        _minutes.Select(m => (m.Key, (IReadOnlyList<long>)m.Value));

    public void ReadFile(string path)
    {
        _files.Add(path);
        using var reader = DoctorInput.OpenText(path);
        Read(reader);
    }

    public void Read(TextReader reader)
    {
        foreach (var (line, truncated) in DoctorInput.ReadLines(reader))
        {
            Lines++;
            if (truncated)
            {
                UnparsedLines++;
                continue;
            }

            Add(line);
        }
    }

    private void Add(string line)
    {
        if (line.Length == 0)
        {
            return;
        }

        if (!ErrorLogLine.TryParse(line, out var parsed))
        {
            UnparsedLines++;
            return;
        }

        if (!ClassifiedLevels.Contains(parsed.Level))
        {
            IgnoredLines++;
            return;
        }

        var cause = (int)ErrorLogClassifier.Classify(parsed.Message);
        _causes[cause]++;
        if (parsed.Upstream is { } upstream)
        {
            Bucket(_upstreams, upstream)[cause]++;
        }

        var minute = parsed.Time.AddSeconds(-parsed.Time.Second);
        Bucket(_minutes, minute)[cause]++;
    }

    private static long[] Bucket<TKey>(IDictionary<TKey, long[]> buckets, TKey key)
    {
        if (!buckets.TryGetValue(key, out var counts))
        {
            counts = new long[CauseCount];
            buckets[key] = counts;
        }

        return counts;
    }
}
