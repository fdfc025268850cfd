using System.Text;
using Ferry.Configuration;
using Ferry.Routing;

namespace Ferry.Forwarding;

// Applies a route's Transforms. Only routes that have rules get here: the forwarder checks the rule arrays first, so a
// route without rules costs nothing per request.
internal static class Transforms
{
    /// <summary>
    /// The request target after the path and query rules. <paramref name="rawPath"/> and <paramref name="rawQuery"/>
    /// (with its '?', or empty) are as the client sent them, so that percent-encoding survives untouched;
    /// <paramref name="decodedPath"/> is Kestrel's decoded path, which routes match and templates capture from.
    /// </summary>
    public static string Target(string rawPath, string rawQuery, string decodedPath, TransformsConfig rules, PathTemplate? template)
    {
        var path = rawPath;
        var untouched = true;
        foreach (var rule in rules.Path)
        {
            switch (rule.Kind)
            {
                case PathRuleKind.RemovePrefix:
                    if (StripPrefix(path, rule.Value) is { } stripped)
                    {
                        path = stripped;
                    }
                    else if (untouched && RouteMatcher.IsPathPrefix(decodedPath, rule.Value))
                    {
                        // The raw form spells the prefix with escapes ("/%61pi"); the decoded path has it.
                        path = StripPrefix(new PathString(decodedPath).ToUriComponent(), rule.Value) ?? path;
                    }
                    break;
                case PathRuleKind.Prefix:
                    path = rule.Value + path;
                    break;
                case PathRuleKind.Set:
                    path = rule.Value;
                    break;
                case PathRuleKind.Pattern:
                    path = Substitute(rule.Value, decodedPath, template);
                    break;
            }
            untouched = false;
        }
        var query = rules.Query.Length == 0 ? rawQuery : Query(rawQuery, rules.Query);
        return path + query;
    }

    // The path without a segment-aligned, case-insensitive prefix; null when it does not start with it.
    private static string? StripPrefix(string path, string prefix)
    {
        if (!RouteMatcher.IsPathPrefix(path, prefix))
        {
            return null;
        }
        var rest = path[prefix.Length..];
        return rest.Length == 0 ? "/" : rest;
    }

    private static string Substitute(string pattern, string decodedPath, PathTemplate? template)
    {
        var values = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        template?.TryMatch(decodedPath, values);
        var result = new StringBuilder(pattern.Length + decodedPath.Length);
        var i = 0;
        while (i < pattern.Length)
        {
            var open = pattern.IndexOf('{', i);
            if (open < 0)
            {
                result.Append(pattern, i, pattern.Length - i);
                break;
            }
            var close = pattern.IndexOf('}', open);
            result.Append(pattern, i, open - i);
            var name = pattern.AsSpan(open + 1, close - open - 1).TrimStart('*').ToString();
            // Kestrel leaves "%2F" encoded in the decoded path; PathString keeps valid escapes and encodes the rest.
            result.Append(new PathString("/" + values.GetValueOrDefault(name, "")).ToUriComponent().AsSpan(1));
            i = close + 1;
        }
        return result.ToString();
    }

    private static string Query(string rawQuery, QueryRule[] rules)
    {
        var pairs = new List<string>();
        if (rawQuery.Length > 1)
        {
            pairs.AddRange(rawQuery[1..].Split('&', StringSplitOptions.RemoveEmptyEntries));
        }
        foreach (var rule in rules)
        {
            if (rule.Action != HeaderAction.Append)
            {
                pairs.RemoveAll(p => NameOf(p).Equals(rule.Name, StringComparison.OrdinalIgnoreCase));
            }
            if (rule.Action != HeaderAction.Remove)
            {
                pairs.Add(Uri.EscapeDataString(rule.Name) + "=" + Uri.EscapeDataString(rule.Value));
            }
        }
        return pairs.Count == 0 ? "" : "?" + string.Join('&', pairs);
    }

    private static string NameOf(string pair)
    {
        var equals = pair.IndexOf('=');
        var name = equals < 0 ? pair : pair[..equals];
        try
        {
            return Uri.UnescapeDataString(name.Replace('+', ' '));
        }
        catch (UriFormatException)
        {
            return name;
        }
    }

    /// <summary>The response rules whose When matches the status, in order, applied to the headers about to be sent.</summary>
    public static void ApplyResponse(IHeaderDictionary headers, ResponseHeaderRule[] rules, int status)
    {
        foreach (var rule in rules)
        {
            if (!rule.AppliesTo(status))
            {
                continue;
            }
            switch (rule.Action)
            {
                case HeaderAction.Set:
                    headers[rule.Name] = rule.Value;
                    break;
                case HeaderAction.Append:
                    headers.Append(rule.Name, rule.Value);
                    break;
                default:
                    headers.Remove(rule.Name);
                    break;
            }
        }
    }
}
