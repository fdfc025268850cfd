namespace Ferry.Configuration;

/// <summary>
/// A route's header, path and query rules (Routes:&lt;id&gt;:Transforms), in YARP's transform vocabulary. Validated at
/// load: names are tokens, values carry no CR, LF or NUL, and no rule names a header that frames the message or
/// belongs to the connection. <see cref="None"/> is the shared instance of a route without rules, so that the
/// forwarder pays one reference comparison for them.
/// </summary>
internal sealed class TransformsConfig
{
    public static TransformsConfig None { get; } = new([], [], [], [], originalHost: null);

    public TransformsConfig(PathRule[] path, QueryRule[] query, HeaderRule[] requestHeaders, ResponseHeaderRule[] responseHeaders, bool? originalHost)
    {
        Path = path;
        Query = query;
        RequestHeaders = requestHeaders;
        ResponseHeaders = responseHeaders;
        OriginalHost = originalHost;

        // The request rules, in order, reduced to what the head writer needs: which of the client's fields it leaves
        // out, and which fields it writes after the client's. A Set or Remove drops the client's field and any value
        // an earlier rule added; Append adds a field line after the client's, which RFC 9110 §5.3 makes equivalent to
        // a comma-separated value.
        var dropped = new List<string>();
        var added = new List<HeaderRule>();
        foreach (var rule in requestHeaders)
        {
            if (rule.Action != HeaderAction.Append)
            {
                if (!dropped.Contains(rule.Name, StringComparer.OrdinalIgnoreCase))
                {
                    dropped.Add(rule.Name);
                }
                added.RemoveAll(a => a.Name.Equals(rule.Name, StringComparison.OrdinalIgnoreCase));
            }
            if (rule.Action != HeaderAction.Remove)
            {
                added.Add(rule);
            }
        }
        DroppedRequestHeaders = [.. dropped];
        AddedRequestHeaders = [.. added];
    }

    /// <summary>Request fields of the client's that are not forwarded (a Set or Remove rule names them).</summary>
    public string[] DroppedRequestHeaders { get; }

    /// <summary>Fields written after the client's, in rule order.</summary>
    public HeaderRule[] AddedRequestHeaders { get; }

    public bool DropsRequestHeader(string name)
    {
        foreach (var dropped in DroppedRequestHeaders)
        {
            if (dropped.Equals(name, StringComparison.OrdinalIgnoreCase))
            {
                return true;
            }
        }
        return false;
    }

    /// <summary>Applied in order to the path of the request target.</summary>
    public PathRule[] Path { get; }

    public QueryRule[] Query { get; }

    public HeaderRule[] RequestHeaders { get; }

    public ResponseHeaderRule[] ResponseHeaders { get; }

    /// <summary>RequestHeaderOriginalHost: overrides the cluster's Forwarding:PreserveHost when set.</summary>
    public bool? OriginalHost { get; }

    public bool RewritesTarget => Path.Length > 0 || Query.Length > 0;

    public bool IsEmpty => !RewritesTarget && RequestHeaders.Length == 0 && ResponseHeaders.Length == 0 && OriginalHost is null;
}

internal enum PathRuleKind { RemovePrefix, Prefix, Set, Pattern }

/// <summary><see cref="Value"/> is a path starting with '/', already in request-target form (no space, '?' or '#').</summary>
internal sealed record PathRule(PathRuleKind Kind, string Value);

internal enum HeaderAction { Set, Append, Remove }

/// <summary><see cref="Value"/> is empty for <see cref="HeaderAction.Remove"/>.</summary>
internal sealed record HeaderRule(string Name, HeaderAction Action, string Value);

/// <summary>YARP's "When": which responses a response rule applies to. Success is a status below 400.</summary>
internal enum ResponseCondition { Success, Always, Failure }

internal sealed record ResponseHeaderRule(string Name, HeaderAction Action, string Value, ResponseCondition When)
{
    public bool AppliesTo(int status) => When switch
    {
        ResponseCondition.Always => true,
        ResponseCondition.Success => status < 400,
        _ => status >= 400,
    };
}

/// <summary>QueryValueParameter (Set, Append) and QueryRemoveParameter; names and values are unescaped text.</summary>
internal sealed record QueryRule(string Name, HeaderAction Action, string Value);
