using System.Globalization;
using Ferry.Configuration;

namespace Ferry.Doctor;

internal sealed partial class NginxImporter
{
    // limit_req_zone KEY zone=NAME:SIZE rate=Nr/s|Nr/m; limit_conn_zone KEY zone=NAME:SIZE. nginx keeps one state per
    // key in the zone's shared memory; Ferry keeps one partition per key, at most MaxPartitions.
    private Dictionary<string, Zone?> ImportZones(NginxDirective http, string directive)
    {
        var zones = new Dictionary<string, Zone?>(StringComparer.Ordinal);
        foreach (var zone in http.Children(directive))
        {
            var parameters = zone.Args.Skip(1).Select(a => a.Split('=', 2)).Where(p => p.Length == 2).ToDictionary(p => p[0], p => p[1], StringComparer.Ordinal);
            if (!parameters.TryGetValue("zone", out var zoneText) || zoneText.Split(':') is not [var name, var size] || name.Length == 0)
            {
                Note(zone, $"\"{zone}\" not translated: no zone=name:size");
                continue;
            }

            var key = zone.Arg(0);
            string? header = null;
            if (key.StartsWith("$http_", StringComparison.Ordinal) && key.Length > "$http_".Length && key.IndexOf('$', 1) < 0)
            {
                // nginx's $http_x_api_key is the header X-Api-Key: lower case, '-' written as '_'.
                header = string.Join('-', key["$http_".Length..].Split('_').Select(w => w.Length == 0 ? w : char.ToUpperInvariant(w[0]) + w[1..]));
            }
            else if (key is not ("$binary_remote_addr" or "$remote_addr"))
            {
                Note(zone, $"\"{zone}\" not translated: Ferry partitions by the client address ($binary_remote_addr, $remote_addr) or one " +
                           "request header ($http_name); the locations limited by this zone are not limited");
                zones[name] = null;
                continue;
            }

            double? rate = null;
            if (directive == "limit_req_zone")
            {
                rate = parameters.TryGetValue("rate", out var rateText) ? ParseRate(rateText) : null;
                if (rate is null)
                {
                    Note(zone, $"\"{zone}\" not translated: rate must be N r/s or N r/m; the locations limited by this zone are not limited");
                    zones[name] = null;
                    continue;
                }
            }

            zones[name] = new Zone(name, header, ConfigReader.TryParseSize(size, out var bytes) ? bytes / 1024.0 / 1024.0 : 0, rate);
        }

        return zones;
    }

    private static double? ParseRate(string text)
    {
        var perMinute = text.EndsWith("r/m", StringComparison.Ordinal);
        if (!perMinute && !text.EndsWith("r/s", StringComparison.Ordinal))
        {
            return null;
        }

        return int.TryParse(text.AsSpan(0, text.Length - 3), NumberStyles.None, CultureInfo.InvariantCulture, out var n) && n > 0
            ? perMinute ? n / 60.0 : n
            : null;
    }

    // The rate limit of a location: its limit_req (or, without one, its limit_conn), inherited from server and http
    // like nginx's array directives: from the innermost level that has any.
    private string? ImportRateLimit(IReadOnlyList<NginxDirective> scope)
    {
        var requests = Effective(scope, "limit_req").ToList();
        var connections = Effective(scope, "limit_conn").ToList();
        foreach (var ignored in requests.Skip(1).Concat(requests.Count > 0 ? connections : connections.Skip(1)))
        {
            Note(ignored, $"\"{ignored}\" not translated: a Ferry route has one rate limiter policy");
        }

        if (requests.Count > 0)
        {
            NoteStatus(scope, requests[0], "limit_req_status");
            return ImportLimitReq(requests[0]);
        }

        if (connections.Count > 0)
        {
            NoteStatus(scope, connections[0], "limit_conn_status");
            return ImportLimitConn(connections[0]);
        }

        return null;
    }

    // nginx refuses with 503 unless limit_req_status says otherwise; Ferry always answers 429 with Retry-After.
    private void NoteStatus(IReadOnlyList<NginxDirective> scope, NginxDirective limit, string directive)
    {
        var status = scope.Select(level => level.Child(directive)).LastOrDefault(d => d is not null);
        if (status?.Arg(0) is not (null or "429"))
        {
            Note(status, $"\"{status}\" not translated: Ferry refuses with 429 Too Many Requests and a Retry-After header");
        }
        else if (status is null)
        {
            Note(limit, $"\"{limit}\": without {directive} nginx refuses with 503; Ferry refuses with 429 Too Many Requests and a Retry-After header");
        }
    }

