using Ferry.Forwarding;

namespace Ferry.Tests.Forwarding;

public sealed class HttpsRedirectTests
{
    [Theory]
    [InlineData("example.com", "example.com")]
    [InlineData("Example.COM:8080", "Example.COM")]
    [InlineData("example.com.", "example.com.")]
    [InlineData("10.0.0.1:80", "10.0.0.1")]
    [InlineData("[::1]", "[::1]")]
    [InlineData("[2001:db8::1]:443", "[2001:db8::1]")]
    [InlineData("a-b.c1.example", "a-b.c1.example")]
    public void ValidHosts_GiveTheHostWithoutItsPort(string value, string host) =>
        Assert.Equal(host, HttpsRedirect.HostName(value));

    [Theory]
    [InlineData(null)]
    [InlineData("")]
    [InlineData("evil.example/x")]
    [InlineData("evil.example\\good.example")]
    [InlineData("user@good.example")]
    [InlineData("good.example:80@evil.example")]
    [InlineData("a..b")]
    [InlineData(".example")]
    [InlineData("-a.example")]
    [InlineData("a_b.example")]
    [InlineData("example.com:")]
    [InlineData("example.com:65536")]
    [InlineData("example.com:8o")]
    [InlineData("example.com:80:80")]
    [InlineData("[::1")]
    [InlineData("[::1]x")]
    [InlineData("[::1]:")]
    [InlineData("[fe80::1%25eth0]")]
    [InlineData("[10.0.0.1]")]
    [InlineData("exa mple.com")]
    [InlineData("%65vil.example")]
    public void OtherHosts_AreRefused(string? value) => Assert.Null(HttpsRedirect.HostName(value));
}
