using System.Buffers;
using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Ferry.Hosting;

internal enum ProxyHeaderStatus
{
    Incomplete,
    Complete,
    Invalid,
}

/// <summary>
/// What a PROXY protocol header says. <see cref="Source"/> is null when the connection's own addresses stand: a LOCAL
/// command (the load balancer's own health check), "UNKNOWN", or a family that has no IP address (AF_UNIX, AF_UNSPEC).
/// </summary>
internal readonly record struct ProxyHeader(IPEndPoint? Source, IPEndPoint? Destination);

/// <summary>
/// The PROXY protocol, versions 1 (text) and 2 (binary), as HAProxy's send-proxy / send-proxy-v2 and cloud load
/// balancers send it at the start of a connection (haproxy.org/download/3.0/doc/proxy-protocol.txt).
/// </summary>
internal static class ProxyProtocolParser
{
    // A v1 line with two IPv6 addresses and CRLF is at most 107 bytes (spec §2.1).
    public const int V1MaxLength = 107;

    private const int V2HeaderLength = 16;

    private static ReadOnlySpan<byte> V1Prefix => "PROXY "u8;

    private static ReadOnlySpan<byte> V2Signature => [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A];

    /// <summary>
    /// Parses the header at the start of <paramref name="buffer"/>. On <see cref="ProxyHeaderStatus.Complete"/>,
    /// <paramref name="consumed"/> is its length; the bytes after it belong to the proxied protocol.
    /// </summary>
    public static ProxyHeaderStatus TryParse(in ReadOnlySequence<byte> buffer, out ProxyHeader header, out int consumed, out string? error)
    {
        header = default;
        consumed = 0;
        error = null;
        if (buffer.IsEmpty)
        {
            return ProxyHeaderStatus.Incomplete;
        }
        var first = buffer.FirstSpan[0];
        if (first == V1Prefix[0])
        {
            return ParseV1(Head(buffer, V1MaxLength), out header, out consumed, out error);
        }
        if (first == V2Signature[0])
        {
            return ParseV2(buffer, out header, out consumed, out error);
        }
        error = "the connection does not start with a PROXY protocol header";
        return ProxyHeaderStatus.Invalid;
    }

    private static ReadOnlySpan<byte> Head(in ReadOnlySequence<byte> buffer, int max)
    {
        var length = (int)Math.Min(buffer.Length, max);
        return buffer.FirstSpan.Length >= length ? buffer.FirstSpan[..length] : buffer.Slice(0, length).ToArray();
    }

    private static bool StartsAsPrefix(ReadOnlySpan<byte> data, ReadOnlySpan<byte> prefix) =>
        data.Length >= prefix.Length ? data.StartsWith(prefix) : prefix.StartsWith(data);

    private static ProxyHeaderStatus ParseV1(ReadOnlySpan<byte> data, out ProxyHeader header, out int consumed, out string? error)
    {
        header = default;
        consumed = 0;
        error = null;
        if (!StartsAsPrefix(data, V1Prefix))
        {
            error = "the connection does not start with a PROXY protocol header";
            return ProxyHeaderStatus.Invalid;
        }
        var lf = data.IndexOf((byte)'\n');
        if (lf < 0)
        {
            if (data.Length >= V1MaxLength)
            {
                error = $"PROXY v1 line longer than {V1MaxLength} bytes";
                return ProxyHeaderStatus.Invalid;
            }
            if (data.IndexOf((byte)'\r') is var cr && cr >= 0 && cr != data.Length - 1)
            {
                error = "PROXY v1 line has a CR not followed by LF";
                return ProxyHeaderStatus.Invalid;
            }
            return ProxyHeaderStatus.Incomplete;
        }
        if (lf == 0 || data[lf - 1] != (byte)'\r')
        {
            error = "PROXY v1 line does not end with CRLF";
            return ProxyHeaderStatus.Invalid;
        }
        var line = data[V1Prefix.Length..(lf - 1)];
        consumed = lf + 1;
        if (line.StartsWith("UNKNOWN"u8) && (line.Length == 7 || line[7] == (byte)' '))
        {
            // The sender could not tell the addresses; the rest of the line is to be ignored (spec §2.1).
            return ProxyHeaderStatus.Complete;
        }
        Span<Range> parts = stackalloc Range[5];
        if (!TrySplit(line, parts))
        {
            error = "PROXY v1 line is not 'PROXY TCP4|TCP6 source destination source-port destination-port'";
            return ProxyHeaderStatus.Invalid;
        }
        var family = line[parts[0]];
        var v4 = family.SequenceEqual("TCP4"u8);
        if (!v4 && !family.SequenceEqual("TCP6"u8))
        {
            error = "PROXY v1 protocol is not TCP4, TCP6 or UNKNOWN";
            return ProxyHeaderStatus.Invalid;
        }
        if (!TryParseV1Address(line[parts[1]], v4, out var source) || !TryParseV1Address(line[parts[2]], v4, out var destination))
        {
            error = $"PROXY v1 address is not an {(v4 ? "IPv4" : "IPv6")} address";
            return ProxyHeaderStatus.Invalid;
        }
        if (!TryParsePort(line[parts[3]], out var sourcePort) || !TryParsePort(line[parts[4]], out var destinationPort))
        {
            error = "PROXY v1 port is not a number from 0 to 65535";
            return ProxyHeaderStatus.Invalid;
        }
        header = new ProxyHeader(new IPEndPoint(source, sourcePort), new IPEndPoint(destination, destinationPort));
        return ProxyHeaderStatus.Complete;
    }

