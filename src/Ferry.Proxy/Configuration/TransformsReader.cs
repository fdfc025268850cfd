using Ferry.Forwarding;
using Ferry.Http1;
using Microsoft.Extensions.Configuration;

namespace Ferry.Configuration;

/// <summary>
/// Reads Routes:&lt;id&gt;:Transforms, a list of single-purpose rules named as in YARP. Each entry's first key says
/// what it is; every error names the entry's path. What would let a rule change how the message is framed or which
/// connection it belongs to is refused here, not at request time.
/// </summary>
internal static class TransformsReader
{
    private static readonly string[] Kinds =
    [
        "RequestHeader", "RequestHeaderRemove", "RequestHeaderOriginalHost", "ResponseHeader", "ResponseHeaderRemove",
        "PathPrefix", "PathRemovePrefix", "PathSet", "PathPattern", "QueryValueParameter", "QueryRemoveParameter",
    ];

    public static TransformsConfig Read(ConfigReader reader, IConfigurationSection route, RouteMatchConfig match, string? legacyRemovePrefix)
    {
        var path = new List<PathRule>();
        if (legacyRemovePrefix is not null)
        {
            path.Add(new PathRule(PathRuleKind.RemovePrefix, legacyRemovePrefix));
        }
        var query = new List<QueryRule>();
        var request = new List<HeaderRule>();
        var response = new List<ResponseHeaderRule>();
        bool? originalHost = null;
        foreach (var entry in reader.Entries(route, "Transforms"))
        {
            var keys = entry.GetChildren().Select(c => c.Key).ToArray();
            var kind = Kinds.FirstOrDefault(k => keys.Contains(k, StringComparer.OrdinalIgnoreCase));
            if (kind is null)
            {
                var suggestion = keys.Length == 0 ? null : ConfigReader.Suggest(keys[0], Kinds);
                reader.Error(entry.Path, suggestion is null
                    ? $"not a transform (one of {string.Join(", ", Kinds)})"
                    : $"not a transform (did you mean '{suggestion}'?)");
                continue;
            }
            // A rule that stops at an error leaves its other settings unread; they are still its settings.
            using var known = reader.CheckKeys(entry);
            switch (kind)
            {
                case "RequestHeader":
                    if (!ReadHeader(reader, entry, kind, response: false, out var name))
                    {
                        reader.Known(entry, "Set", "Append");
                    }
                    else if (ReadSetOrAppend(reader, entry, out var action, out var value))
                    {
                        request.Add(new HeaderRule(name, action, value));
                    }
                    break;
                case "RequestHeaderRemove":
                    if (ReadHeader(reader, entry, kind, response: false, out name))
                    {
                        request.Add(new HeaderRule(name, HeaderAction.Remove, ""));
                    }
                    break;
                case "RequestHeaderOriginalHost":
                    originalHost = reader.Bool(entry, kind, defaultValue: false);
                    break;
                case "ResponseHeader":
                    if (!ReadHeader(reader, entry, kind, response: true, out name))
                    {
                        reader.Known(entry, "Set", "Append", "When");
                    }
                    else if (!ReadSetOrAppend(reader, entry, out var action, out var value))
                    {
                        reader.Known(entry, "When");
                    }
                    else
                    {
                        response.Add(new ResponseHeaderRule(name, action, value, ReadWhen(reader, entry)));
                    }
                    break;
                case "ResponseHeaderRemove":
                    if (!ReadHeader(reader, entry, kind, response: true, out name))
                    {
                        reader.Known(entry, "When");
                    }
                    else
                    {
                        response.Add(new ResponseHeaderRule(name, HeaderAction.Remove, "", ReadWhen(reader, entry)));
                    }
                    break;
                case "QueryValueParameter":
                    if (reader.RequiredString(entry, kind) is not { } parameter)
                    {
                        reader.Known(entry, "Set", "Append");
                    }
                    else if (ReadSetOrAppend(reader, entry, out var action, out var value))
                    {
                        query.Add(new QueryRule(parameter, action, value));
                    }
                    break;
                case "QueryRemoveParameter":
                    if (reader.RequiredString(entry, kind) is { } removed)
                    {
                        query.Add(new QueryRule(removed, HeaderAction.Remove, ""));
                    }
                    break;
                default:
                    if (ReadPathRule(reader, entry, kind, match) is { } rule)
                    {
                        path.Add(rule);
                    }
                    break;
            }
        }
        if (path.Count == 0 && query.Count == 0 && request.Count == 0 && response.Count == 0 && originalHost is null)
        {
            return TransformsConfig.None;
        }
        return new TransformsConfig([.. path], [.. query], [.. request], [.. response], originalHost);
    }

