using System.Net;
using Ferry.Hosting;

namespace Ferry.Forwarding;

internal static class ClientAddress
{
    /// <summary>
    /// The client's address as Ferry uses it everywhere (access log, hashing, X-Forwarded-For): the peer's, unless the
    /// peer is a trusted proxy; then the rightmost X-Forwarded-For address that is not a trusted proxy, as nginx's
    /// real_ip_recursive. Addresses left of the first untrusted one are whatever the client wrote and are ignored.
    /// </summary>
    public static IPAddress? Resolve(HttpContext context, ListenerConnectionFeature? connection)
    {
        var peer = Normalize(context.Connection.RemoteIpAddress);
        if (peer is null || connection is not { PeerTrusted: true })
        {
            return peer;
        }
        var values = context.Request.Headers["X-Forwarded-For"];
        var client = peer;
        for (var v = values.Count - 1; v >= 0; v--)
        {
            var list = (values[v] ?? "").AsSpan();
            while (!list.IsEmpty)
            {
                var comma = list.LastIndexOf(',');
                var item = list[(comma + 1)..].Trim(" \t");
                list = comma < 0 ? default : list[..comma];
                if (item.IsEmpty)
                {
                    continue;
                }
                if (!TryParse(item, out var address))
                {
                    // What a trusted proxy forwarded is not an address: its sender is the last one known.
                    return client;
                }
                if (!connection.Listener.Trusts(address))
                {
                    return address;
                }
                client = address;
            }
        }
        return client;
    }

    public static IPAddress? Normalize(IPAddress? address) =>
        address is { IsIPv4MappedToIPv6: true } ? address.MapToIPv4() : address;

    // "192.0.2.1", "2001:db8::1", and the forms with a port some proxies write: "192.0.2.1:4711", "[2001:db8::1]:4711".
    private static bool TryParse(ReadOnlySpan<char> text, out IPAddress address)
    {
        if (IPAddress.TryParse(text, out var parsed) || (IPEndPoint.TryParse(text, out var endPoint) && (parsed = endPoint.Address) is not null))
        {
            address = Normalize(parsed)!;
            return true;
        }
        address = IPAddress.None;
        return false;
    }
}