    // Exactly parts.Length fields separated by single spaces (spec §2.1), none empty.
    private static bool TrySplit(ReadOnlySpan<byte> line, Span<Range> parts)
    {
        var start = 0;
        for (var i = 0; i < parts.Length; i++)
        {
            var space = line[start..].IndexOf((byte)' ');
            var end = space < 0 ? line.Length : start + space;
            if (end == start || (space < 0) != (i == parts.Length - 1))
            {
                return false;
            }
            parts[i] = start..end;
            start = end + 1;
        }
        return true;
    }

    private static bool TryParseV1Address(ReadOnlySpan<byte> text, bool v4, out IPAddress address)
    {
        address = IPAddress.None;
        // IPAddress.TryParse also takes "1" or "0x7f.1" for IPv4; the spec wants the dotted quad only.
        foreach (var b in text)
        {
            var allowed = v4 ? b is (byte)'.' or >= (byte)'0' and <= (byte)'9' : b is (byte)':' or (byte)'.' || IsHexDigit(b);
            if (!allowed)
            {
                return false;
            }
        }
        if (v4 && text.Count((byte)'.') != 3)
        {
            return false;
        }
        if (!IPAddress.TryParse(Encoding.ASCII.GetString(text), out var parsed)
            || parsed.AddressFamily != (v4 ? AddressFamily.InterNetwork : AddressFamily.InterNetworkV6))
        {
            return false;
        }
        address = parsed;
        return true;
    }

    private static bool IsHexDigit(byte b) => b is >= (byte)'0' and <= (byte)'9' or >= (byte)'a' and <= (byte)'f' or >= (byte)'A' and <= (byte)'F';

    private static bool TryParsePort(ReadOnlySpan<byte> text, out int port)
    {
        port = 0;
        if (text.IsEmpty || text.Length > 5 || (text.Length > 1 && text[0] == (byte)'0'))
        {
            return false;
        }
        foreach (var b in text)
        {
            if (b is < (byte)'0' or > (byte)'9')
            {
                return false;
            }
            port = port * 10 + (b - '0');
        }
        return port <= IPEndPoint.MaxPort;
    }

    private static ProxyHeaderStatus ParseV2(in ReadOnlySequence<byte> buffer, out ProxyHeader header, out int consumed, out string? error)
    {
        header = default;
        consumed = 0;
        error = null;
        var fixedPart = Head(buffer, V2HeaderLength);
        if (!StartsAsPrefix(fixedPart, V2Signature))
        {
            error = "the connection does not start with a PROXY protocol header";
            return ProxyHeaderStatus.Invalid;
        }
        if (fixedPart.Length > V2Signature.Length && fixedPart[12] >> 4 != 2)
        {
            error = $"PROXY v2 header has version {fixedPart[12] >> 4}";
            return ProxyHeaderStatus.Invalid;
        }
        if (fixedPart.Length < V2HeaderLength)
        {
            return ProxyHeaderStatus.Incomplete;
        }
        var command = fixedPart[12] & 0x0F;
        var family = fixedPart[13] >> 4;
        var transport = fixedPart[13] & 0x0F;
        var length = BinaryPrimitives.ReadUInt16BigEndian(fixedPart[14..]);
        if (command > 1)
        {
            error = $"PROXY v2 command {command} is neither LOCAL nor PROXY";
            return ProxyHeaderStatus.Invalid;
        }
        if (family > 3 || transport > 2)
        {
            error = $"PROXY v2 address family/protocol 0x{fixedPart[13]:x2} is not defined";
            return ProxyHeaderStatus.Invalid;
        }
        var addressLength = family switch
        {
            1 => 12,  // AF_INET: two addresses of 4 bytes and two ports
            2 => 36,  // AF_INET6
            3 => 216, // AF_UNIX: two paths of 108 bytes
            _ => 0,
        };
        if (length < addressLength)
        {
            error = $"PROXY v2 header of {length} bytes is too short for its address family";
            return ProxyHeaderStatus.Invalid;
        }
        if (buffer.Length < V2HeaderLength + length)
        {
            return ProxyHeaderStatus.Incomplete;
        }
        var body = buffer.Slice(V2HeaderLength, length).ToArray().AsSpan();
        if (!ValidTlvs(body[addressLength..]))
        {
            error = "PROXY v2 TLV overruns the header";
            return ProxyHeaderStatus.Invalid;
        }
        consumed = V2HeaderLength + length;
        // LOCAL: the load balancer speaks for itself (its health checks); UNSPEC, UDP and AF_UNIX carry no TCP peer.
        if (command == 1 && transport == 1 && family is 1 or 2)
        {
            var size = family == 1 ? 4 : 16;
            var source = new IPAddress(body[..size]);
            var destination = new IPAddress(body[size..(2 * size)]);
            var sourcePort = BinaryPrimitives.ReadUInt16BigEndian(body[(2 * size)..]);
            var destinationPort = BinaryPrimitives.ReadUInt16BigEndian(body[(2 * size + 2)..]);
            header = new ProxyHeader(new IPEndPoint(source, sourcePort), new IPEndPoint(destination, destinationPort));
        }
        return ProxyHeaderStatus.Complete;
    }

    // Type-length-value extensions (ALPN, authority, CRC32C, cloud endpoint ids...) follow the addresses. Ferry uses
    // none of them, but they must fit the header exactly: a header that lies about its own structure is not trusted.
    private static bool ValidTlvs(ReadOnlySpan<byte> tlvs)
    {
        while (!tlvs.IsEmpty)
        {
            if (tlvs.Length < 3)
            {
                return false;
            }
            var length = BinaryPrimitives.ReadUInt16BigEndian(tlvs[1..]);
            if (tlvs.Length < 3 + length)
            {
                return false;
            }
            tlvs = tlvs[(3 + length)..];
        }
        return true;
    }
}
