using System.Globalization;
using Microsoft.Extensions.Configuration;

namespace Ferry.Configuration;

/// <summary>
/// Reads typed values from configuration sections by hand and collects every problem with its configuration path,
/// so that one start reports all of them. Absent or empty values read as the default. Every key asked for, present or
/// not, is recorded for its section: that record is the section's known keys (<see cref="CheckKeys"/>).
/// </summary>
internal sealed class ConfigReader
{
    private readonly List<string> _errors = [];
    private readonly List<string> _warnings = [];

    // The keys asked for under each section path: what a reader reads is what it knows.
    private readonly Dictionary<string, List<string>> _read = new(StringComparer.OrdinalIgnoreCase);

    public IReadOnlyList<string> Errors => _errors;

    public IReadOnlyList<string> Warnings => _warnings;

    /// <summary>What relative file paths (certificates, CA bundles) are relative to: the configuration file's directory,
    /// so that the same file means the same thing whatever the working directory. Null: the working directory.</summary>
    public string? BaseDirectory { get; init; }

    public string FilePath(string path) => BaseDirectory is null ? path : System.IO.Path.GetFullPath(path, BaseDirectory);

    public void Error(string path, string message) => _errors.Add($"{path}: {message}");

    public void Warning(string path, string message) => _warnings.Add($"{path}: {message}");

    /// <summary>
    /// Starts checking <paramref name="section"/> for unknown settings: when the returned scope ends, each child that no
    /// reader asked for is warned about, usually a typo, with the nearest key that was asked for. A reader therefore
    /// asks for every setting of its section whatever the others hold, or names the ones it skips in
    /// <see cref="Known"/>. The warnings take the place in the list they would have had if the check ran first, so a
    /// section's typos come before what its settings warn about.
    /// </summary>
    /// <param name="explain">The warning for a key that is known elsewhere (a setting of another kind), or null.</param>
    public KnownKeysScope CheckKeys(IConfiguration section, Func<IConfigurationSection, IReadOnlyList<string>, string?>? explain = null) =>
        new(this, section, _warnings.Count, explain);

    /// <summary>The keys read under <paramref name="section"/> so far, in the order first read.</summary>
    public IReadOnlyList<string> KeysRead(IConfiguration section) =>
        _read.TryGetValue(PathOf(section), out var keys) ? keys : [];

    /// <summary>Counts settings as known that a reader leaves unread because it stopped at an error before them.</summary>
    public void Known(IConfiguration parent, params string[] keys)
    {
        foreach (var key in keys)
        {
            Record(parent, key);
        }
    }

    /// <summary>A setting as it stands, for its presence or its path; it counts as read.</summary>
    public IConfigurationSection Setting(IConfiguration parent, string key)
    {
        Record(parent, key);
        return parent.GetSection(key);
    }

    private void WarnUnknownKeys(IConfiguration section, int position, Func<IConfigurationSection, IReadOnlyList<string>, string?>? explain)
    {
        var known = KeysRead(section);
        var warnings = new List<string>();
        foreach (var child in section.GetChildren())
        {
            if (known.Contains(child.Key, StringComparer.OrdinalIgnoreCase))
            {
                continue;
            }
            var message = explain?.Invoke(child, known)
                ?? (Suggest(child.Key, known) is { } suggestion ? $"unknown setting (did you mean '{suggestion}'?)" : "unknown setting");
            warnings.Add($"{child.Path}: {message}");
        }
        _warnings.InsertRange(position, warnings);
    }

    private void Record(IConfiguration parent, string key)
    {
        var path = PathOf(parent);
        if (!_read.TryGetValue(path, out var keys))
        {
            _read[path] = keys = [];
        }
        if (!keys.Contains(key, StringComparer.OrdinalIgnoreCase))
        {
            keys.Add(key);
        }
    }

    private static string PathOf(IConfiguration section) => section is IConfigurationSection s ? s.Path : "";

    /// <summary>Ends the unknown-key check <see cref="CheckKeys"/> started.</summary>
    public readonly struct KnownKeysScope(ConfigReader reader, IConfiguration section, int position,
        Func<IConfigurationSection, IReadOnlyList<string>, string?>? explain) : IDisposable
    {
        public void Dispose() => reader.WarnUnknownKeys(section, position, explain);
    }