    private static bool ReadHeader(ConfigReader reader, IConfigurationSection entry, string kind, bool response, out string name)
    {
        name = reader.RequiredString(entry, kind) ?? "";
        var path = entry.GetSection(kind).Path;
        if (name.Length == 0)
        {
            return false;
        }
        if (!HeadWriting.IsToken(name))
        {
            reader.Error(path, $"'{name}' is not a header field name");
            return false;
        }
        if (HopByHop.IsHopByHopOrManaged(name))
        {
            reader.Error(path, name.Equals("Host", StringComparison.OrdinalIgnoreCase) && !response
                ? "Host is chosen by RequestHeaderOriginalHost (or the cluster's Forwarding:PreserveHost), not by a header rule"
                : $"'{name}' frames the message or belongs to the connection; Ferry writes it itself and no rule may change it");
            return false;
        }
        if (response && name.Equals(Forwarding.ProxyStatusHeader.Name, StringComparison.OrdinalIgnoreCase))
        {
            reader.Error(path, "Proxy-Status reports Ferry's own errors; no rule may change it");
            return false;
        }
        if (!response && name.StartsWith("X-Forwarded-", StringComparison.OrdinalIgnoreCase)
            && name.AsSpan(12) is var rest && (rest.Equals("For", StringComparison.OrdinalIgnoreCase)
                || rest.Equals("Proto", StringComparison.OrdinalIgnoreCase) || rest.Equals("Host", StringComparison.OrdinalIgnoreCase)))
        {
            reader.Error(path, $"'{name}' is written by the cluster's Forwarding:XForwarded, not by a header rule");
            return false;
        }
        return true;
    }

    // Exactly one of Set and Append; the value may be empty (a header with an empty value), never CR, LF or NUL.
    private static bool ReadSetOrAppend(ConfigReader reader, IConfigurationSection entry, out HeaderAction action, out string value)
    {
        var set = reader.Setting(entry, "Set");
        var append = reader.Setting(entry, "Append");
        action = HeaderAction.Set;
        value = "";
        if (set.Exists() == append.Exists())
        {
            reader.Error(entry.Path, "needs exactly one of Set and Append");
            return false;
        }
        var section = set.Exists() ? set : append;
        action = set.Exists() ? HeaderAction.Set : HeaderAction.Append;
        if (section.GetChildren().Any())
        {
            reader.Error(section.Path, "expected a value, found a section");
            return false;
        }
        value = section.Value ?? "";
        if (!HeadWriting.IsValue(value))
        {
            reader.Error(section.Path, "contains CR, LF, NUL or a character above U+00FF");
            return false;
        }
        // Field values carry no leading or trailing whitespace (RFC 9110 §5.5).
        value = value.Trim(' ', '\t');
        return true;
    }

    private static ResponseCondition ReadWhen(ConfigReader reader, IConfigurationSection entry) =>
        reader.Choice(entry, "When", ResponseCondition.Success, "a response condition",
            ("Success", ResponseCondition.Success), ("Always", ResponseCondition.Always), ("Failure", ResponseCondition.Failure));

    private static PathRule? ReadPathRule(ConfigReader reader, IConfigurationSection entry, string kind, RouteMatchConfig match)
    {
        var value = RouteReader.ReadPath(reader, entry, kind);
        if (value is null)
        {
            if (reader.String(entry, kind) is null)
            {
                reader.Error(entry.GetSection(kind).Path, "required");
            }
            return null;
        }
        var path = entry.GetSection(kind).Path;
        if (!HeadWriting.IsTarget(value))
        {
            reader.Error(path, $"'{value}' contains a space, a control character or a character above U+00FF");
            return null;
        }
        switch (kind)
        {
            case "PathRemovePrefix":
                value = value.Length > 1 ? value.TrimEnd('/') : value;
                if (value.Length <= 1)
                {
                    reader.Error(path, "'/' removes nothing; a prefix to remove has at least one segment");
                    return null;
                }
                return new PathRule(PathRuleKind.RemovePrefix, value);
            case "PathPrefix":
                value = value.TrimEnd('/');
                if (value.Length == 0)
                {
                    reader.Error(path, "'/' adds nothing; a prefix has at least one segment");
                    return null;
                }
                return new PathRule(PathRuleKind.Prefix, value);
            case "PathSet":
                return new PathRule(PathRuleKind.Set, value);
            default: // PathPattern
                if (Routing.PathTemplate.Parse(value, out var error) is not { } pattern)
                {
                    reader.Error(path, error!);
                    return null;
                }
                var available = match.Template?.Names.ToHashSet(StringComparer.OrdinalIgnoreCase) ?? [];
                foreach (var name in pattern.Names)
                {
                    if (!available.Contains(name))
                    {
                        reader.Error(path, match.Template is null
                            ? $"'{{{name}}}' needs a Match:Path template that captures it (such as \"/items/{{{name}}}\")"
                            : $"'{{{name}}}' is not a parameter of Match:Path '{match.Template.Text}'");
                        return null;
                    }
                }
                return new PathRule(PathRuleKind.Pattern, value);
        }
    }
}
