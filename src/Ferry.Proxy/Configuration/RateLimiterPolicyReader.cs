using Microsoft.Extensions.Configuration;

namespace Ferry.Configuration;

/// <summary>Reads RateLimiterPolicies:&lt;name&gt;; each Kind has its own settings.</summary>
internal static class RateLimiterPolicyReader
{
    // The settings each Kind reads, found by reading each from an empty section: a setting of another kind (a Window
    // on a token bucket) is then named as such rather than as a typo.
    private static readonly Dictionary<RateLimiterKind, IReadOnlyList<string>> KindKeys =
        Enum.GetValues<RateLimiterKind>().ToDictionary(kind => kind, kind =>
        {
            var scratch = new ConfigReader();
            var empty = new ConfigurationBuilder().Build().GetSection("Policy");
            ReadKindSettings(scratch, empty, kind);
            return scratch.KeysRead(empty);
        });

    // Null when the policy has errors (reported at their paths).
    public static RateLimiterPolicyConfig? Read(ConfigReader reader, IConfigurationSection section)
    {
        var errors = reader.Errors.Count;
        var kinds = Enum.GetValues<RateLimiterKind>();
        var kind = reader.Choice<RateLimiterKind?>(section, "Kind", null, "a rate limiter kind", kinds.Select(k => (k.ToString(), (RateLimiterKind?)k)).ToArray());
        if (kind is null)
        {
            if (reader.Errors.Count == errors)
            {
                reader.Error(section.GetSection("Kind").Path, $"required ({string.Join(", ", kinds)})");
            }
            return null;
        }

        var own = KindKeys[kind.Value];
        using var keys = reader.CheckKeys(section, (child, _) =>
            KindKeys.Values.Any(k => k.Contains(child.Key, StringComparer.OrdinalIgnoreCase))
                ? $"has no effect with Kind {kind} (its settings: {string.Join(", ", own)})"
                : null);
        var (limit, tokensPerPeriod, period, segments) = ReadKindSettings(reader, section, kind.Value);

        var key = reader.Choice(section, "Key", RateLimiterKey.ClientIp, "a rate limiter key",
            Enum.GetValues<RateLimiterKey>().Select(k => (k.ToString(), k)).ToArray());
        var name = reader.String(section, "Name");
        if (key == RateLimiterKey.Header && name is null)
        {
            reader.Error(section.GetSection("Name").Path, "required when Key is Header (the header's name)");
        }
        else if (key != RateLimiterKey.Header && name is not null)
        {
            reader.Warning(section.GetSection("Name").Path, $"has no effect unless Key is {RateLimiterKey.Header}");
        }
        else if (name is not null && !name.All(ConfigReader.IsTokenChar))
        {
            reader.Error(section.GetSection("Name").Path, $"'{name}' is not a header name");
        }

        var queueLimit = reader.Int(section, "QueueLimit", 0, min: 0, max: 1_000_000);
        var newestFirst = reader.Choice(section, "QueueProcessingOrder", false, "a queue processing order", ("OldestFirst", false), ("NewestFirst", true));
        if (queueLimit == 0 && section.GetSection("QueueProcessingOrder").Value is not null)
        {
            reader.Warning(section.GetSection("QueueProcessingOrder").Path, "has no effect without QueueLimit");
        }
        var maxPartitions = reader.Int(section, "MaxPartitions", RateLimiterPolicyConfig.DefaultMaxPartitions, min: 1, max: 10_000_000);
        if (key == RateLimiterKey.Route && section.GetSection("MaxPartitions").Value is not null)
        {
            reader.Warning(section.GetSection("MaxPartitions").Path, "has no effect when Key is Route (one partition per route)");
        }

        if (reader.Errors.Count != errors)
        {
            return null;
        }
        return new RateLimiterPolicyConfig(section.Key, kind.Value, limit)
        {
            Key = key,
            HeaderName = key == RateLimiterKey.Header ? name : null,
            TokensPerPeriod = tokensPerPeriod,
            Period = period,
            SegmentsPerWindow = segments,
            QueueLimit = queueLimit,
            NewestFirst = newestFirst,
            MaxPartitions = maxPartitions,
        };
    }

    private static (int Limit, int TokensPerPeriod, TimeSpan Period, int Segments) ReadKindSettings(ConfigReader reader, IConfiguration section, RateLimiterKind kind)
    {
        var limit = kind == RateLimiterKind.TokenBucket
            ? RequiredInt(reader, section, "TokenLimit", min: 1)
            : RequiredInt(reader, section, "PermitLimit", min: 1);
        var tokensPerPeriod = kind == RateLimiterKind.TokenBucket ? RequiredInt(reader, section, "TokensPerPeriod", min: 1) : 0;
        var period = kind switch
        {
            RateLimiterKind.TokenBucket => RequiredPeriod(reader, section, "ReplenishmentPeriod"),
            RateLimiterKind.FixedWindow or RateLimiterKind.SlidingWindow => RequiredPeriod(reader, section, "Window"),
            _ => TimeSpan.Zero,
        };
        var segments = 1;
        if (kind == RateLimiterKind.SlidingWindow)
        {
            segments = RequiredInt(reader, section, "SegmentsPerWindow", min: 1);
            if (segments > 0 && period > TimeSpan.Zero && period / segments < RateLimiterPolicyConfig.MinPeriod)
            {
                reader.Error(section.GetSection("SegmentsPerWindow").Path,
                    $"'{segments}' makes segments of {Milliseconds(period / segments)}; each must last at least {Milliseconds(RateLimiterPolicyConfig.MinPeriod)}");
            }
        }
        return (limit, tokensPerPeriod, period, segments);
    }

    private static int RequiredInt(ConfigReader reader, IConfiguration section, string key, int min)
    {
        if (reader.String(section, key) is null)
        {
            reader.Error(section.GetSection(key).Path, "required");
            return 0;
        }
        return reader.Int(section, key, 0, min: min);
    }

    private static string Milliseconds(TimeSpan value) =>
        value.TotalMilliseconds.ToString("0.###", System.Globalization.CultureInfo.InvariantCulture) + "ms";

    private static TimeSpan RequiredPeriod(ConfigReader reader, IConfiguration section, string key)
    {
        if (reader.String(section, key) is null)
        {
            reader.Error(section.GetSection(key).Path, "required");
            return TimeSpan.Zero;
        }
        var period = reader.Duration(section, key, TimeSpan.Zero, positive: true);
        if (period > TimeSpan.Zero && period < RateLimiterPolicyConfig.MinPeriod)
        {
            reader.Error(section.GetSection(key).Path,
                $"'{reader.String(section, key)}' is shorter than {Milliseconds(RateLimiterPolicyConfig.MinPeriod)}, the step at which limits replenish");
            return TimeSpan.Zero;
        }
        return period;
    }
}
