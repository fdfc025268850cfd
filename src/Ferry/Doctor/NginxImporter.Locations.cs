using System.Text;
using Ferry.Configuration;

namespace Ferry.Doctor;

internal sealed partial class NginxImporter
{
    private void ImportLocation(NginxDirective location, IReadOnlyList<NginxDirective> scope, List<string> hosts, int order,
        Dictionary<string, NginxDirective> upstreams)
    {
        var (modifier, path) = LocationMatch(location);
        foreach (var directive in location.Block!.Where(d => d.Name != "location"))
        {
            NoteUntranslated(directive, "location");
        }

        foreach (var nested in location.Children("location").Where(l => l.Block is not null))
        {
            ImportLocation(nested, [.. scope, nested], hosts, order, upstreams);
        }

        var proxyPass = location.Child("proxy_pass");
        if (proxyPass is null)
        {
            return;
        }

        if (modifier is "~" or "~*" || path.StartsWith('@'))
        {
            Note(location, $"\"{location}\": regular expression and named locations are not translated (Ferry matches exact paths and prefixes)");
            return;
        }

        var target = ProxyPassTarget.Parse(proxyPass.Arg(0));
        if (target is null || target.HasVariables || target.Scheme is not ("http" or "https") || target.Name.StartsWith("unix:", StringComparison.Ordinal))
        {
            var why = target is null ? "not an http:// or https:// URL" : target.HasVariables ? "variables are resolved per request" : target.Scheme is not ("http" or "https") ? "Ferry speaks HTTP and HTTPS to destinations" : "unix sockets are not supported";
            Note(proxyPass, $"\"{proxyPass}\" not translated: {why}");
            return;
        }

        var exact = modifier == "=";
        var transforms = new List<(string Key, string Value)[]>();
        // With a rewrite ... break in the location, nginx ignores proxy_pass's URI part and sends the rewritten URI.
        var rewritten = ImportRewrite(location, transforms);
        if (!rewritten && target.Uri is { } uri && uri != path)
        {
            // nginx replaces the matched part with the URI: "location /api/ { proxy_pass http://b/v2/; }" sends /api/x
            // as /v2/x, which is PathRemovePrefix /api then PathPrefix /v2; an exact location's path is replaced
            // whole. Other replacements cut a segment in two, which Ferry's segment-aligned rules cannot express.
            if (exact)
            {
                transforms.Add([("PathSet", uri)]);
            }
            else if (path.EndsWith('/') && uri.EndsWith('/'))
            {
                AddPrefixChange(transforms, path, uri);
            }
            else
            {
                Note(proxyPass, $"\"{proxyPass}\" in \"{location}\" replaces the path prefix \"{path}\" with \"{uri}\"; Ferry can only replace a prefix " +
                                "that ends on a segment boundary (location /api/ with proxy_pass http://backend/v2/). Route not translated");
                return;
            }
        }

        ImportHeaderRules(scope, transforms);
        var maxBody = ImportMaxBodySize(scope);
        var rateLimiterPolicy = ImportRateLimit(scope);

        var clusterId = ClusterFor(target, proxyPass, upstreams);
        if (clusterId is null)
        {
            return;
        }

        ApplyLocationSettings(_clusters[clusterId]!, scope, location);
        var id = UniqueRouteId($"{(hosts.Count > 0 ? hosts[0] : "_")}{(exact ? "=" : "")}{path}");
        _routes.Add(new Route(id, order, hosts, exact ? path : null, exact ? null : path, transforms, maxBody, clusterId)
        {
            RateLimiterPolicy = rateLimiterPolicy,
        });
    }

    // "/old/" → "/new/": PathRemovePrefix /old, then PathPrefix /new; either is left out when it is "/".
    private static void AddPrefixChange(List<(string Key, string Value)[]> transforms, string from, string to)
    {
        if (from.Length > 1)
        {
            transforms.Add([("PathRemovePrefix", from.TrimEnd('/'))]);
        }

        if (to.Length > 1)
        {
            transforms.Add([("PathPrefix", to.TrimEnd('/'))]);
        }
    }

    /// <summary>
    /// "rewrite ^/old/(.*)$ /new/$1 break;" is a prefix change on a segment boundary. Returns whether the location's
    /// rewrite was translated; one that is not (another regular expression, another flag, several rewrites) is noted
    /// and the route is forwarded without it. Ferry's prefix comparison ignores case where nginx's regex does not.
    /// </summary>
    private bool ImportRewrite(NginxDirective location, List<(string Key, string Value)[]> transforms)
    {
        var rewrites = location.Children("rewrite").ToList();
        if (rewrites.Count == 0)
        {
            return false;
        }

        if (rewrites.Count == 1 && rewrites[0] is { Args.Count: 3 } rewrite && rewrite.Arg(2) == "break"
            && RegexPrefix(rewrite.Arg(0)) is { } from
            && rewrite.Arg(1) is var replacement && replacement.EndsWith("/$1", StringComparison.Ordinal)
            && replacement[..^2] is var to && to.StartsWith('/') && to.IndexOfAny(['$', '?', '#', ' ']) < 0)
        {
            AddPrefixChange(transforms, from, to);
            return true;
        }

        foreach (var untranslated in rewrites)
        {
            Note(untranslated, $"\"{untranslated}\" not translated: Ferry expresses a single \"rewrite ^/old/(.*)$ /new/$1 break;\" per location " +
                               "(a prefix change); the route forwards the path unchanged");
        }

        return false;
    }

