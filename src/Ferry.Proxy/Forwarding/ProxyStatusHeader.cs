using System.Text;

namespace Ferry.Forwarding;

// RFC 9209 Proxy-Status: "ferry; error=connection_refused[; details="..."; next-hop="..."]".
internal static class ProxyStatusHeader
{
    public const string Name = "Proxy-Status";
    public const string ProxyName = "ferry";

    public static string Format(string errorType, string? details, string? nextHop, bool includeDetails)
    {
        if (!includeDetails)
        {
            return $"{ProxyName}; error={errorType}";
        }
        var sb = new StringBuilder(ProxyName).Append("; error=").Append(errorType);
        if (!string.IsNullOrEmpty(details))
        {
            sb.Append("; details=").Append(Quote(details));
        }
        if (!string.IsNullOrEmpty(nextHop))
        {
            sb.Append("; next-hop=").Append(Quote(nextHop));
        }
        return sb.ToString();
    }

    // Structured-field sf-string (RFC 8941 §3.3.3): printable ASCII, with \ and " escaped.
    private static string Quote(string value)
    {
        var sb = new StringBuilder(value.Length + 2).Append('"');
        foreach (var c in value)
        {
            if (c is '"' or '\\')
            {
                sb.Append('\\').Append(c);
            }
            else if (c is >= ' ' and <= '~')
            {
                sb.Append(c);
            }
            else
            {
                sb.Append('?');
            }
        }
        return sb.Append('"').ToString();
    }
}
