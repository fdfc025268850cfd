using System.Buffers;
using Ferry.Http1;
using Ferry.Tests.Support;
using Microsoft.Extensions.Primitives;

namespace Ferry.Tests.Http1;

public class RequestHeadWriterTests
{
    [Fact]
    public void Writes_the_exact_head()
    {
        var writer = new ArrayBufferWriter<byte>();
        RequestHeadWriter.WriteRequestLine(writer, "GET", "/search?q=caf%C3%A9&x=1");
        RequestHeadWriter.WriteHeader(writer, "Host", "example.com:8080");
        RequestHeadWriter.WriteHeader(writer, "Accept", new StringValues(["text/html", "application/json"]));
        RequestHeadWriter.WriteHeader(writer, "X-Empty", "");
        RequestHeadWriter.WriteHeader(writer, "X-None", StringValues.Empty);
        RequestHeadWriter.WriteEnd(writer);

        Assert.Equal(
            "GET /search?q=caf%C3%A9&x=1 HTTP/1.1\r\nHost: example.com:8080\r\nAccept: text/html\r\nAccept: application/json\r\n"
            + "X-Empty: \r\n\r\n",
            Segments.Latin1String(writer.WrittenSpan.ToArray()));
    }

    [Fact]
    public void Request_line_accepts_authority_and_asterisk_forms()
    {
        var writer = new ArrayBufferWriter<byte>();
        RequestHeadWriter.WriteRequestLine(writer, "CONNECT", "example.com:443");
        RequestHeadWriter.WriteRequestLine(writer, "OPTIONS", "*");
        Assert.Equal("CONNECT example.com:443 HTTP/1.1\r\nOPTIONS * HTTP/1.1\r\n", Segments.Latin1String(writer.WrittenSpan.ToArray()));
    }

    [Fact]
    public void Values_are_written_as_latin1_bytes()
    {
        var writer = new ArrayBufferWriter<byte>();
        RequestHeadWriter.WriteHeader(writer, "X-Latin1", "caf\u00e9 \u00ff\t\u007f");
        Assert.Equal([.. "X-Latin1: caf"u8, 0xE9, (byte)' ', 0xFF, (byte)'\t', 0x7F, .. "\r\n"u8], writer.WrittenSpan.ToArray());
    }

    [Fact]
    public void A_long_value_is_written_whole()
    {
        string value = new('v', 100_000);
        var writer = new ArrayBufferWriter<byte>(16);
        RequestHeadWriter.WriteHeader(writer, "X-Long", value);
        Assert.Equal("X-Long: " + value + "\r\n", Segments.Latin1String(writer.WrittenSpan.ToArray()));
    }

    [Theory]
    [InlineData("GET", "/a HTTP/1.1\r\nHost: evil\r\n\r\nGET /b")]
    [InlineData("GET", "/a\nb")]
    [InlineData("GET", "/a\rb")]
    [InlineData("GET", "/a\0b")]
    [InlineData("GET", "/a b")]
    [InlineData("GET", "/a\tb")]
    [InlineData("GET", "/\u0100")]
    [InlineData("GET", "")]
    [InlineData("GET /", "/")]
    [InlineData("G\r\nET", "/")]
    [InlineData("G\u00e9T", "/")]
    [InlineData("", "/")]
    public void Request_line_injection_is_refused(string method, string target)
    {
        var writer = new ArrayBufferWriter<byte>();
        Assert.Throws<ArgumentException>(() => RequestHeadWriter.WriteRequestLine(writer, method, target));
        Assert.Equal(0, writer.WrittenCount);
    }

    [Theory]
    [InlineData("X-A", "1\r\nX-Injected: 2")]
    [InlineData("X-A", "1\r\n\r\nGET /smuggled HTTP/1.1")]
    [InlineData("X-A", "1\n")]
    [InlineData("X-A", "1\r")]
    [InlineData("X-A", "1\0")]
    [InlineData("X-A", "\u0100")]
    [InlineData("X-A", "\u20ac")]
    [InlineData("X-A: 1\r\nX-B", "2")]
    [InlineData("X A", "1")]
    [InlineData("X-A:", "1")]
    [InlineData("X-\u00e9", "1")]
    [InlineData("", "1")]
    public void Header_injection_is_refused(string name, string value)
    {
        var writer = new ArrayBufferWriter<byte>();
        Assert.Throws<ArgumentException>(() => RequestHeadWriter.WriteHeader(writer, name, value));
        Assert.Throws<ArgumentException>(() => RequestHeadWriter.WriteHeader(writer, name, new StringValues(["ok", value])));
        Assert.Equal(0, writer.WrittenCount);
    }
}
