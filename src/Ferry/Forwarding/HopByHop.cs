namespace Ferry.Forwarding;

// RFC 9110 §7.6.1: connection-specific fields never cross the proxy, nor do the fields the Connection header names.
internal static class HopByHop
{
    private static readonly HashSet<string> Names = new(StringComparer.OrdinalIgnoreCase)
    {
        "Connection", "Keep-Alive", "Proxy-Connection", "TE", "Trailer", "Transfer-Encoding", "Upgrade",
        // Not hop-by-hop, but never forwarded as received: the engine sends its own framing, and Ferry answers
        // Expect: 100-continue itself (Kestrel sends 100 when the body is first read).
        "Content-Length", "Expect", "Host",
    };

    public static bool IsHopByHopOrManaged(string name) => Names.Contains(name);

    public static bool IsNamedBy(IReadOnlyList<string> connectionTokens, string name)
    {
        for (var i = 0; i < connectionTokens.Count; i++)
        {
            if (string.Equals(connectionTokens[i], name, StringComparison.OrdinalIgnoreCase))
            {
                return true;
            }
        }
        return false;
    }

    // Tokens of the client's Connection header(s), other than the standard ones.
    public static List<string>? ConnectionTokens(Microsoft.Extensions.Primitives.StringValues connection)
    {
        List<string>? tokens = null;
        foreach (var value in connection)
        {
            if (value is null)
            {
                continue;
            }
            foreach (var range in value.AsSpan().Split(','))
            {
                var token = value.AsSpan()[range].Trim();
                if (token.IsEmpty || token.Equals("close", StringComparison.OrdinalIgnoreCase)
                    || token.Equals("keep-alive", StringComparison.OrdinalIgnoreCase)
                    || token.Equals("upgrade", StringComparison.OrdinalIgnoreCase))
                {
                    continue;
                }
                (tokens ??= []).Add(token.ToString());
            }
        }
        return tokens;
    }
}
