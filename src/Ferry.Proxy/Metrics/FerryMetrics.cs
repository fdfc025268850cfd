using System.Diagnostics;
using System.Diagnostics.Metrics;
using Ferry.Errors;
using Ferry.Forwarding;
using Ferry.Loops;
using Ferry.Upstream;

namespace Ferry.Metrics;

// The "Ferry" meter. Request-level instruments are recorded from completed RequestRecords; pool, health and
// keep-alive instruments are observed from the live ProxyState when a reader (scrape, OTLP export) asks.
// Attribute names follow OpenTelemetry semantic conventions where one exists (error.type, http.connection.state);
// Ferry's own concepts are namespaced (ferry.route, ferry.cluster, ferry.destination).
internal sealed class FerryMetrics
{
    public const string MeterName = "Ferry";

    // Upstream timings on a LAN or loopback are sub-millisecond to a few milliseconds; ASP.NET Core's seconds buckets
    // start at 5 ms and would put every connect in the first bucket. The top buckets reach the default timeouts.
    private static readonly IReadOnlyList<double> UpstreamBuckets =
        [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

    private static readonly string[] StatusClasses = ["1xx", "1xx", "2xx", "3xx", "4xx", "5xx"];

    private readonly Counter<long> _requests;
    private readonly Histogram<double> _requestDuration;
    private readonly Counter<long> _attempts;
    private readonly Counter<long> _retries;
    private readonly Histogram<double> _connect;
    private readonly Histogram<double> _tlsHandshake;
    private readonly Histogram<double> _head;
    private readonly Histogram<double> _upstream;
    private readonly Counter<long> _reloads;
    private readonly Counter<long> _rateLimited;

    public FerryMetrics(IMeterFactory meterFactory, ProxyStateHolder state, Func<long>? accessLogDropped, EventLoops? loops = null)
    {
        var meter = meterFactory.Create(MeterName);
        var upstreamAdvice = new InstrumentAdvice<double> { HistogramBucketBoundaries = UpstreamBuckets };

        _requests = meter.CreateCounter<long>("ferry.requests", "{request}",
            "Client requests completed, by route, cluster, status class and error type (none when a destination answered).");
        _requestDuration = meter.CreateHistogram<double>("ferry.request.duration", "s",
            "Time from the request's arrival to the end of its response, by route, cluster and status class.", advice: upstreamAdvice);
        _attempts = meter.CreateCounter<long>("ferry.upstream.attempts", "{attempt}",
            "Exchanges with a destination, by connection reuse and error type.");
        _retries = meter.CreateCounter<long>("ferry.upstream.retries", "{attempt}",
            "Attempts after the first of a request: replays after a keep-alive race on a reused connection, or another destination after a failure or a status listed in Retry:Statuses.");
        _connect = meter.CreateHistogram<double>("ferry.upstream.connect.duration", "s",
            "Time to establish a new connection to a destination.", advice: upstreamAdvice);
        _tlsHandshake = meter.CreateHistogram<double>("ferry.upstream.tls_handshake.duration", "s",
            "Time of the TLS handshake on a new connection to an https destination, after the TCP connect.", advice: upstreamAdvice);
        _head = meter.CreateHistogram<double>("ferry.upstream.head.duration", "s",
            "Time from the start of an attempt to the complete response head.", advice: upstreamAdvice);
        _upstream = meter.CreateHistogram<double>("ferry.upstream.duration", "s",
            "Time from the start of an attempt to the end of the response body.", advice: upstreamAdvice);
        _reloads = meter.CreateCounter<long>("ferry.config.reloads", "{reload}",
            "Configuration reloads (file change, SIGHUP, POST /reload), by result: success, or failure when the running configuration was kept.");

        _rateLimited = meter.CreateCounter<long>("ferry.rate_limited_requests", "{request}",
            "Requests refused with 429 by a route's rate limiter policy, by route and policy.");
        meter.CreateObservableUpDownCounter("ferry.rate_limiter.partitions", () =>
        {
            var list = new List<Measurement<long>>();
            foreach (var policy in state.Current.RateLimiters.Values)
            {
                list.Add(new Measurement<long>(policy.Partitions, new KeyValuePair<string, object?>("ferry.rate_limiter_policy", policy.Name)));
            }
            return list;
        }, "{partition}", "Partitions (clients, header values or routes) a rate limiter policy holds; at most its MaxPartitions.");
        meter.CreateObservableUpDownCounter("ferry.upstream.connections", () => Observe<long>(state, static (d, list) =>
        {
            list.Add(new Measurement<long>(d.Pool.Idle, Tags(d, "http.connection.state", "idle")));
            list.Add(new Measurement<long>(d.Pool.Active, Tags(d, "http.connection.state", "active")));
        }), "{connection}", "Open connections to a destination, idle in its pool or leased to an exchange.");
        meter.CreateObservableUpDownCounter("ferry.upstream.queued", () => Observe<long>(state, static (d, list) =>
            list.Add(new Measurement<long>(d.Pool.Queued, Tags(d)))), "{request}", "Requests waiting for a connection to a destination.");
        meter.CreateObservableGauge("ferry.upstream.concurrency_limit", () => Observe<long>(state, static (d, list) =>
        {
            if (d.Pool.CurrentLimit != int.MaxValue)
            {
                list.Add(new Measurement<long>(d.Pool.CurrentLimit, Tags(d)));
            }
        }), "{request}", "Requests allowed to hold a connection to a destination at once: the adaptive limit, or MaxConnections.");
        meter.CreateObservableUpDownCounter("ferry.upstream.concurrency_limit.in_flight", () => Observe<long>(state, static (d, list) =>
            list.Add(new Measurement<long>(d.Pool.InFlight, Tags(d)))), "{request}", "Requests holding a slot under the destination's concurrency limit (connecting or exchanging).");
        meter.CreateObservableGauge("ferry.upstream.concurrency_limit.baseline_latency", () => Observe<double>(state, static (d, list) =>
        {
            if (d.Pool.Adaptive?.Baseline is { } baseline)
            {
                list.Add(new Measurement<double>(baseline.TotalSeconds, Tags(d)));
            }
        }), "s", "Lowest time to response head seen from the destination: the unqueued latency the adaptive limit compares against.");
        meter.CreateObservableGauge("ferry.upstream.concurrency_limit.recent_latency", () => Observe<double>(state, static (d, list) =>
        {
            if (d.Pool.Adaptive?.LastLatency is { } latency)
            {
                list.Add(new Measurement<double>(latency.TotalSeconds, Tags(d)));
            }
        }), "s", "Average time to response head over the adaptive limit's last 100 ms window.");
        meter.CreateObservableCounter("ferry.upstream.connections.slow", () => Observe<long>(state, static (d, list) =>
            list.Add(new Measurement<long>(d.Pool.SlowConnects, Tags(d)))), "{connection}",
            "Connects that took 1 s or more: a SYN retransmitted because the destination's listen queue was full.");
        meter.CreateObservableUpDownCounter("ferry.destination.in_flight", () => Observe<long>(state, static (d, list) =>
            list.Add(new Measurement<long>(d.InFlight, Tags(d)))), "{request}", "Requests currently using a destination.");
        meter.CreateObservableGauge("ferry.destination.health", () => Observe<long>(state, static (d, list) =>
            list.Add(new Measurement<long>(d.IsAvailable ? 1 : 0, Tags(d)))), "1", "1 when the destination is eligible for new requests, 0 when it is out of rotation.");
        meter.CreateObservableCounter("ferry.upstream.connections.opened", () => Observe<long>(state, static (d, list) =>
            list.Add(new Measurement<long>(d.Pool.Opened, Tags(d)))), "{connection}", "Connections established to a destination.");
        meter.CreateObservableCounter("ferry.upstream.connections.reused", () => Observe<long>(state, static (d, list) =>
            list.Add(new Measurement<long>(d.Pool.Reused, Tags(d)))), "{connection}", "Requests served by an idle pooled connection instead of a new one.");
        meter.CreateObservableCounter("ferry.upstream.connections.retired", () => Observe<long>(state, static (d, list) =>
        {
            foreach (var reason in RetireReasons)
            {
                list.Add(new Measurement<long>(d.Pool.Retired(reason.Reason), Tags(d, "ferry.retire_reason", reason.Name)));
            }
        }), "{connection}", "Connections closed by Ferry, by reason.");
        meter.CreateObservableGauge("ferry.upstream.keepalive.idle_timeout", () => Observe<double>(state, static (d, list) =>
            list.Add(new Measurement<double>(d.Pool.KeepAlive.IdleTimeout.TotalSeconds, Tags(d)))), "s",
            "Idle time after which Ferry retires a pooled connection to the destination.");
        meter.CreateObservableGauge("ferry.upstream.keepalive.learned_idle_timeout", () => Observe<double>(state, static (d, list) =>
        {
            if (d.Pool.Learner.IdleTimeout is { } learned)
            {
                list.Add(new Measurement<double>(learned.TotalSeconds, Tags(d)));
            }
        }), "s", "Idle timeout learned from the destination's silent closes (absent while unknown).");
        meter.CreateObservableGauge("ferry.upstream.keepalive.learned_max_requests", () => Observe<long>(state, static (d, list) =>
            list.Add(new Measurement<long>(d.Pool.Learner.MaxRequests, Tags(d)))), "{request}",
            "Requests per connection learned from the destination's silent closes; 0 while unknown.");
        meter.CreateObservableCounter("ferry.upstream.connections.closed_while_idle", () => Observe<long>(state, static (d, list) =>
        {
            list.Add(new Measurement<long>(d.Pool.ClosedByFin, Tags(d, "ferry.close", "fin")));
            list.Add(new Measurement<long>(d.Pool.ClosedByReset, Tags(d, "ferry.close", "rst")));
        }), "{connection}", "Pooled connections the destination closed while idle, seen by the idle watch.");
        meter.CreateObservableGauge("ferry.upstream.port_space.utilization", () => Observe<double>(state, static (d, list) =>
            list.Add(new Measurement<double>(Math.Round(d.Pool.Ports.Busiest().Utilization, 4), Tags(d)))), "1",
            "Share of the ephemeral port range taken towards the destination's busiest address, from one source address: "
            + "open connections plus those closed within 60 s (an estimate of TIME_WAIT). Connects fail with EADDRNOTAVAIL at 1.");
        if (loops is not null)
        {
            meter.CreateObservableCounter("ferry.event_loop.stalls", () => ObserveLoops(loops, static a => a.Stalls), "{stall}",
                "Times an event loop stayed longer than EventLoopStallThreshold in one batch of work (counted when it passes the threshold), by loop.");
            meter.CreateObservableCounter("ferry.event_loop.stall.time", () => ObserveLoops(loops, static a => a.Stalled.TotalSeconds), "s",
                "Time event loops spent in stalls that have ended, by loop: with ferry.event_loop.stalls, the mean stall.");
        }
        if (accessLogDropped is not null)
        {
            meter.CreateObservableCounter("ferry.access_log.dropped", accessLogDropped, "{line}",
                "Access log lines dropped because the writer fell behind or the write failed.");
        }
    }

    private static readonly (RetireReason Reason, string Name)[] RetireReasons =
        Enum.GetValues<RetireReason>().Select(r => (r, System.Text.Json.JsonNamingPolicy.SnakeCaseLower.ConvertName(r.ToString()))).ToArray();

    // Tag values are objects: one box each for the two booleans instead of one per measurement.
    private static readonly object BoxedTrue = true;
    private static readonly object BoxedFalse = false;

    public void RecordReload(bool success) =>
        _reloads.Add(1, new KeyValuePair<string, object?>("result", success ? "success" : "failure"));

    public void Record(RequestRecord record)
    {
        var error = record.Error == ProxyError.None ? null : ProxyErrorTable.Of(record.Error).Type;
        var statusClass = record.Status is >= 100 and < 600 ? StatusClasses[record.Status / 100] : "other";
        var tags = new TagList
        {
            { "ferry.route", record.RouteId },
            { "ferry.cluster", record.ClusterId },
            { "ferry.status_class", statusClass },
        };
        _requestDuration.Record(record.Duration.TotalSeconds, tags);
        if (error is not null)
        {
            tags.Add("error.type", error);
        }
        _requests.Add(1, tags);
        if (record.Error == ProxyError.RateLimited)
        {
            _rateLimited.Add(1, new TagList { { "ferry.route", record.RouteId }, { "ferry.rate_limiter_policy", record.RateLimiterPolicy } });
        }

        var attempts = record.Attempts;
        for (var i = 0; i < attempts.Count; i++)
        {
            var attempt = attempts[i];
            var destination = attempt.Destination;
            var where = new TagList { { "ferry.cluster", destination.Cluster.Id }, { "ferry.destination", destination.Id } };
            if (attempt.ConnectTime is { } connect)
            {
                _connect.Record(connect.TotalSeconds, where);
            }
            if (attempt.TlsHandshakeTime is { } handshake)
            {
                _tlsHandshake.Record(handshake.TotalSeconds, new TagList { { "ferry.cluster", destination.Cluster.Id },
                    { "ferry.destination", destination.Id }, { "tls.protocol.version", attempt.TlsProtocol } });
            }
            if (attempt.HeadTime is { } head)
            {
                _head.Record(head.TotalSeconds, where);
            }
            if (attempt.ResponseTime is { } response)
            {
                _upstream.Record(response.TotalSeconds, where);
            }
            if (i > 0)
            {
                var retry = where;
                retry.Add("ferry.retry_kind", attempt.Replay ? "replay" : "next_destination");
                _retries.Add(1, retry);
            }
            where.Add("ferry.reused", attempt.Reused ? BoxedTrue : BoxedFalse);
            if (attempt.Error != ProxyError.None)
            {
                where.Add("error.type", ProxyErrorTable.Of(attempt.Error).Type);
            }
            _attempts.Add(1, where);
        }
    }

    private static KeyValuePair<string, object?>[] Tags(Model.DestinationState d) =>
        [new("ferry.cluster", d.Cluster.Id), new("ferry.destination", d.Id)];

    private static KeyValuePair<string, object?>[] Tags(Model.DestinationState d, string key, string value) =>
        [new("ferry.cluster", d.Cluster.Id), new("ferry.destination", d.Id), new(key, value)];

    // Nothing while no watchdog runs (EventLoopStallThreshold 0): no stall would be counted.
    private static Measurement<T>[] ObserveLoops<T>(EventLoops loops, Func<LoopActivity, T> value)
        where T : struct =>
        loops.Watchdog is null ? [] : [.. loops.All.Select(l => new Measurement<T>(value(l.Activity), new KeyValuePair<string, object?>("ferry.event_loop", l.Index)))];

    private static List<Measurement<T>> Observe<T>(ProxyStateHolder state, Action<Model.DestinationState, List<Measurement<T>>> observe)
        where T : struct
    {
        var list = new List<Measurement<T>>();
        foreach (var cluster in state.Current.Clusters.Values)
        {
            foreach (var destination in cluster.Destinations)
            {
                observe(destination, list);
            }
        }
        return list;
    }
}
