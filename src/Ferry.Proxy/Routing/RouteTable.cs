using Ferry.Configuration;
using Ferry.Model;
using Ferry.RateLimiting;

namespace Ferry.Routing;

internal sealed record RouteState(RouteConfig Config, ClusterState Cluster)
{
    // The route's RateLimiterPolicy; null when it has none.
    public RateLimiterPolicy? RateLimiter { get; init; }
}

// Routes in the order the configuration sorted them; the first match wins.
internal sealed class RouteTable
{
    private readonly RouteState[] _routes;

    public RouteTable(IReadOnlyList<RouteConfig> routes, IReadOnlyDictionary<string, ClusterState> clusters,
        IReadOnlyDictionary<string, RateLimiterPolicy>? rateLimiters = null)
    {
        _routes = routes.Select(r => new RouteState(r, clusters[r.ClusterId])
        {
            RateLimiter = r.RateLimiterPolicy is { } name ? rateLimiters![name] : null,
        }).ToArray();
    }

    public IReadOnlyList<RouteState> Routes => _routes;

    public RouteState? Match(string method, string host, string path)
    {
        foreach (var route in _routes)
        {
            if (RouteMatcher.Matches(route.Config.Match, method, host, path))
            {
                return route;
            }
        }
        return null;
    }
}

internal static class RouteMatcher
{
    public static bool Matches(RouteMatchConfig match, string method, string host, string path)
    {
        if (match.Methods.Count > 0 && !Contains(match.Methods, method))
        {
            return false;
        }
        if (match.Hosts.Count > 0 && !MatchesHost(match.Hosts, StripPort(host)))
        {
            return false;
        }
        if (match.Template is { } template)
        {
            return template.TryMatch(path, null);
        }
        if (match.Path is { } exact)
        {
            return string.Equals(path, exact, StringComparison.OrdinalIgnoreCase);
        }
        return match.PathPrefix is not { } prefix || IsPathPrefix(path, prefix);
    }

    // "/api" matches "/api", "/api/" and "/api/x", never "/apix": prefixes end on a segment boundary.
    public static bool IsPathPrefix(string path, string prefix)
    {
        var p = prefix.EndsWith('/') ? prefix[..^1] : prefix;
        if (!path.StartsWith(p, StringComparison.OrdinalIgnoreCase))
        {
            return false;
        }
        return path.Length == p.Length || path[p.Length] == '/';
    }

    private static bool Contains(IReadOnlyList<string> values, string value)
    {
        foreach (var v in values)
        {
            if (string.Equals(v, value, StringComparison.OrdinalIgnoreCase))
            {
                return true;
            }
        }
        return false;
    }

    private static bool MatchesHost(IReadOnlyList<string> hosts, ReadOnlySpan<char> host)
    {
        foreach (var pattern in hosts)
        {
            if (pattern.StartsWith("*.", StringComparison.Ordinal))
            {
                var suffix = pattern.AsSpan(1); // ".example.com"
                if (host.Length > suffix.Length && host.EndsWith(suffix, StringComparison.OrdinalIgnoreCase))
                {
                    return true;
                }
            }
            else if (host.Equals(pattern, StringComparison.OrdinalIgnoreCase))
            {
                return true;
            }
        }
        return false;
    }

    private static ReadOnlySpan<char> StripPort(string host)
    {
        var span = host.AsSpan();
        if (span.StartsWith("["))
        {
            var close = span.IndexOf(']');
            return close > 0 ? span[..(close + 1)] : span;
        }
        var colon = span.LastIndexOf(':');
        return colon >= 0 ? span[..colon] : span;
    }
}
