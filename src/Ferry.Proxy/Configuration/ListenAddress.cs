using System.Globalization;
using System.Net;
using System.Net.Sockets;

namespace Ferry.Configuration;

/// <summary>
/// Parses a listen address: "127.0.0.1:8080", "[::1]:8080", "*:8080" (every IPv4 address) or "localhost:8080"
/// (IPv4 loopback). Only IP literals otherwise: binding to a name would depend on DNS at start.
/// Port 0 asks the OS for a free port (tests).
/// </summary>
internal static class ListenAddress
{
    public const string Expected = "host:port, [ipv6]:port or *:port, with an IP address host";

    public static bool TryParse(string text, out IPEndPoint endPoint)
    {
        endPoint = null!;
        var s = text.Trim();
        var colon = s.LastIndexOf(':');
        if (colon <= 0 || colon == s.Length - 1)
        {
            return false;
        }

        var host = s[..colon];
        if (!int.TryParse(s.AsSpan(colon + 1), NumberStyles.None, CultureInfo.InvariantCulture, out var port)
            || port > IPEndPoint.MaxPort)
        {
            return false;
        }

        IPAddress? address;
        if (host == "*")
        {
            address = IPAddress.Any;
        }
        else if (host.Equals("localhost", StringComparison.OrdinalIgnoreCase))
        {
            address = IPAddress.Loopback;
        }
        else if (host.StartsWith('[') && host.EndsWith(']'))
        {
            if (!IPAddress.TryParse(host.AsSpan(1, host.Length - 2), out address)
                || address.AddressFamily != AddressFamily.InterNetworkV6)
            {
                return false;
            }
        }
        else if (!IPAddress.TryParse(host, out address)
                 || address.AddressFamily != AddressFamily.InterNetwork)
        {
            // An unbracketed IPv6 address is ambiguous with the port separator ("::1:8080").
            return false;
        }

        endPoint = new IPEndPoint(address, port);
        return true;
    }

    /// <summary>
    /// Whether two endpoints cannot both be bound: same address and port, or the same non-zero port where one side is
    /// the wildcard of the other's family (Linux refuses that bind with EADDRINUSE without SO_REUSEPORT).
    /// </summary>
    public static bool Conflict(IPEndPoint a, IPEndPoint b)
    {
        if (a.Port != b.Port || a.Port == 0 || a.AddressFamily != b.AddressFamily)
        {
            return false;
        }

        var any = a.AddressFamily == AddressFamily.InterNetwork ? IPAddress.Any : IPAddress.IPv6Any;
        return a.Address.Equals(b.Address) || a.Address.Equals(any) || b.Address.Equals(any);
    }
}
