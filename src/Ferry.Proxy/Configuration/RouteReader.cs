using System.Net;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Configuration;

namespace Ferry.Configuration;

/// <summary>Reads Routes:&lt;id&gt;: the cluster, the match, the path prefix to remove, upgrades, the body limit and the
/// rate limiter policy; Transforms are read by <see cref="TransformsReader"/>.</summary>
internal static class RouteReader
{
    public static RouteConfig Read(ConfigReader reader, IConfigurationSection section,
        IReadOnlyDictionary<string, ClusterConfig> clusters, RequestLimitsConfig limits, IReadOnlyCollection<string> rateLimiterPolicies)
    {
        using var keys = reader.CheckKeys(section);

        var clusterId = reader.RequiredString(section, "ClusterId");
        if (clusterId is not null)
        {
            if (clusters.TryGetValue(clusterId, out var cluster))
            {
                clusterId = cluster.ClusterId;
            }
            else
            {
                var suggestion = ConfigReader.Suggest(clusterId, clusters.Keys);
                reader.Error(section.GetSection("ClusterId").Path, suggestion is null
                    ? $"'{clusterId}' is not a cluster"
                    : $"'{clusterId}' is not a cluster (did you mean '{suggestion}'?)");
            }
        }

        var order = reader.Int(section, "Order", defaultValue: 0);
        var match = ReadMatch(reader, reader.Section(section, "Match"));
        var removePrefix = ReadPathRemovePrefix(reader, section, match);
        return new RouteConfig(section.Key, clusterId ?? "", order, match, removePrefix)
        {
            Upgrades = ReadUpgrades(reader, section),
            Transforms = TransformsReader.Read(reader, section, match, removePrefix),
            MaxRequestBodySize = reader.Size(section, "MaxRequestBodySize", limits.MaxRequestBodySize),
            RateLimiterPolicy = ReadRouteRateLimiterPolicy(reader, section, rateLimiterPolicies),
        };
    }

    private static string? ReadRouteRateLimiterPolicy(ConfigReader reader, IConfigurationSection section, IReadOnlyCollection<string> policies)
    {
        var name = reader.String(section, "RateLimiterPolicy");
        if (name is null)
        {
            return null;
        }
        if (policies.FirstOrDefault(p => p.Equals(name, StringComparison.OrdinalIgnoreCase)) is { } known)
        {
            return known;
        }
        var suggestion = ConfigReader.Suggest(name, policies);
        reader.Error(section.GetSection("RateLimiterPolicy").Path, suggestion is null
            ? $"'{name}' is not a policy in RateLimiterPolicies"
            : $"'{name}' is not a policy in RateLimiterPolicies (did you mean '{suggestion}'?)");
        return null;
    }

    private static IReadOnlyList<string> ReadUpgrades(ConfigReader reader, IConfigurationSection section)
    {
        if (!reader.Setting(section, "Upgrades").Exists())
        {
            return RouteConfig.DefaultUpgrades;
        }
        var upgrades = new List<string>();
        foreach (var (path, protocol) in reader.List(section, "Upgrades"))
        {
            if (!protocol.All(ConfigReader.IsTokenChar))
            {
                reader.Error(path, "must be an upgrade protocol name (an HTTP token, such as websocket)");
                continue;
            }
            upgrades.Add(protocol.ToLowerInvariant());
        }
        return upgrades;
    }