    /// <summary>A settings section such as KeepAlive; a plain value in its place is an error and reads as empty.</summary>
    public IConfigurationSection Section(IConfiguration parent, string key)
    {
        var section = Setting(parent, key);
        if (!HasChildren(section) && !string.IsNullOrWhiteSpace(section.Value))
        {
            Error(section.Path, $"expected a section, found the value '{section.Value}'");
        }

        return section;
    }

    /// <summary>The named entries of a map such as Clusters or Destinations (a JSON array gives the ids 0, 1, ...).</summary>
    public IReadOnlyList<IConfigurationSection> Entries(IConfiguration parent, string key)
    {
        var map = Section(parent, key);
        var entries = new List<IConfigurationSection>();
        foreach (var entry in map.GetChildren())
        {
            if (!HasChildren(entry) && !string.IsNullOrWhiteSpace(entry.Value))
            {
                Error(entry.Path, $"expected a section, found the value '{entry.Value}'");
                continue;
            }

            entries.Add(entry);
        }

        return entries;
    }

    /// <summary>
    /// Reads a scalar. Returns false (error reported) when a section stands where a value is expected;
    /// <paramref name="value"/> is null when the setting is absent or empty.
    /// </summary>
    public bool TryScalar(IConfiguration parent, string key, out string? value, out string path)
    {
        var section = Setting(parent, key);
        path = section.Path;
        value = null;
        if (HasChildren(section))
        {
            Error(path, "expected a value, found a section");
            return false;
        }

        value = string.IsNullOrWhiteSpace(section.Value) ? null : section.Value.Trim();
        return true;
    }

    /// <summary>One of a fixed set of names (case-insensitive); an error naming the choices otherwise.</summary>
    public T Choice<T>(IConfiguration parent, string key, T defaultValue, string what, params (string Name, T Value)[] choices)
    {
        if (String(parent, key) is not { } text)
        {
            return defaultValue;
        }
        foreach (var (name, value) in choices)
        {
            if (text.Equals(name, StringComparison.OrdinalIgnoreCase))
            {
                return value;
            }
        }
        Error(parent.GetSection(key).Path, $"'{text}' is not {what} ({string.Join(", ", choices.Select(c => c.Name))})");
        return defaultValue;
    }

    public string? String(IConfiguration parent, string key) =>
        TryScalar(parent, key, out var value, out _) ? value : null;

    public string? RequiredString(IConfiguration parent, string key)
    {
        if (!TryScalar(parent, key, out var value, out var path))
        {
            return null;
        }

        if (value is null)
        {
            Error(path, "required");
        }

        return value;
    }

    public int Int(IConfiguration parent, string key, int defaultValue, int min = int.MinValue, int max = int.MaxValue)
    {
        if (!TryScalar(parent, key, out var text, out var path) || text is null)
        {
            return defaultValue;
        }

        if (!int.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var value))
        {
            Error(path, $"'{text}' is not an integer");
            return defaultValue;
        }

        if (value < min || value > max)
        {
            Error(path, max == int.MaxValue ? $"'{text}' must be >= {min}" : $"'{text}' must be between {min} and {max}");
            return defaultValue;
        }

