using System.Buffers;
using System.Net;
using System.Text;
using Ferry.Hosting;
using Ferry.Tests.Support;

namespace Ferry.Tests.Hosting;

public sealed class ProxyProtocolParserTests
{
    private static readonly byte[] Signature = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A];
    private static readonly byte[] Http = Encoding.ASCII.GetBytes("GET / HTTP/1.1\r\n");

    private static byte[] V2(byte command, byte family, params byte[] body) =>
        [.. Signature, command, family, (byte)(body.Length >> 8), (byte)body.Length, .. body];

    private static readonly byte[] Inet4Body = [198, 51, 100, 7, 127, 0, 0, 1, 0x9c, 0x40, 0x00, 0x50];

    private static readonly byte[] Inet6Body =
    [
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x42,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
        0x9c, 0x40, 0x01, 0xbb,
    ];

    private static ProxyHeaderStatus Parse(byte[] data, out ProxyHeader header, out int consumed, out string? error) =>
        ProxyProtocolParser.TryParse(new ReadOnlySequence<byte>(data), out header, out consumed, out error);

    public static TheoryData<string, string?, string?> ValidHeaders => new()
    {
        { "PROXY TCP4 198.51.100.7 127.0.0.1 40000 80\r\n", "198.51.100.7:40000", "127.0.0.1:80" },
        { "PROXY TCP6 2001:db8::42 ::1 40000 443\r\n", "[2001:db8::42]:40000", "[::1]:443" },
        { "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n",
            "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535", "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535" },
        { "PROXY UNKNOWN\r\n", null, null },
        { "PROXY UNKNOWN ffff:: whatever 1 2\r\n", null, null },
        { "PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n", "0.0.0.0:0", "255.255.255.255:65535" },
    };

    [Theory]
    [MemberData(nameof(ValidHeaders))]
    public void V1_ParsesAndLeavesTheFollowingBytes(string line, string? source, string? destination)
    {
        var header = Encoding.ASCII.GetBytes(line);
        Assert.True(header.Length <= ProxyProtocolParser.V1MaxLength);

        var status = Parse([.. header, .. Http], out var parsed, out var consumed, out var error);

        Assert.Equal(ProxyHeaderStatus.Complete, status);
        Assert.Null(error);
        Assert.Equal(header.Length, consumed);
        Assert.Equal(source, parsed.Source?.ToString());
        Assert.Equal(destination, parsed.Destination?.ToString());
    }

    [Theory]
    [MemberData(nameof(ValidHeaders))]
    public void V1_EveryPrefixIsIncomplete_AndEverySplitParses(string line, string? source, string? destination)
    {
        var header = Encoding.ASCII.GetBytes(line);
        for (var i = 1; i < header.Length; i++)
        {
            Assert.Equal(ProxyHeaderStatus.Incomplete, Parse(header[..i], out _, out _, out var error));
            Assert.Null(error);
            var split = ProxyProtocolParser.TryParse(Segments.Split(header, i), out var parsed, out var consumed, out _);
            Assert.Equal(ProxyHeaderStatus.Complete, split);
            Assert.Equal(header.Length, consumed);
            Assert.Equal(source, parsed.Source?.ToString());
            Assert.Equal(destination, parsed.Destination?.ToString());
        }
    }

    [Theory]
    [InlineData("GET / HTTP/1.1\r\n")]
    [InlineData("PROXZ TCP4 1.2.3.4 1.2.3.4 1 2\r\n")]
    [InlineData("proxy TCP4 1.2.3.4 1.2.3.4 1 2\r\n")]
    [InlineData("PROXY TCP4 1.2.3.4 1.2.3.4 1 2\n")]
    [InlineData("PROXY TCP4 1.2.3.4 1.2.3.4 1 2\r\r\n")]
    [InlineData("PROXY TCP4  1.2.3.4 1.2.3.4 1 2\r\n")]
    [InlineData("PROXY TCP4 1.2.3.4 1.2.3.4 1 2 \r\n")]
    [InlineData("PROXY TCP4 1.2.3.4 1.2.3.4 1\r\n")]
    [InlineData("PROXY TCP4 1.2.3.4 1.2.3.4 1 2 3\r\n")]
    [InlineData("PROXY TCP5 1.2.3.4 1.2.3.4 1 2\r\n")]
    [InlineData("PROXY UDP4 1.2.3.4 1.2.3.4 1 2\r\n")]
    [InlineData("PROXY TCP4 ::1 1.2.3.4 1 2\r\n")]
    [InlineData("PROXY TCP6 1.2.3.4 ::1 1 2\r\n")]
    [InlineData("PROXY TCP4 1 1.2.3.4 1 2\r\n")]
    [InlineData("PROXY TCP4 0x7f.0.0.1 1.2.3.4 1 2\r\n")]
    [InlineData("PROXY TCP4 1.2.3.256 1.2.3.4 1 2\r\n")]
    [InlineData("PROXY TCP4 1.2.3.4 1.2.3.4 65536 2\r\n")]
    [InlineData("PROXY TCP4 1.2.3.4 1.2.3.4 -1 2\r\n")]
    [InlineData("PROXY TCP4 1.2.3.4 1.2.3.4 +1 2\r\n")]
    [InlineData("PROXY TCP4 1.2.3.4 1.2.3.4 01 2\r\n")]
    [InlineData("PROXY TCP4 1.2.3.4 1.2.3.4 1 \r\n")]
    [InlineData("PROXY\r\n")]
    [InlineData("PROXY \r\n")]
    [InlineData("PROXY UNKNOWNX\r\n")]
    public void V1_MalformedIsInvalid(string line)
    {
        Assert.Equal(ProxyHeaderStatus.Invalid, Parse(Encoding.ASCII.GetBytes(line), out _, out _, out var error));
        Assert.NotNull(error);
    }

    [Fact]
    public void V1_WithoutLineEndWithinTheMaximumIsInvalid()
    {
        var endless = Encoding.ASCII.GetBytes("PROXY UNKNOWN " + new string('x', ProxyProtocolParser.V1MaxLength));

        Assert.Equal(ProxyHeaderStatus.Invalid, Parse(endless, out _, out _, out var error));
        Assert.Contains("longer than 107", error);
    }

    public static TheoryData<byte[], string?, string?> ValidV2 => new()
    {
        { V2(0x21, 0x11, Inet4Body), "198.51.100.7:40000", "127.0.0.1:80" },
        { V2(0x21, 0x21, Inet6Body), "[2001:db8::42]:40000", "[::1]:443" },
        // TLVs after the addresses are skipped: PP2_TYPE_ALPN "h2", PP2_TYPE_NOOP empty, PP2_TYPE_AWS with a VPC endpoint id.
        { V2(0x21, 0x11, [.. Inet4Body, 0x01, 0x00, 0x02, (byte)'h', (byte)'2', 0x04, 0x00, 0x00, 0xEA, 0x00, 0x04, 0x01, (byte)'v', (byte)'p', (byte)'c']),
            "198.51.100.7:40000", "127.0.0.1:80" },
        // LOCAL: the load balancer's own connection (health checks); addresses, if any, are ignored.
        { V2(0x20, 0x00), null, null },
        { V2(0x20, 0x11, Inet4Body), null, null },
        // PROXY with AF_UNSPEC, AF_UNIX, or a datagram protocol: no TCP peer to report.
        { V2(0x21, 0x00), null, null },
        { V2(0x21, 0x31, new byte[216]), null, null },
        { V2(0x21, 0x12, Inet4Body), null, null },
        { V2(0x21, 0x10, Inet4Body), null, null },
    };

    [Theory]
    [MemberData(nameof(ValidV2))]
    public void V2_ParsesAndLeavesTheFollowingBytes(byte[] header, string? source, string? destination)
    {
        var status = Parse([.. header, .. Http], out var parsed, out var consumed, out var error);

        Assert.Equal(ProxyHeaderStatus.Complete, status);
        Assert.Null(error);
        Assert.Equal(header.Length, consumed);
        Assert.Equal(source, parsed.Source?.ToString());
        Assert.Equal(destination, parsed.Destination?.ToString());
    }

    [Theory]
    [MemberData(nameof(ValidV2))]
    public void V2_EveryPrefixIsIncomplete_AndEverySplitParses(byte[] header, string? source, string? destination)
    {
        for (var i = 1; i < header.Length; i++)
        {
            Assert.Equal(ProxyHeaderStatus.Incomplete, Parse(header[..i], out _, out _, out var error));
            Assert.Null(error);
            var split = ProxyProtocolParser.TryParse(Segments.Split(header, i), out var parsed, out var consumed, out _);
            Assert.Equal(ProxyHeaderStatus.Complete, split);
            Assert.Equal(header.Length, consumed);
            Assert.Equal(source, parsed.Source?.ToString());
            Assert.Equal(destination, parsed.Destination?.ToString());
        }
    }

    public static TheoryData<byte[], string> MalformedV2 => new()
    {
        { [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0B, 0x21, 0x11, 0, 12, .. Inet4Body], "does not start" },
        { [0x0D, 0x0A, 0x47, 0x45, 0x54], "does not start" },
        { V2(0x11, 0x11, Inet4Body), "version 1" },
        { V2(0x31, 0x11, Inet4Body), "version 3" },
        { V2(0x22, 0x11, Inet4Body), "command 2" },
        { V2(0x2F, 0x11, Inet4Body), "command 15" },
        { V2(0x21, 0x41, Inet4Body), "not defined" },
        { V2(0x21, 0x13, Inet4Body), "not defined" },
        { V2(0x21, 0x11, Inet4Body[..11]), "too short" },
        { V2(0x21, 0x21, Inet4Body), "too short" },
        { V2(0x21, 0x31, new byte[215]), "too short" },
        { V2(0x21, 0x11, [.. Inet4Body, 0x04]), "TLV" },
        { V2(0x21, 0x11, [.. Inet4Body, 0x04, 0x00]), "TLV" },
        { V2(0x21, 0x11, [.. Inet4Body, 0x04, 0x00, 0x02, 0xAA]), "TLV" },
    };

    [Theory]
    [MemberData(nameof(MalformedV2))]
    public void V2_MalformedIsInvalid(byte[] header, string reason)
    {
        Assert.Equal(ProxyHeaderStatus.Invalid, Parse([.. header, .. Http], out _, out _, out var error));
        Assert.Contains(reason, error);
    }

    [Fact]
    public void V2_LongestHeaderIsAccepted()
    {
        var tlv = new byte[ushort.MaxValue - Inet4Body.Length];
        tlv[0] = 0x04;
        tlv[1] = (byte)((tlv.Length - 3) >> 8);
        tlv[2] = (byte)(tlv.Length - 3);

        var status = Parse(V2(0x21, 0x11, [.. Inet4Body, .. tlv]), out var header, out var consumed, out _);

        Assert.Equal(ProxyHeaderStatus.Complete, status);
        Assert.Equal(16 + ushort.MaxValue, consumed);
        Assert.Equal(IPAddress.Parse("198.51.100.7"), header.Source!.Address);
    }

    [Fact]
    public void EmptyInputIsIncomplete()
    {
        Assert.Equal(ProxyHeaderStatus.Incomplete, Parse([], out _, out _, out _));
    }
}
