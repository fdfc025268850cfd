using System.Globalization;

namespace Ferry.Doctor;

/// <summary>
/// nginx time values (ngx_parse_time): a number with an optional unit, several parts allowed ("1m30s"); a bare
/// number is seconds. Units: ms, s, m, h, d, w.
/// </summary>
internal static class NginxTime
{
    public static bool TryParse(string text, out TimeSpan value)
    {
        value = TimeSpan.Zero;
        var s = text.AsSpan().Trim();
        if (s.IsEmpty)
        {
            return false;
        }

        while (!s.IsEmpty)
        {
            var digits = 0;
            while (digits < s.Length && char.IsAsciiDigit(s[digits]))
            {
                digits++;
            }

            if (digits == 0 || !long.TryParse(s[..digits], NumberStyles.None, CultureInfo.InvariantCulture, out var number))
            {
                return false;
            }

            s = s[digits..];
            TimeSpan unit;
            if (s.StartsWith("ms"))
            {
                unit = TimeSpan.FromMilliseconds(1);
                s = s[2..];
            }
            else if (s.IsEmpty)
            {
                unit = TimeSpan.FromSeconds(1);
            }
            else
            {
                unit = s[0] switch
                {
                    's' => TimeSpan.FromSeconds(1),
                    'm' => TimeSpan.FromMinutes(1),
                    'h' => TimeSpan.FromHours(1),
                    'd' => TimeSpan.FromDays(1),
                    'w' => TimeSpan.FromDays(7),
                    _ => TimeSpan.Zero,
                };
                if (unit == TimeSpan.Zero)
                {
                    return false;
                }

                s = s[1..];
            }

            value += unit * number;
        }

        return true;
    }

    /// <summary>"2s", "1500ms", "90s", "2h": an exact form both nginx and Ferry read, in seconds as operators write them.</summary>
    public static string Format(TimeSpan value)
    {
        if (value.Ticks % TimeSpan.TicksPerSecond != 0)
        {
            return $"{(long)value.TotalMilliseconds}ms";
        }

        var seconds = (long)value.TotalSeconds;
        return seconds != 0 && seconds % 3600 == 0 ? $"{seconds / 3600}h" : $"{seconds}s";
    }
}
