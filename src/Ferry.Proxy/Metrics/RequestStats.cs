using System.Text.Json;
using Ferry.Errors;
using Ferry.Forwarding;

namespace Ferry.Metrics;

// Requests and 5xx responses per second over the last ten minutes, for the status page's chart. A ring of one-second
// buckets indexed by Unix second: a bucket whose second has passed is reset when that slot comes round again.
internal sealed class RequestStats(TimeProvider time)
{
    public const int WindowSeconds = 600;

    // A 5xx the destination sent itself, as opposed to one Ferry generated with a Proxy-Status error.
    public const string DestinationCause = "destination_5xx";

    private static readonly ProxyError[] Errors = Enum.GetValues<ProxyError>();

    private readonly Lock _lock = new();
    private readonly long[] _second = new long[WindowSeconds];                  // Unix second a slot holds; -1 = empty
    private readonly int[] _requests = new int[WindowSeconds];                  // requests completed in that second
    private readonly int[,] _errors = new int[WindowSeconds, Errors.Length];    // 5xx by ProxyError (None = destination)

    public void Record(RequestRecord record)
    {
        var now = time.GetUtcNow().ToUnixTimeSeconds();
        lock (_lock)
        {
            var slot = Slot(now);
            _requests[slot]++;
            if (record.Status >= 500)
            {
                _errors[slot, (int)record.Error]++;
            }
        }
    }

    // {"end": <Unix second, last bucket>, "requests": [oldest..newest], "errors": {"<cause>": [oldest..newest]}}
    // Only causes seen in the window appear; causes that share an RFC 9209 type are summed under it.
    public void WriteJson(Utf8JsonWriter json, int seconds)
    {
        seconds = Math.Clamp(seconds, 1, WindowSeconds);
        var end = time.GetUtcNow().ToUnixTimeSeconds();
        var requests = new int[seconds];
        var errors = new SortedDictionary<string, int[]>(StringComparer.Ordinal);
        lock (_lock)
        {
            for (var i = 0; i < seconds; i++)
            {
                var second = end - seconds + 1 + i;
                var slot = (int)(second % WindowSeconds);
                if (_second[slot] != second)
                {
                    continue;
                }
                requests[i] = _requests[slot];
                for (var e = 0; e < Errors.Length; e++)
                {
                    if (_errors[slot, e] > 0)
                    {
                        var cause = Errors[e] == ProxyError.None ? DestinationCause : ProxyErrorTable.Of(Errors[e]).Type;
                        if (!errors.TryGetValue(cause, out var series))
                        {
                            errors[cause] = series = new int[seconds];
                        }
                        series[i] += _errors[slot, e];
                    }
                }
            }
        }
        json.WriteStartObject();
        json.WriteNumber("end", end);
        json.WriteStartArray("requests");
        foreach (var n in requests)
        {
            json.WriteNumberValue(n);
        }
        json.WriteEndArray();
        json.WriteStartObject("errors");
        foreach (var (cause, series) in errors)
        {
            json.WriteStartArray(cause);
            foreach (var n in series)
            {
                json.WriteNumberValue(n);
            }
            json.WriteEndArray();
        }
        json.WriteEndObject();
        json.WriteEndObject();
    }

    private int Slot(long second)
    {
        var slot = (int)(second % WindowSeconds);
        if (_second[slot] != second)
        {
            _second[slot] = second;
            _requests[slot] = 0;
            for (var e = 0; e < Errors.Length; e++)
            {
                _errors[slot, e] = 0;
            }
        }
        return slot;
    }
}
