using System.Globalization;
using Microsoft.Extensions.Configuration;

namespace Ferry.Configuration;

/// <summary>
/// Reads typed values from configuration sections by hand and collects every problem with its configuration path,
/// so that one start reports all of them. Absent or empty values read as the default.
/// </summary>
internal sealed class ConfigReader
{
    private readonly List<string> _errors = [];
    private readonly List<string> _warnings = [];

    public IReadOnlyList<string> Errors => _errors;

    public IReadOnlyList<string> Warnings => _warnings;

    /// <summary>What relative file paths (certificates, CA bundles) are relative to: the configuration file's directory,
    /// so that the same file means the same thing whatever the working directory. Null: the working directory.</summary>
    public string? BaseDirectory { get; init; }

    public string FilePath(string path) => BaseDirectory is null ? path : System.IO.Path.GetFullPath(path, BaseDirectory);

    public void Error(string path, string message) => _errors.Add($"{path}: {message}");

    public void Warning(string path, string message) => _warnings.Add($"{path}: {message}");

    /// <summary>Warns about each child of <paramref name="section"/> that is not a known setting: usually a typo.</summary>
    public void WarnUnknownKeys(IConfiguration section, IReadOnlyList<string> known)
    {
        foreach (var child in section.GetChildren())
        {
            if (!known.Contains(child.Key, StringComparer.OrdinalIgnoreCase))
            {
                var suggestion = Suggest(child.Key, known);
                Warning(child.Path, suggestion is null
                    ? "unknown setting"
                    : $"unknown setting (did you mean '{suggestion}'?)");
            }
        }
    }

    /// <summary>A settings section such as KeepAlive; a plain value in its place is an error and reads as empty.</summary>
    public IConfigurationSection Section(IConfiguration parent, string key)
    {
        var section = parent.GetSection(key);
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
        var section = parent.GetSection(key);
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
        var section = parent.GetSection(key);
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
}
