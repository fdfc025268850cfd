using Ferry.Http1;

namespace Ferry.Tests.Http1;

public class ResponseFramingTests
{
    [Theory]
    [InlineData("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")]
    [InlineData("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")]
    [InlineData("HTTP/1.1 200 OK\r\n\r\n")]
    [InlineData("HTTP/1.1 200 OK\r\nContent-Length: 10\r\nTransfer-Encoding: chunked\r\n\r\n")]
    [InlineData("HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n")]
    public void Response_to_head_has_no_body_whatever_its_headers_say(string text)
    {
        BodyFraming framing = Decide(text, isHeadRequest: true);
        Assert.Equal(new BodyFraming(BodyKind.None, 0, KeepAlivePermitted: true), framing);
    }

    [Theory]
    [InlineData("HTTP/1.1 100 Continue\r\n\r\n")]
    [InlineData("HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n")]
    [InlineData("HTTP/1.1 102 Processing\r\nContent-Length: 5\r\n\r\n")]
    public void Informational_responses_have_no_body(string text)
    {
        Assert.Equal(new BodyFraming(BodyKind.None, 0, KeepAlivePermitted: true), Decide(text));
    }

    [Fact]
    public void Switching_protocols_is_an_upgrade_only_when_one_was_requested()
    {
        const string Text = "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
        Assert.Equal(new BodyFraming(BodyKind.Upgrade, -1, KeepAlivePermitted: false), Decide(Text, requestedUpgrade: true));

        Http1Exception exception = Assert.Throws<Http1Exception>(() => Decide(Text, requestedUpgrade: false));
        Assert.Equal(Http1Error.UnexpectedUpgrade, exception.Error);
    }

    [Theory]
    [InlineData("HTTP/1.1 204 No Content\r\n\r\n")]
    [InlineData("HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n")]
    [InlineData("HTTP/1.1 304 Not Modified\r\nContent-Length: 5000\r\n\r\n")]
    [InlineData("HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n")]
    public void No_content_and_not_modified_have_no_body(string text)
    {
        Assert.Equal(new BodyFraming(BodyKind.None, 0, KeepAlivePermitted: true), Decide(text));
    }

    [Fact]
    public void Content_length_delimits_the_body()
    {
        Assert.Equal(new BodyFraming(BodyKind.ContentLength, 1234, KeepAlivePermitted: true),
            Decide("HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"));
    }

    [Fact]
    public void Content_length_zero_is_no_body()
    {
        Assert.Equal(new BodyFraming(BodyKind.None, 0, KeepAlivePermitted: true),
            Decide("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"));
    }

    [Fact]
    public void Identical_repeated_content_lengths_are_one_length()
    {
        Assert.Equal(new BodyFraming(BodyKind.ContentLength, 42, KeepAlivePermitted: true),
            Decide("HTTP/1.1 200 OK\r\nContent-Length: 42\r\nContent-Length: 42, 42\r\n\r\n"));
    }

    [Fact]
    public void Chunked_is_chunked()
    {
        Assert.Equal(new BodyFraming(BodyKind.Chunked, -1, KeepAlivePermitted: true),
            Decide("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"));
    }

    [Theory]
    [InlineData("HTTP/1.1 200 OK\r\n\r\n")]
    [InlineData("HTTP/1.1 200 OK\r\nConnection: keep-alive\r\n\r\n")]
    [InlineData("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n")]
    public void Without_length_the_body_is_close_delimited_and_the_connection_is_not_reusable(string text)
    {
        Assert.Equal(new BodyFraming(BodyKind.CloseDelimited, -1, KeepAlivePermitted: false), Decide(text));
    }

    [Theory]
    [InlineData("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", nameof(Http1Error.ContentLengthWithTransferEncoding))]
    [InlineData("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: abc\r\n\r\n", nameof(Http1Error.ContentLengthWithTransferEncoding))]
    [InlineData("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", nameof(Http1Error.ContentLengthWithTransferEncoding))]
    [InlineData("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", nameof(Http1Error.ConflictingContentLength))]
    [InlineData("HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n", nameof(Http1Error.ConflictingContentLength))]
    [InlineData("HTTP/1.1 200 OK\r\nContent-Length: five\r\n\r\n", nameof(Http1Error.InvalidContentLength))]
    [InlineData("HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n", nameof(Http1Error.InvalidContentLength))]
    [InlineData("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", nameof(Http1Error.UnsupportedTransferEncoding))]
    [InlineData("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", nameof(Http1Error.UnsupportedTransferEncoding))]
    [InlineData("HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\n", nameof(Http1Error.UnsupportedTransferEncoding))]
    [InlineData("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", nameof(Http1Error.UnsupportedTransferEncoding))]
    [InlineData("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", nameof(Http1Error.TransferEncodingInHttp10))]
    public void Ambiguous_framing_is_rejected(string text, string error)
    {
        Http1Exception exception = Assert.Throws<Http1Exception>(() => Decide(text));
        Assert.Equal(error, exception.Error.ToString());
        Assert.False(exception.IsHeaderSectionSize);
    }

    [Theory]
    [InlineData("HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\n", false)]
    [InlineData("HTTP/1.0 200 OK\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\n", true)]
    [InlineData("HTTP/1.0 200 OK\r\nContent-Length: 3\r\nConnection: Keep-Alive\r\nKeep-Alive: timeout=5\r\n\r\n", true)]
    [InlineData("HTTP/1.0 200 OK\r\nContent-Length: 3\r\nConnection: keep-alive, close\r\n\r\n", false)]
    [InlineData("HTTP/1.0 204 No Content\r\n\r\n", false)]
    [InlineData("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", true)]
    [InlineData("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\n", false)]
    [InlineData("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: X-A, Close\r\n\r\n", false)]
    [InlineData("HTTP/1.1 304 Not Modified\r\nConnection: close\r\n\r\n", false)]
    public void Reuse_follows_the_version_and_connection_options(string text, bool keepAlive)
    {
        Assert.Equal(keepAlive, Decide(text).KeepAlivePermitted);
    }

    private static BodyFraming Decide(string text, bool isHeadRequest = false, bool requestedUpgrade = false) =>
        ResponseFraming.Decide(isHeadRequest, requestedUpgrade, HeadText.Parse(text));
}
