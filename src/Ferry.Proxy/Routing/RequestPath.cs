using Ferry.Configuration;

namespace Ferry.Routing;

/// <summary>
/// Decides which request target is forwarded, so that routes match exactly what the destination receives. Kestrel
/// hands the router a decoded path with dot segments removed, while the destination would get the raw target: for
/// "/private/../public/x" the router saw "/public/x" and a destination that routes on the raw path saw "/private".
/// Paths that servers interpret differently are rejected or normalized (docs/decisions/2026-12-02-path-normalization.md).
/// </summary>
internal static class RequestPath
{
    /// <summary>
    /// The origin-form target to forward: <paramref name="rawTarget"/> itself when it is unambiguous (null
    /// <paramref name="changedPath"/>), or a normalized target whose decoded path is <paramref name="changedPath"/>.
    /// False with the reason in <paramref name="problem"/> when the path must be rejected.
    /// </summary>
    public static bool TryResolve(string rawTarget, AmbiguousPaths action, out string target, out string? changedPath, out string? problem)
    {
        target = rawTarget;
        changedPath = null;
        problem = null;
        if (rawTarget.Length == 0 || rawTarget == "*")
        {
            return true;
        }

        var pathStart = 0;
        if (rawTarget[0] != '/')
        {
            // Absolute form (RFC 9112 §3.2.2): the destination gets the origin form of the same path.
            var scheme = rawTarget.IndexOf("://", StringComparison.Ordinal);
            if (scheme < 0)
            {
                problem = "the request target is neither a path nor an absolute URI";
                return false;
            }
            var authorityEnd = rawTarget.AsSpan(scheme + 3).IndexOfAny('/', '?');
            pathStart = authorityEnd < 0 ? rawTarget.Length : scheme + 3 + authorityEnd;
        }
        var queryStart = rawTarget.IndexOf('?', pathStart);
        var path = queryStart < 0 ? rawTarget.AsSpan(pathStart) : rawTarget.AsSpan(pathStart, queryStart - pathStart);
        var query = queryStart < 0 ? "" : rawTarget[queryStart..];

        if (FindSeparatorLookalike(path) is { } separator)
        {
            // Whether "%2F", "%5C" or "\" separate segments depends on the destination: no form is safe to route on.
            problem = $"the path contains {separator}";
            return false;
        }
        var dotSegment = HasDotSegment(path);
        var emptySegment = path.Contains("//", StringComparison.Ordinal);
        if (dotSegment || emptySegment)
        {
            if (action == AmbiguousPaths.Reject)
            {
                problem = dotSegment ? "the path contains a '.' or '..' segment" : "the path contains an empty segment ('//')";
                return false;
            }
            var normalized = Normalize(path);
            target = normalized + query;
            changedPath = Uri.UnescapeDataString(normalized);
            return true;
        }
        if (pathStart > 0 || path.IsEmpty)
        {
            var origin = path.IsEmpty ? "/" : path.ToString();
            target = origin + query;
            changedPath = Uri.UnescapeDataString(origin);
        }
        return true;
    }

    private static string? FindSeparatorLookalike(ReadOnlySpan<char> path)
    {
        if (path.Contains('\\'))
        {
            return "a backslash";
        }
        for (var i = path.IndexOf('%'); i >= 0 && i + 2 < path.Length; i = NextPercent(path, i))
        {
            if (path[i + 1] == '2' && (path[i + 2] | 0x20) == 'f')
            {
                return "an encoded slash (%2F)";
            }
            if (path[i + 1] == '5' && (path[i + 2] | 0x20) == 'c')
            {
                return "an encoded backslash (%5C)";
            }
        }
        return null;
    }

    private static int NextPercent(ReadOnlySpan<char> path, int i)
    {
        var next = path[(i + 1)..].IndexOf('%');
        return next < 0 ? -1 : i + 1 + next;
    }

    private static bool HasDotSegment(ReadOnlySpan<char> path)
    {
        foreach (var range in path.Split('/'))
        {
            if (IsDotSegment(path[range]) != 0)
            {
                return true;
            }
        }
        return false;
    }

    // 1 for ".", 2 for "..", 0 otherwise; a dot may be percent-encoded (RFC 3986 §2.3: "%2E" is ".").
    private static int IsDotSegment(ReadOnlySpan<char> segment)
    {
        var dots = 0;
        var i = 0;
        while (i < segment.Length)
        {
            if (segment[i] == '.')
            {
                i++;
            }
            else if (segment[i] == '%' && i + 2 < segment.Length && segment[i + 1] == '2' && (segment[i + 2] | 0x20) == 'e')
            {
                i += 3;
            }
            else
            {
                return 0;
            }
            if (++dots > 2)
            {
                return 0;
            }
        }
        return dots;
    }

    // RFC 3986 §5.2.4 dot-segment removal, with empty segments merged as Envoy's merge_slashes does. Other segments are
    // kept as the client encoded them. A trailing "/" (or a trailing dot segment) keeps the path a directory.
    private static string Normalize(ReadOnlySpan<char> path)
    {
        var segments = new List<string>();
        var directory = false;
        foreach (var range in path.Split('/'))
        {
            var segment = path[range];
            directory = true;
            switch (IsDotSegment(segment))
            {
                case 1:
                    break;
                case 2:
                    if (segments.Count > 0)
                    {
                        segments.RemoveAt(segments.Count - 1);
                    }
                    break;
                default:
                    if (!segment.IsEmpty)
                    {
                        segments.Add(segment.ToString());
                        directory = false;
                    }
                    break;
            }
        }
        var normalized = "/" + string.Join('/', segments);
        return directory && segments.Count > 0 ? normalized + "/" : normalized;
    }
}
