using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Configuration;

namespace Ferry.Configuration;

/// <summary>Reads the parts of a cluster that decide which destination may take a request: HealthCheck, Panic,
/// MaxConnections with Queue and AdaptiveLimit, Retry and Hash.</summary>
internal static class HealthReader
{
    public static HealthCheckConfig ReadHealthCheck(ConfigReader reader, IConfiguration cluster)
    {
        var section = reader.Section(cluster, "HealthCheck");
        using var keys = reader.CheckKeys(section);

        var passive = reader.Section(section, "Passive");
        using var passiveKeys = reader.CheckKeys(passive);
        var p = PassiveHealthConfig.Default;
        var passiveConfig = new PassiveHealthConfig(
            Enabled: reader.Bool(passive, "Enabled", p.Enabled),
            MaxFailures: reader.Int(passive, "MaxFailures", p.MaxFailures, min: 1),
            FailureWindow: reader.Duration(passive, "FailureWindow", p.FailureWindow, positive: true),
            ReactivationPeriod: reader.Duration(passive, "ReactivationPeriod", p.ReactivationPeriod, positive: true),
            FailureStatuses: ReadStatuses(reader, passive, "FailureStatuses", 500));

        var active = reader.Section(section, "Active");
        using var activeKeys = reader.CheckKeys(active);
        var a = ActiveHealthConfig.Default;
        var interval = reader.Duration(active, "Interval", a.Interval, positive: true);
        var timeout = reader.Duration(active, "Timeout", a.Timeout, positive: true);
        if (timeout > interval)
        {
            // A check still running when the next one is due would overlap it on another connection.
            reader.Error(active.GetSection("Timeout").Path, "must not exceed Interval");
        }
        var method = reader.String(active, "Method") ?? a.Method;
        if (!method.All(ConfigReader.IsTokenChar))
        {
            reader.Error(active.GetSection("Method").Path, $"'{method}' is not an HTTP method");
        }
        var path = RouteReader.ReadPath(reader, active, "Path") ?? a.Path;
        var expected = ReadStatusRanges(reader, active, "ExpectedStatuses") ?? a.ExpectedStatuses;
        var jitter = a.Jitter;
        if (reader.String(active, "Jitter") is { } jitterText)
        {
            if (!double.TryParse(jitterText, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out jitter)
                || jitter < 0 || jitter > 0.5)
            {
                reader.Error(active.GetSection("Jitter").Path, $"'{jitterText}' must be a number between 0 and 0.5 (a fraction of Interval)");
                jitter = a.Jitter;
            }
        }
        var activeConfig = new ActiveHealthConfig(
            Enabled: reader.Bool(active, "Enabled", a.Enabled),
            Interval: interval,
            Timeout: timeout,
            Method: HttpMethods.GetCanonicalizedValue(method),
            Path: path,
            ExpectedStatuses: expected,
            Rise: reader.Int(active, "Rise", a.Rise, min: 1, max: 100),
            Fall: reader.Int(active, "Fall", a.Fall, min: 1, max: 100),
            Jitter: jitter);
        return new HealthCheckConfig(passiveConfig, activeConfig);
    }

    public static PanicConfig ReadPanic(ConfigReader reader, IConfiguration cluster)
    {
        var section = reader.Section(cluster, "Panic");
        using var keys = reader.CheckKeys(section);
        return new PanicConfig(reader.Bool(section, "Enabled", PanicConfig.Default.Enabled));
    }

    public static ConnectionLimitConfig ReadConnectionLimit(ConfigReader reader, IConfiguration cluster)
    {
        var defaults = ConnectionLimitConfig.Default;
        var max = reader.Int(cluster, "MaxConnections", defaults.MaxConnections, min: 0);
        var adaptive = ReadAdaptiveLimit(reader, cluster);
        var queue = reader.Section(cluster, "Queue");
        using var queueKeys = reader.CheckKeys(queue);
        if (max == 0 && !adaptive.Enabled && queue.GetChildren().Any())
        {
            reader.Warning(queue.Path, "has no effect without MaxConnections or AdaptiveLimit");
        }
        return new ConnectionLimitConfig(
            MaxConnections: max,
            QueueSize: reader.Int(queue, "Size", defaults.QueueSize, min: 0),
            QueueTimeout: reader.Duration(queue, "Timeout", defaults.QueueTimeout, positive: true))
        {
            Adaptive = adaptive,
        };
    }