    private static RouteMatchConfig ReadMatch(ConfigReader reader, IConfigurationSection section)
    {
        if (!section.Exists())
        {
            return RouteMatchConfig.Default;
        }

        using var keys = reader.CheckKeys(section);

        var hosts = new List<string>();
        foreach (var (path, host) in reader.List(section, "Hosts"))
        {
            if (ValidateHost(reader, path, host))
            {
                hosts.Add(host.ToLowerInvariant());
            }
        }

        var methods = new List<string>();
        foreach (var (path, method) in reader.List(section, "Methods"))
        {
            if (method.All(ConfigReader.IsTokenChar))
            {
                // Methods are case-sensitive (RFC 9110 §9.1), but "get" in a config file means GET.
                methods.Add(HttpMethods.GetCanonicalizedValue(method));
            }
            else
            {
                reader.Error(path, $"'{method}' is not an HTTP method");
            }
        }

        var exact = ReadPath(reader, section, "Path");
        var prefix = ReadPath(reader, section, "PathPrefix");
        Routing.PathTemplate? template = null;
        if (exact is not null && Routing.PathTemplate.HasParameters(exact))
        {
            template = Routing.PathTemplate.Parse(exact, out var templateError);
            if (template is null)
            {
                reader.Error(section.GetSection("Path").Path, templateError!);
            }
        }
        if (exact is not null && prefix is not null)
        {
            reader.Error(section.Path, "Path and PathPrefix cannot both be set");
        }

        // "/api/" and "/api" match the same requests on segment boundaries; one spelling keeps comparisons simple.
        if (prefix is not null && prefix.Length > 1)
        {
            prefix = prefix.TrimEnd('/');
            prefix = prefix.Length == 0 ? "/" : prefix;
        }

        return new RouteMatchConfig(hosts, exact, prefix, methods.Distinct().ToArray()) { Template = template };
    }

    public static string? ReadPath(ConfigReader reader, IConfigurationSection section, string key)
    {
        if (reader.String(section, key) is not { } path)
        {
            return null;
        }

        var fullPath = section.GetSection(key).Path;
        if (!path.StartsWith('/'))
        {
            reader.Error(fullPath, $"'{path}' must start with '/'");
            return null;
        }

        if (path.AsSpan().IndexOfAny('?', '#') >= 0)
        {
            reader.Error(fullPath, $"'{path}' must not contain '?' or '#' (routes match the path only)");
            return null;
        }

        return path;
    }

    private static string? ReadPathRemovePrefix(ConfigReader reader, IConfigurationSection section, RouteMatchConfig match)
    {
        var remove = ReadPath(reader, section, "PathRemovePrefix");
        if (remove is null)
        {
            return null;
        }

        var path = section.GetSection("PathRemovePrefix").Path;
        remove = remove.Length > 1 ? remove.TrimEnd('/') : remove;
        if (remove.Length <= 1)
        {
            reader.Error(path, "'/' removes nothing; a prefix to remove has at least one segment");
            return null;
        }

        // Stripping a prefix the matched path may not have would forward some requests unchanged and others not.
        var (matchKey, matchPath) = match.PathPrefix is not null ? ("PathPrefix", match.PathPrefix) : ("Path", match.Path);
        if (matchPath is null)
        {
            reader.Error(path, $"'{remove}' requires Match:PathPrefix (or Match:Path) starting with it");
            return null;
        }

        if (!IsSegmentPrefix(remove, matchPath))
        {
            reader.Error(path, $"'{remove}' is not a prefix of Match:{matchKey} '{matchPath}'");
            return null;
        }

        return remove;
    }

    private static bool IsSegmentPrefix(string prefix, string path) =>
        path.StartsWith(prefix, StringComparison.OrdinalIgnoreCase)
        && (path.Length == prefix.Length || path[prefix.Length] == '/');

    private static bool ValidateHost(ConfigReader reader, string path, string host)
    {
        if (host.StartsWith('[') && host.EndsWith(']'))
        {
            if (IPAddress.TryParse(host.AsSpan(1, host.Length - 2), out var address)
                && address.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6)
            {
                return true;
            }
        }
        else if (host.Contains(':'))
        {
            reader.Error(path, $"'{host}' must not include a port (hosts are matched without their port)");
            return false;
        }
        else
        {
            var name = host.StartsWith("*.", StringComparison.Ordinal) ? host[2..] : host;
            var labels = name.Split('.');
            if (labels.All(l => l.Length > 0 && l.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_')))
            {
                return true;
            }
        }

        reader.Error(path, $"'{host}' is not a host name (letters, digits, '-', '.', optionally a leading '*.')");
        return false;
    }
}