    // "^/old/(.*)$" → "/old/"; null for any other regular expression.
    private static string? RegexPrefix(string regex)
    {
        if (!regex.StartsWith("^/", StringComparison.Ordinal))
        {
            return null;
        }

        var end = regex.EndsWith("(.*)$", StringComparison.Ordinal) ? regex.Length - 5
            : regex.EndsWith("(.*)", StringComparison.Ordinal) ? regex.Length - 4
            : -1;
        if (end < 2)
        {
            return null;
        }

        var prefix = new StringBuilder();
        for (var i = 1; i < end; i++)
        {
            var c = regex[i];
            if (c == '\\' && i + 1 < end && regex[i + 1] is '.' or '-' or '/')
            {
                prefix.Append(regex[++i]);
            }
            else if (char.IsAsciiLetterOrDigit(c) || c is '/' or '-' or '_' or '~')
            {
                prefix.Append(c);
            }
            else
            {
                return null;
            }
        }

        var text = prefix.ToString();
        return text.EndsWith('/') && !text.Contains("//", StringComparison.Ordinal) ? text : null;
    }

    /// <summary>
    /// proxy_set_header, proxy_hide_header and add_header of the location, each inherited only by levels that set
    /// none of the same directive (nginx's rule). Headers Ferry handles itself (Host, Connection, X-Forwarded-*) are
    /// left to the cluster settings. add_header without "always" becomes When=Success, which nginx limits to a list
    /// of success and redirect statuses; Ferry applies it to every status below 400.
    /// </summary>
    private void ImportHeaderRules(IReadOnlyList<NginxDirective> scope, List<(string Key, string Value)[]> transforms)
    {
        foreach (var header in Effective(scope, "proxy_set_header").Where(h => !ForwardedHeaders.Contains(h.Arg(0))))
        {
            if (Untranslatable(header, header.Arg(0), header.Arg(1), response: false) is { } why)
            {
                Note(header, $"\"{header}\" not translated: {why}");
            }
            else if (header.Arg(1).Length == 0)
            {
                // An empty value: nginx does not pass the field at all.
                transforms.Add([("RequestHeaderRemove", header.Arg(0))]);
            }
            else
            {
                transforms.Add([("RequestHeader", header.Arg(0)), ("Set", header.Arg(1))]);
            }
        }

        foreach (var hide in Effective(scope, "proxy_hide_header"))
        {
            if (Untranslatable(hide, hide.Arg(0), "", response: true) is { } why)
            {
                Note(hide, $"\"{hide}\" not translated: {why}");
            }
            else
            {
                transforms.Add([("ResponseHeaderRemove", hide.Arg(0)), ("When", "Always")]);
            }
        }

        foreach (var add in Effective(scope, "add_header"))
        {
            var always = add.Args.Count > 2 && add.Arg(2) == "always";
            if (Untranslatable(add, add.Arg(0), add.Arg(1), response: true) is { } why)
            {
                Note(add, $"\"{add}\" not translated: {why}");
            }
            else
            {
                transforms.Add([("ResponseHeader", add.Arg(0)), ("Append", add.Arg(1)), ("When", always ? "Always" : "Success")]);
            }
        }
    }

    // Why Ferry's configuration would refuse the rule, or null.
    private static string? Untranslatable(NginxDirective directive, string name, string value, bool response)
    {
        if (directive.Args.Count < (directive.Name == "proxy_hide_header" ? 1 : 2))
        {
            return "incomplete";
        }

        if (value.Contains('$') || name.Contains('$'))
        {
            return "variables are resolved per request";
        }

        if (!Http1.HeadWriting.IsToken(name) || !Http1.HeadWriting.IsValue(value))
        {
            return "not a valid header name or value";
        }

        if (Forwarding.HopByHop.IsHopByHopOrManaged(name) || (response && name.Equals("Proxy-Status", StringComparison.OrdinalIgnoreCase)))
        {
            return "Ferry writes this header itself";
        }

        return null;
    }

    // client_max_body_size of the innermost level that sets it; nginx's own default (1m) is not carried over: Ferry's
    // default (Limits:MaxRequestBodySize, 100m) is what a configuration that never chose a limit gets.
    private string? ImportMaxBodySize(IReadOnlyList<NginxDirective> scope)
    {
        var effective = scope.Select(level => level.Child("client_max_body_size")).LastOrDefault(d => d is not null);
        if (effective is null)
        {
            return null;
        }

        if (!ConfigReader.TryParseSize(effective.Arg(0), out _))
        {
            Note(effective, $"\"{effective}\" not translated: not a size Ferry reads (bytes, or k, m, g)");
            return null;
        }

        return effective.Arg(0).ToLowerInvariant();
    }

    private static (string Modifier, string Path) LocationMatch(NginxDirective location)
    {
        if (location.Args.Count >= 2)
        {
            return (location.Arg(0), location.Arg(1));
        }

        var arg = location.Arg(0);
        // nginx also accepts the modifier glued to the path: "location =/x".
        foreach (var modifier in new[] { "^~", "~*", "=", "~" })
        {
            if (arg.StartsWith(modifier, StringComparison.Ordinal) && arg.Length > modifier.Length)
            {
                return (modifier, arg[modifier.Length..]);
            }
        }

        return ("", arg);
    }

    private string UniqueRouteId(string id)
    {
        var candidate = id;
        for (var n = 2; _routes.Any(r => r.Id.Equals(candidate, StringComparison.OrdinalIgnoreCase)); n++)
        {
            candidate = $"{id}~{n}";
        }

        return candidate;
    }
}