    private static AdaptiveLimitConfig ReadAdaptiveLimit(ConfigReader reader, IConfiguration cluster)
    {
        var section = reader.Section(cluster, "AdaptiveLimit");
        using var keys = reader.CheckKeys(section);
        var defaults = AdaptiveLimitConfig.Default;
        var min = reader.Int(section, "Min", defaults.Min, min: 1, max: 100_000);
        var max = reader.Int(section, "Max", defaults.Max, min: 1, max: 100_000);
        if (max < min)
        {
            reader.Error(section.Path, $"Max ({max}) is below Min ({min})");
            max = min;
        }
        return new AdaptiveLimitConfig(
            Enabled: reader.Bool(section, "Enabled", defaults.Enabled),
            Min: min,
            Max: max,
            Initial: reader.Int(section, "Initial", defaults.Initial, min: 1, max: 100_000));
    }

    public static RetryConfig ReadRetry(ConfigReader reader, IConfiguration cluster)
    {
        var section = reader.Section(cluster, "Retry");
        using var keys = reader.CheckKeys(section);
        var defaults = RetryConfig.Default;
        return new RetryConfig(
            Tries: reader.Int(section, "Tries", defaults.Tries, min: 1, max: 100),
            Timeout: reader.Duration(section, "Timeout", defaults.Timeout),
            OnErrors: reader.Bool(section, "OnErrors", defaults.OnErrors),
            // From 400: retrying a success or a redirect elsewhere would only hide an answer (nginx accepts http_403 up).
            Statuses: ReadStatuses(reader, section, "Statuses", 400));
    }

    public static HashConfig ReadHash(ConfigReader reader, IConfiguration cluster, string policy)
    {
        var section = reader.Section(cluster, "Hash");
        using var keys = reader.CheckKeys(section);
        var defaults = HashConfig.Default;
        if (policy != LoadBalancingPolicies.ConsistentHash && section.GetChildren().Any())
        {
            reader.Warning(section.Path, $"has no effect unless LoadBalancingPolicy is {LoadBalancingPolicies.ConsistentHash}");
        }
        var key = reader.Choice(section, "Key", defaults.Key, "a hash key",
            Enum.GetValues<HashKeyKind>().Select(k => (k.ToString(), k)).ToArray());
        var name = reader.String(section, "Name");
        if (key != HashKeyKind.ClientIp && name is null)
        {
            reader.Error(section.GetSection("Name").Path, $"required when Key is {key}");
        }
        else if (name is not null && !name.All(ConfigReader.IsTokenChar))
        {
            reader.Error(section.GetSection("Name").Path, $"'{name}' is not a header or cookie name");
        }
        return new HashConfig(key, name, reader.Int(section, "VirtualNodes", defaults.VirtualNodes, min: 1, max: 10_000));
    }

    // Status codes from `min` to 599, e.g. [502, 503, 504].
    private static int[] ReadStatuses(ConfigReader reader, IConfiguration section, string key, int min)
    {
        var statuses = new List<int>();
        foreach (var (path, text) in reader.List(section, key))
        {
            if (int.TryParse(text, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var status)
                && status >= min && status <= 599)
            {
                statuses.Add(status);
            }
            else
            {
                reader.Error(path, $"'{text}' is not a status code from {min} to 599");
            }
        }
        return [.. statuses.Distinct()];
    }

    // Status codes or ranges, e.g. ["200-299", "302"]; null when absent.
    private static StatusRange[]? ReadStatusRanges(ConfigReader reader, IConfiguration section, string key)
    {
        var items = reader.List(section, key);
        if (items.Count == 0)
        {
            return null;
        }
        var ranges = new List<StatusRange>();
        foreach (var (path, text) in items)
        {
            var parts = text.Split('-', 2, StringSplitOptions.TrimEntries);
            if (int.TryParse(parts[0], System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var from)
                && int.TryParse(parts[^1], System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var to)
                && from >= 100 && to <= 599 && from <= to)
            {
                ranges.Add(new StatusRange(from, to));
            }
            else
            {
                reader.Error(path, $"'{text}' is not a status code or range from 100 to 599 (e.g. 200 or 200-399)");
            }
        }
        return [.. ranges];
    }
}
