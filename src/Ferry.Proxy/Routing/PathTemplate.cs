namespace Ferry.Routing;

/// <summary>
/// A Match:Path with parameters, in ASP.NET Core's route template syntax reduced to whole segments: "{id}" matches one
/// non-empty segment, a final "{**rest}" matches whatever remains (possibly nothing). Literal segments compare
/// case-insensitively, like every other path match. The captured values feed PathPattern.
/// </summary>
internal sealed class PathTemplate
{
    private readonly Segment[] _segments;

    private PathTemplate(string text, Segment[] segments)
    {
        Text = text;
        _segments = segments;
    }

    public string Text { get; }

    public IEnumerable<string> Names => _segments.Where(s => s.Name is not null).Select(s => s.Name!);

    public static bool HasParameters(string path) => path.Contains('{') || path.Contains('}');

    /// <summary>Parses "/a/{x}/{**rest}"; null with a reason when the text is not such a template.</summary>
    public static PathTemplate? Parse(string text, out string? error)
    {
        error = null;
        var parts = text.Split('/');
        var segments = new Segment[parts.Length - 1];
        var names = new HashSet<string>(StringComparer.OrdinalIgnoreCase);
        for (var i = 1; i < parts.Length; i++)
        {
            var part = parts[i];
            if (!part.Contains('{') && !part.Contains('}'))
            {
                segments[i - 1] = new Segment(part, null, false);
                continue;
            }
            var catchAll = part.StartsWith("{**", StringComparison.Ordinal);
            var name = catchAll ? part[3..^1] : part.Length > 2 ? part[1..^1] : "";
            if (!part.StartsWith('{') || !part.EndsWith('}') || name.Length == 0 || !name.All(c => char.IsAsciiLetterOrDigit(c) || c == '_'))
            {
                error = $"'{part}' is not a parameter: a segment is either literal or a whole '{{name}}' (letters, digits, '_'), or a final '{{**name}}'";
                return null;
            }
            if (catchAll && i != parts.Length - 1)
            {
                error = $"'{part}' must be the last segment";
                return null;
            }
            if (!names.Add(name))
            {
                error = $"parameter '{name}' appears twice";
                return null;
            }
            segments[i - 1] = new Segment(null, name, catchAll);
        }
        return new PathTemplate(text, segments);
    }

    /// <summary>Matches a decoded path; fills <paramref name="values"/> when given (null: matching alone, no allocation).</summary>
    public bool TryMatch(string path, Dictionary<string, string>? values)
    {
        if (path.Length == 0 || path[0] != '/')
        {
            return false;
        }
        var position = 1;
        for (var i = 0; i < _segments.Length; i++)
        {
            var segment = _segments[i];
            if (segment.CatchAll)
            {
                values?.Add(segment.Name!, position < path.Length ? path[position..] : "");
                return true;
            }
            if (position > path.Length)
            {
                return false;
            }
            var end = path.IndexOf('/', position);
            if (end < 0)
            {
                end = path.Length;
            }
            var value = path.AsSpan(position, end - position);
            if (segment.Literal is { } literal)
            {
                if (!value.Equals(literal, StringComparison.OrdinalIgnoreCase))
                {
                    return false;
                }
            }
            else if (value.IsEmpty)
            {
                return false;
            }
            else
            {
                values?.Add(segment.Name!, value.ToString());
            }
            position = end + 1;
        }
        return position == path.Length + 1;
    }

    private readonly record struct Segment(string? Literal, string? Name, bool CatchAll);
}