        return value;
    }

    /// <summary>A size in bytes: a plain integer, or one followed by k, m or g (KiB, MiB, GiB; nginx's spelling, "KiB",
    /// "MiB" and "GiB" are accepted too). Never negative.</summary>
    public long Size(IConfiguration parent, string key, long defaultValue)
    {
        if (!TryScalar(parent, key, out var text, out var path) || text is null)
        {
            return defaultValue;
        }

        if (!TryParseSize(text, out var value))
        {
            Error(path, $"'{text}' is not a size in bytes (e.g. 1048576, 512k, 100m, 2g)");
            return defaultValue;
        }

        return value;
    }

    public static bool TryParseSize(string text, out long value)
    {
        value = 0;
        var span = text.AsSpan().Trim();
        var unit = 1L;
        var suffix = span.IndexOfAnyExceptInRange('0', '9');
        if (suffix >= 0)
        {
            unit = span[suffix..].ToString().ToLowerInvariant() switch
            {
                "k" or "kib" => 1024L,
                "m" or "mib" => 1024L * 1024,
                "g" or "gib" => 1024L * 1024 * 1024,
                _ => 0,
            };
            span = span[..suffix];
        }

        if (unit == 0 || span.IsEmpty || !long.TryParse(span, NumberStyles.None, CultureInfo.InvariantCulture, out var number)
            || number > long.MaxValue / unit)
        {
            return false;
        }

        value = number * unit;
        return true;
    }

    public bool Bool(IConfiguration parent, string key, bool defaultValue)
    {
        if (!TryScalar(parent, key, out var text, out var path) || text is null)
        {
            return defaultValue;
        }

        if (!bool.TryParse(text, out var value))
        {
            Error(path, $"'{text}' is not a boolean (true or false)");
            return defaultValue;
        }

        return value;
    }

    public TimeSpan Duration(IConfiguration parent, string key, TimeSpan defaultValue, bool positive = false)
    {
        if (!TryScalar(parent, key, out var text, out var path) || text is null)
        {
            return defaultValue;
        }

        return ParseDuration(path, text, positive, out var value) ? value : defaultValue;
    }

    public bool ParseDuration(string path, string text, bool positive, out TimeSpan value)
    {
        if (!Durations.TryParse(text, out value))
        {
            Error(path, $"'{text}' is not a duration (e.g. {Durations.Examples})");
            return false;
        }

        if (value < TimeSpan.Zero)
        {
            Error(path, $"'{text}' must not be negative");
            return false;
        }

        if (positive && value == TimeSpan.Zero)
        {
            Error(path, $"'{text}' must be greater than zero");
            return false;
        }

        return true;
    }

    /// <summary>A list of strings: a JSON array (keys 0, 1, ...) or a single value. Empty items are errors.</summary>
    public IReadOnlyList<(string Path, string Value)> List(IConfiguration parent, string key)
    {
        var section = Setting(parent, key);
        if (!HasChildren(section))
        {
            return string.IsNullOrWhiteSpace(section.Value) ? [] : [(section.Path, section.Value.Trim())];
        }

        var items = new List<(int Index, string Path, string Value)>();
        foreach (var item in section.GetChildren())
        {
            if (!int.TryParse(item.Key, NumberStyles.None, CultureInfo.InvariantCulture, out var index))
            {
                Error(item.Path, "expected a list item");
            }
            else if (HasChildren(item))
            {
                Error(item.Path, "expected a value, found a section");
            }
            else if (string.IsNullOrWhiteSpace(item.Value))
            {
                Error(item.Path, "empty value");
            }
            else
            {
                items.Add((index, item.Path, item.Value.Trim()));
            }
        }

        return [.. items.OrderBy(i => i.Index).Select(i => (i.Path, i.Value))];
    }

    /// <summary>The candidate closest to <paramref name="key"/>, if close enough to be a likely typo.</summary>
    public static string? Suggest(string key, IEnumerable<string> candidates)
    {
        // About one edit per three characters: catches dropped, doubled and swapped letters without proposing
        // unrelated names for short keys.
        var threshold = Math.Clamp(key.Length / 3, 1, 3);
        string? best = null;
        var bestDistance = int.MaxValue;
        foreach (var candidate in candidates)
        {
            var distance = EditDistance(key, candidate);
            if (distance <= threshold && distance < bestDistance)
            {
                best = candidate;
                bestDistance = distance;
            }
        }

        return best;
    }

    /// <summary>Levenshtein distance, ignoring case (configuration keys are case-insensitive).</summary>
    public static int EditDistance(string a, string b)
    {
        var previous = new int[b.Length + 1];
        var current = new int[b.Length + 1];
        for (var j = 0; j <= b.Length; j++)
        {
            previous[j] = j;
        }

        for (var i = 1; i <= a.Length; i++)
        {
            current[0] = i;
            for (var j = 1; j <= b.Length; j++)
            {
                var cost = char.ToUpperInvariant(a[i - 1]) == char.ToUpperInvariant(b[j - 1]) ? 0 : 1;
                current[j] = Math.Min(Math.Min(previous[j] + 1, current[j - 1] + 1), previous[j - 1] + cost);
            }

            (previous, current) = (current, previous);
        }

        return previous[b.Length];
    }

    private static bool HasChildren(IConfiguration section) => section.GetChildren().Any();

    // RFC 9110 §5.6.2 tchar.
    public static bool IsTokenChar(char c) =>
        char.IsAsciiLetterOrDigit(c) || "!#$%&'*+-.^_`|~".Contains(c);
}
