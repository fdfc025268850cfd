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

    // RFC 9110 §6.5.1: a trailer must not carry what frames the message (Transfer-Encoding, Content-Length), routes it
    // (Host), modifies the request (conditionals, Cache-Control, Range, Max-Forwards, TE), authenticates, controls the
    // response (Age, Date, Expires, Location, Retry-After, Vary, Warning), or says how to process the content
    // (Content-*, Trailer). Set-Cookie in a trailer is dropped as well: cookies are state a client must see before the
    // content, and HTTP/2 clients reject it there.
    private static readonly HashSet<string> NotInTrailers = new(StringComparer.OrdinalIgnoreCase)
    {
        "Connection", "Keep-Alive", "Proxy-Connection", "TE", "Trailer", "Transfer-Encoding", "Upgrade", "Content-Length",
        "Host", "Expect", "Max-Forwards", "Range", "If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since",
        "If-Range", "Cache-Control", "Pragma", "Authorization", "Proxy-Authorization", "WWW-Authenticate", "Proxy-Authenticate",
        "Authentication-Info", "Proxy-Authentication-Info", "Cookie", "Set-Cookie", "Age", "Date", "Expires", "Location",
        "Retry-After", "Vary", "Warning", "Content-Encoding", "Content-Type", "Content-Range", "Content-Location",
        "Content-Language", "Content-Disposition", "Status",
    };

    // Whether an upstream trailer field may be passed on to the client, whatever its protocol.
    public static bool IsAllowedTrailer(string name, IReadOnlyList<string> connectionTokens) =>
        name.Length > 0 && name[0] != ':' && !NotInTrailers.Contains(name)
        && !name.StartsWith("Content-", StringComparison.OrdinalIgnoreCase)
        && !(connectionTokens.Count > 0 && IsNamedBy(connectionTokens, name));

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
