using Ferry.Configuration;

namespace Ferry.LoadBalancing;

internal static class HashKey
{
    // What ConsistentHash hashes for this request. A missing header or cookie falls back to the client address (the
    // real client's behind a trusted proxy, see ClientAddress), so such requests still spread instead of all landing
    // on the destination that owns the empty key.
    public static string From(HttpContext context, HashConfig config, string? clientAddress)
    {
        var value = config.Key switch
        {
            HashKeyKind.Header => context.Request.Headers[config.Name!].ToString(),
            HashKeyKind.Cookie => context.Request.Cookies[config.Name!],
            _ => null,
        };
        return string.IsNullOrEmpty(value) ? clientAddress ?? "" : value;
    }
}