    // limit_req zone=NAME [burst=B] [nodelay | delay=D]. nginx's limit_req is a leaky bucket: requests leave at the
    // zone's rate, up to B wait in the bucket and are delayed to that rate, and more are refused; with nodelay the B
    // excess requests are answered at once but still take their place in the bucket, which empties at the rate; with
    // delay=D the first D are answered at once and the rest delayed. The token bucket that behaves the same holds
    // D + 1 tokens (B + 1 with nodelay, 1 by default: the request itself plus the excess nginx answers at once),
    // refills at the rate, and queues up to B - D requests (QueueLimit) until a token comes: those are nginx's delayed
    // ones. What differs: nginx spaces delayed requests exactly 1/rate apart, Ferry releases them as the bucket
    // refills (every 100 ms at most); nginx accounts in milliseconds per key, Ferry in whole tokens.
    private string? ImportLimitReq(NginxDirective limit)
    {
        var parameters = limit.Args.Select(a => a.Split('=', 2)).ToDictionary(p => p[0], p => p.Length == 2 ? p[1] : "", StringComparer.Ordinal);
        if (!parameters.TryGetValue("zone", out var zoneName) || !_requestZones.TryGetValue(zoneName, out var zone))
        {
            Note(limit, $"\"{limit}\" not translated: no limit_req_zone in this http block defines the zone");
            return null;
        }

        if (zone is null)
        {
            return null;
        }

        var burst = parameters.TryGetValue("burst", out var burstText) && int.TryParse(burstText, NumberStyles.None, CultureInfo.InvariantCulture, out var b) ? b : 0;
        var immediate = parameters.ContainsKey("nodelay") ? burst
            : parameters.TryGetValue("delay", out var delayText) && int.TryParse(delayText, NumberStyles.None, CultureInfo.InvariantCulture, out var d) ? Math.Min(d, burst)
            : 0;
        var (tokens, periodMilliseconds) = Replenishment(zone.RequestsPerSecond!.Value);
        var settings = new List<(string Key, object Value)>
        {
            ("Kind", nameof(RateLimiterKind.TokenBucket)),
            ("TokenLimit", immediate + 1),
            ("TokensPerPeriod", tokens),
            ("ReplenishmentPeriod", periodMilliseconds.ToString("0.###", CultureInfo.InvariantCulture) + "ms"),
        };
        if (burst > immediate)
        {
            settings.Add(("QueueLimit", burst - immediate));
        }

        return AddPolicy(limit, zone, settings);
    }

    // limit_conn ZONE N: at most N requests of one key in progress at once (nginx counts requests, not connections,
    // once the request head is read; over HTTP/2 each stream counts), which is a concurrency limiter.
    private string? ImportLimitConn(NginxDirective limit)
    {
        if (!_connectionZones.TryGetValue(limit.Arg(0), out var zone))
        {
            Note(limit, $"\"{limit}\" not translated: no limit_conn_zone in this http block defines the zone");
            return null;
        }

        if (zone is null)
        {
            return null;
        }

        if (!int.TryParse(limit.Arg(1), NumberStyles.None, CultureInfo.InvariantCulture, out var permits) || permits < 1)
        {
            Note(limit, $"\"{limit}\" not translated: the limit must be a positive number");
            return null;
        }

        return AddPolicy(limit, zone, [("Kind", nameof(RateLimiterKind.Concurrency)), ("PermitLimit", permits)]);
    }

    // The fewest whole tokens per period of at least 100 ms (Ferry's replenishment step) that make the rate exactly:
    // 10r/s is 1 token per 100ms, 30r/m 1 per 2000ms, 15r/s 2 per 133.333ms.
    private static (int Tokens, double PeriodMilliseconds) Replenishment(double requestsPerSecond)
    {
        var interval = 1000 / requestsPerSecond;
        var tokens = (int)Math.Ceiling(RateLimiterPolicyConfig.MinPeriod.TotalMilliseconds / interval - 1e-9);
        tokens = Math.Max(tokens, 1);
        return (tokens, Math.Round(tokens * interval, 3));
    }

    private string AddPolicy(NginxDirective limit, Zone zone, List<(string Key, object Value)> settings)
    {
        if (zone.HeaderName is { } header)
        {
            settings.Add(("Key", nameof(RateLimiterKey.Header)));
            settings.Add(("Name", header));
        }

        // nginx: one megabyte of zone holds about 16 000 states of 64 bytes; Ferry's default (100 000) is kept when larger.
        var states = (int)Math.Min(zone.Mebibytes * 16_000, int.MaxValue);
        if (states > 0 && states < RateLimiterPolicyConfig.DefaultMaxPartitions)
        {
            settings.Add(("MaxPartitions", states));
        }

        var signature = zone.Name + "|" + string.Join(';', settings.Select(s => $"{s.Key}={s.Value}"));
        if (_policyFor.TryGetValue(signature, out var existing))
        {
            return existing;
        }

        var name = zone.Name;
        for (var i = 2; _policies.ContainsKey(name); i++)
        {
            name = $"{zone.Name}-{i}";
        }

        if (name != zone.Name)
        {
            Note(limit, $"\"{limit}\": zone \"{zone.Name}\" is also used with other parameters; nginx shares one state per key between " +
                        $"them, Ferry gives these locations their own policy \"{name}\" and budgets");
        }

        _policies[name] = settings;
        _policyFor[signature] = name;
        return name;
    }
}
