using System.Globalization;

namespace Ferry.Configuration;

/// <summary>
/// Durations as operators write them: "250ms", "5s", "1.5s", "2m", "1h", a TimeSpan ("00:00:05") or a bare number of
/// seconds. The sign is parsed so that "-1s" is reported as negative rather than as unreadable.
/// </summary>
internal static class Durations
{
    public const string Examples = "250ms, 5s, 1.5s, 2m, 1h, 00:00:05";

    public static bool TryParse(string text, out TimeSpan value)
    {
        value = default;
        var s = text.Trim();
        if (s.Length == 0)
        {
            return false;
        }

        if (s.Contains(':'))
        {
            return TimeSpan.TryParse(s, CultureInfo.InvariantCulture, out value);
        }

        // "ms" is checked before "s" and "m", which are its suffixes/prefix.
        (string Suffix, decimal TicksPerUnit)[] units =
        [
            ("ms", TimeSpan.TicksPerMillisecond),
            ("s", TimeSpan.TicksPerSecond),
            ("m", TimeSpan.TicksPerMinute),
            ("h", TimeSpan.TicksPerHour),
        ];
        decimal ticksPerUnit = TimeSpan.TicksPerSecond;
        foreach (var (suffix, ticks) in units)
        {
            if (s.EndsWith(suffix, StringComparison.OrdinalIgnoreCase))
            {
                s = s[..^suffix.Length].TrimEnd();
                ticksPerUnit = ticks;
                break;
            }
        }

        const NumberStyles style = NumberStyles.AllowLeadingSign | NumberStyles.AllowDecimalPoint;
        if (!decimal.TryParse(s, style, CultureInfo.InvariantCulture, out var number))
        {
            return false;
        }

        // Compared before multiplying: the product of a huge number and ticks per hour would overflow decimal itself.
        if (Math.Abs(number) > TimeSpan.MaxValue.Ticks / ticksPerUnit)
        {
            return false;
        }

        value = TimeSpan.FromTicks((long)decimal.Round(number * ticksPerUnit));
        return true;
    }
}
