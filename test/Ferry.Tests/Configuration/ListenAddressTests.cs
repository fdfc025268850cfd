using System.Net;
using Ferry.Configuration;

namespace Ferry.Tests.Configuration;

public sealed class ListenAddressTests
{
    [Theory]
    [InlineData("127.0.0.1:8080", "127.0.0.1", 8080)]
    [InlineData("[::1]:8080", "::1", 8080)]
    [InlineData("*:8080", "0.0.0.0", 8080)]
    [InlineData("localhost:80", "127.0.0.1", 80)]
    [InlineData("127.0.0.1:0", "127.0.0.1", 0)]
    [InlineData("[::]:65535", "::", 65535)]
    public void Parses(string text, string address, int port)
    {
        Assert.True(ListenAddress.TryParse(text, out var endPoint));
        Assert.Equal(new IPEndPoint(IPAddress.Parse(address), port), endPoint);
    }

    [Theory]
    [InlineData("8080")]
    [InlineData(":8080")]
    [InlineData("127.0.0.1")]
    [InlineData("127.0.0.1:")]
    [InlineData("127.0.0.1:65536")]
    [InlineData("127.0.0.1:-1")]
    [InlineData("::1:8080")]
    [InlineData("[127.0.0.1]:8080")]
    [InlineData("example.com:8080")]
    [InlineData("http://127.0.0.1:8080")]
    public void Rejects(string text) => Assert.False(ListenAddress.TryParse(text, out _));

    [Theory]
    [InlineData("127.0.0.1:8080", "127.0.0.1:8080", true)]
    [InlineData("*:8080", "127.0.0.1:8080", true)]
    [InlineData("127.0.0.2:8080", "127.0.0.1:8080", false)]
    [InlineData("127.0.0.1:8081", "127.0.0.1:8080", false)]
    [InlineData("[::]:8080", "127.0.0.1:8080", false)]
    [InlineData("127.0.0.1:0", "127.0.0.1:0", false)]
    public void Conflict(string a, string b, bool conflict)
    {
        Assert.True(ListenAddress.TryParse(a, out var ea));
        Assert.True(ListenAddress.TryParse(b, out var eb));
        Assert.Equal(conflict, ListenAddress.Conflict(ea, eb));
        Assert.Equal(conflict, ListenAddress.Conflict(eb, ea));
    }
}
