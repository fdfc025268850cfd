using System.Globalization;

namespace Ferry.Probe;

/// <summary>Settings that keep a proxy from losing keep-alive races with the measured backend: each proxy closes
/// (or stops reusing) a connection before the backend would.</summary>
internal sealed record ProbeRecommendations(
    string FerryIdleTimeout,
    int FerryMaxRequests,
    IReadOnlyList<string> Ferry,
    IReadOnlyList<string> Nginx,
    IReadOnlyList<string> HaProxy,
    IReadOnlyList<string> Notes)
{
    // Below 2 s (gunicorn's default keepalive) a fixed second would leave nothing, so half the timeout is kept.
    // From 2 s on, 1 s covers a round trip plus a coarse server timer (Ferry's pool uses the same 1 s margin for an
    // announced timeout), and 10 % covers servers whose timer drifts with the timeout's size.
    internal static TimeSpan SafeIdle(TimeSpan measured)
    {
        var margin = measured >= TimeSpan.FromSeconds(2)
            ? TimeSpan.FromTicks(Math.Max(TimeSpan.TicksPerSecond, measured.Ticks / 10))
            : measured / 2;
        var safe = measured - margin;
        // Rounded down to 100 ms: closing a little earlier costs a reconnect, a little later a 502.
        return TimeSpan.FromMilliseconds(Math.Floor(safe.TotalMilliseconds / 100) * 100);
    }

    public static ProbeRecommendations For(Uri target, bool keepsAlive, double? idleSeconds, IdleMethod idleMethod,
        CloseKind idleClose, int? maxRequests, LimitEnd limitEnd, Announcements announces)
    {
        var server = $"{target.Host}:{target.Port}";
        var notes = new List<string>();
        if (!keepsAlive)
        {
            notes.Add("The backend closes every connection after one response: there is nothing to reuse and no race to avoid. " +
                      "Proxies open one connection per request; watch the local port range (TIME_WAIT) under load.");
            return new ProbeRecommendations("auto", 1,
                ["\"KeepAlive\": { \"MaxIdle\": 0 }"],
                [$"upstream backend {{ server {server}; }}   # no keepalive: the backend would close it anyway"],
                [$"server app {server} pool-max-conn 0   # the backend keeps nothing alive"],
                notes);
        }

        TimeSpan? safeIdle = idleSeconds is { } idle && idleMethod is IdleMethod.CloseObserved or IdleMethod.ReuseFailed
            ? SafeIdle(TimeSpan.FromSeconds(idle))
            : null;
        string ferryIdle;
        if (safeIdle is null)
        {
            ferryIdle = "auto";
            notes.Add("No idle timeout was observed within the search limit: Ferry's automatic mode caps idle connections at 60 s, like nginx's keepalive_timeout default.");
        }
        else if (announces.KeepAliveTimeoutSeconds is not null)
        {
            // Ferry honours "Keep-Alive: timeout=N" by itself; an explicit value only repeats it.
            ferryIdle = "auto";
            notes.Add($"The backend announces Keep-Alive: timeout={announces.KeepAliveTimeoutSeconds}; Ferry honours it with its automatic idle timeout.");
        }
        else
        {
            ferryIdle = Format(safeIdle.Value);
        }

        int ferryMax = limitEnd is LimitEnd.Silent or LimitEnd.Announced && maxRequests is { } max ? max : 0;
        if (limitEnd == LimitEnd.Silent)
        {
            notes.Add($"The backend closes silently after {maxRequests} requests: a proxy that sends request {maxRequests + 1} " +
                      "before the FIN arrives gets a 502 unless it retries. Limit requests per connection to that number.");
        }

        if (idleClose == CloseKind.Reset)
        {
            notes.Add("Idle connections end with an RST: a request racing it fails with ECONNRESET, which does not prove the " +
                      "backend did not process it, so only idempotent requests can be replayed safely.");
        }

        if (idleMethod == IdleMethod.ReuseFailed)
        {
            notes.Add("The backend (or something between) drops idle connections without closing them: a proxy only learns it " +
                      "when a request fails. Keep the idle timeout below the measured value.");
        }

        var ferry = new List<string> { $"\"KeepAlive\": {{ \"IdleTimeout\": \"{ferryIdle}\", \"MaxRequests\": {ferryMax} }}" };

        // nginx: keepalive_timeout and keepalive_requests exist in the upstream block since 1.15.3; their defaults
        // are 60s and 1000 (100 before 1.19.10). Both close the connection on nginx's side before the next request.
        var nginx = new List<string>
        {
            "upstream backend {",
            $"    server {server};",
            "    keepalive 32;",
            safeIdle is { } ni
                ? $"    keepalive_timeout {Format(ni)};   # the backend closes after {Seconds(idleSeconds!.Value)}"
                : "    keepalive_timeout 60s;   # default; no backend idle timeout was observed",
            maxRequests is { } nm && limitEnd != LimitEnd.NotReached
                ? $"    keepalive_requests {nm};   # the backend's own limit"
                : "    keepalive_requests 1000;   # default; no backend limit was observed",
            "}",
            "# in the location: proxy_http_version 1.1; proxy_set_header Connection \"\";",
        };

        // HAProxy has no per-server idle timeout: pool-purge-delay closes half of a server's idle connections every
        // period (default 5s), so an idle connection can outlive it; retry-on (2.0+) replays a request whose
        // connection failed before any response. timeout http-keep-alive is the CLIENT-side idle timeout.
        var haproxy = new List<string>
        {
            "backend app",
            "    http-reuse safe   # default since 2.0: a client's first request never takes an idle connection",
            "    retries 3",
            "    retry-on conn-failure empty-response response-timeout",
            safeIdle is { } hi
                ? $"    server app {server} pool-purge-delay {Format(hi)}   # purges half the idle connections per period; retry-on covers the rest"
                : $"    server app {server}",
        };

        return new ProbeRecommendations(ferryIdle, ferryMax, ferry, nginx, haproxy, notes);
    }

    // Ferry, nginx and HAProxy all read "ms" and "s" suffixes.
    internal static string Format(TimeSpan value) =>
        value.TotalMilliseconds % 1000 == 0
            ? string.Create(CultureInfo.InvariantCulture, $"{(long)value.TotalSeconds}s")
            : string.Create(CultureInfo.InvariantCulture, $"{(long)value.TotalMilliseconds}ms");

    private static string Seconds(double seconds) => string.Create(CultureInfo.InvariantCulture, $"{seconds:0.0} s");
}
