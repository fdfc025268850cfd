namespace Ferry.Doctor;

/// <summary>
/// The URL of a <c>proxy_pass</c>: <c>http://name[:port][/uri]</c>. <see cref="Name"/> is either an upstream block's
/// name or a literal host; <see cref="Uri"/> is null when the URL has no URI part, which matters: with a URI, nginx
/// replaces the matched location prefix with it; without, the request URI is passed unchanged.
/// </summary>
internal sealed record ProxyPassTarget(string Scheme, string Name, int? Port, string? Uri, bool HasVariables)
{
    public static ProxyPassTarget? Parse(string url)
    {
        var schemeEnd = url.IndexOf("://", StringComparison.Ordinal);
        if (schemeEnd <= 0)
        {
            return null;
        }

        var scheme = url[..schemeEnd].ToLowerInvariant();
        var rest = url[(schemeEnd + 3)..];
        var hasVariables = url.Contains('$');
        if (rest.StartsWith("unix:", StringComparison.Ordinal))
        {
            return new ProxyPassTarget(scheme, rest, null, null, hasVariables);
        }

        var slash = rest.IndexOf('/');
        var authority = slash < 0 ? rest : rest[..slash];
        var uri = slash < 0 ? null : rest[slash..];
        var colon = authority.LastIndexOf(':');
        int? port = null;
        if (colon > 0 && !authority.EndsWith(']') && int.TryParse(authority.AsSpan(colon + 1), out var p))
        {
            port = p;
            authority = authority[..colon];
        }

        return new ProxyPassTarget(scheme, authority, port, uri, hasVariables);
    }
}

/// <summary>Where http-level directives live: every <c>http</c> block, or the file itself when it is a fragment
/// (a conf.d or sites-enabled file holding <c>server</c> and <c>upstream</c> blocks).</summary>
internal static class NginxContexts
{
    public static IReadOnlyList<NginxDirective> Http(IReadOnlyList<NginxDirective> root, string file)
    {
        var http = root.Where(d => d.Name == "http" && d.Block is not null).ToList();
        return http.Count > 0 ? http : [new NginxDirective("http", [], file, 1, root)];
    }
}
