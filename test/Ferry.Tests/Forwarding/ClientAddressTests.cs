using System.Net;
using Ferry.Configuration;
using Ferry.Forwarding;
using Ferry.Hosting;
using Microsoft.AspNetCore.Http;

namespace Ferry.Tests.Forwarding;

public sealed class ClientAddressTests
{
    private static readonly ListenerConfig Listener = new("l", new IPEndPoint(IPAddress.Loopback, 0))
    {
        TrustedProxies = [IPNetwork.Parse("10.0.0.0/8"), IPNetwork.Parse("2001:db8::/32")],
    };

    private static string? Resolve(string peer, params string[] forwardedFor)
    {
        var context = new DefaultHttpContext();
        context.Connection.RemoteIpAddress = IPAddress.Parse(peer);
        if (forwardedFor.Length > 0)
        {
            context.Request.Headers["X-Forwarded-For"] = forwardedFor;
        }
        return ClientAddress.Resolve(context, new ListenerConnectionFeature(Listener, Listener.Trusts(context.Connection.RemoteIpAddress), new DrainState()))?.ToString();
    }

    [Theory]
    [InlineData("198.51.100.1", new string[0], "198.51.100.1")]
    [InlineData("::ffff:198.51.100.1", new string[0], "198.51.100.1")]
    // An untrusted peer's X-Forwarded-For is whatever it wrote.
    [InlineData("198.51.100.1", new[] { "203.0.113.9" }, "198.51.100.1")]
    [InlineData("10.0.0.1", new string[0], "10.0.0.1")]
    [InlineData("10.0.0.1", new[] { "203.0.113.9" }, "203.0.113.9")]
    // The rightmost untrusted address; whatever is left of it is the client's own claim.
    [InlineData("10.0.0.1", new[] { "1.1.1.1, 203.0.113.9, 10.0.0.2" }, "203.0.113.9")]
    [InlineData("10.0.0.1", new[] { "1.1.1.1, 203.0.113.9", "10.0.0.2 , 10.9.9.9" }, "203.0.113.9")]
    [InlineData("10.0.0.1", new[] { "10.0.0.3, 10.0.0.2" }, "10.0.0.3")]
    [InlineData("10.0.0.1", new[] { "[2001:db8::1]:4711, 203.0.113.9:80" }, "203.0.113.9")]
    [InlineData("10.0.0.1", new[] { "2001:db9::1, 2001:db8::1" }, "2001:db9::1")]
    // Garbage from a trusted hop: the hop that forwarded it is the last address known.
    [InlineData("10.0.0.1", new[] { "203.0.113.9, unknown, 10.0.0.2" }, "10.0.0.2")]
    [InlineData("10.0.0.1", new[] { "203.0.113.9, unknown" }, "10.0.0.1")]
    [InlineData("10.0.0.1", new[] { ", ,203.0.113.9,," }, "203.0.113.9")]
    public void RealClient(string peer, string[] forwardedFor, string expected) =>
        Assert.Equal(expected, Resolve(peer, forwardedFor));
}
