using System.Buffers;
using Ferry.Http1;
using Ferry.Tests.Support;

namespace Ferry.Tests.Http1;

public class ResponseHeadParserTests
{
    public static TheoryData<string> ValidHeads => new()
    {
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\n",
        "HTTP/1.1 200\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\n\r\n",
        "HTTP/1.1 204 \r\n\r\n",
        "HTTP/1.0 200 Custom Reason\twith tab\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5, max=100\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nconnection: X-Trace, Keep-Alive\r\nX-Trace: 1\r\n\r\n",
        "HTTP/1.1 404 Not Found\r\nServer: test\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nVary: Accept-Encoding\r\n"
            + "Cache-Control: no-cache\r\nX-Empty:\r\nX-Spaces: \t padded \t\r\nX-Latin1: caf\u00e9 \u00ff\r\n"
            + "X-A: 1\r\nX-B: 2\r\nX-C: 3\r\nX-D: 4\r\nContent-Length: 0\r\n\r\n",
    };

    [Theory]
    [MemberData(nameof(ValidHeads))]
    public void Every_prefix_needs_more_bytes_and_consumes_nothing(string text)
    {
        byte[] bytes = Segments.Latin1(text);
        var parser = new ResponseHeadParser(Http1Limits.Default);
        var head = new ResponseHead();
        head.SetStatusLine(1, 599, "untouched");

        for (int length = 0; length < bytes.Length; length++)
        {
            var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(bytes, 0, length));
            Assert.False(parser.TryParse(ref reader, head), $"prefix of {length} bytes");
            Assert.Equal(0, reader.Consumed);
            Assert.Equal(599, head.StatusCode);
        }
    }

    [Theory]
    [MemberData(nameof(ValidHeads))]
    public void Every_two_segment_split_parses_identically_and_leaves_the_body(string text)
    {
        byte[] head = Segments.Latin1(text);
        byte[] withBody = [.. head, .. "BODY"u8];
        string expected = Describe(ParseOne(withBody, out long expectedConsumed));
        Assert.Equal(head.Length, expectedConsumed);

        var parser = new ResponseHeadParser(Http1Limits.Default);
        var reused = new ResponseHead();
        foreach ((int cut, ReadOnlySequence<byte> sequence) in Segments.AllTwoWaySplits(withBody))
        {
            var reader = new SequenceReader<byte>(sequence);
            Assert.True(parser.TryParse(ref reader, reused), $"cut at {cut}");
            Assert.Equal(head.Length, reader.Consumed);
            Assert.True(reader.IsNext("BODY"u8));
            Assert.Equal(expected, Describe(reused));
        }
    }

    [Fact]
    public void Status_line_and_fields_are_exposed_as_received()
    {
        ResponseHead head = HeadText.Parse(
            "HTTP/1.1 404 Not Found\r\nServer: test\r\nX-Spaces: \t padded \t\r\nX-Empty:\r\nX-Latin1: caf\u00e9 \u00ff\r\n"
            + "x-lower: a\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n");

        Assert.Equal(404, head.StatusCode);
        Assert.Equal(1, head.MinorVersion);
        Assert.Equal("Not Found", head.ReasonPhrase);
        Assert.Equal(
        [
            new("Server", "test"), new("X-Spaces", "padded"), new("X-Empty", ""), new("X-Latin1", "caf\u00e9 \u00ff"),
            new("x-lower", "a"), new("Set-Cookie", "a=1"), new("Set-Cookie", "b=2"),
        ], head.Headers);
        Assert.Equal(-1, head.ContentLength);
        Assert.False(head.HasContentLength);
        Assert.False(head.HasTransferEncoding);
        Assert.False(head.IsInformational);
    }

    [Theory]
    [InlineData("HTTP/1.1 200 OK\r\n\r\n", 1, 200, "OK")]
    [InlineData("HTTP/1.1 200\r\n\r\n", 1, 200, "")]
    [InlineData("HTTP/1.1 200 \r\n\r\n", 1, 200, "")]
    [InlineData("HTTP/1.0 503 Service Unavailable\r\n\r\n", 0, 503, "Service Unavailable")]
    [InlineData("HTTP/1.2 999 Future\r\n\r\n", 1, 999, "Future")]
    [InlineData("HTTP/1.1 100 Continue\r\n\r\n", 1, 100, "Continue")]
    [InlineData("HTTP/1.1 200 \u00c7a marche \t\r\n\r\n", 1, 200, "\u00c7a marche \t")]
    public void Status_line_variants(string text, int minor, int status, string reason)
    {
        ResponseHead head = HeadText.Parse(text);
        Assert.Equal(minor, head.MinorVersion);
        Assert.Equal(status, head.StatusCode);
        Assert.Equal(reason, head.ReasonPhrase);
    }

    [Fact]
    public void Well_known_names_are_cached_instances_in_canonical_and_lower_case()
    {
        ResponseHead first = HeadText.Parse("HTTP/1.1 200 OK\r\nContent-Length: 1\r\ncontent-type: a\r\nX-Custom: 1\r\n\r\n");
        ResponseHead second = HeadText.Parse("HTTP/1.1 200 OK\r\nContent-Length: 1\r\ncontent-type: a\r\nX-Custom: 1\r\n\r\n");

        Assert.Same(first.Headers[0].Key, second.Headers[0].Key);
        Assert.Same(first.Headers[1].Key, second.Headers[1].Key);
        Assert.Equal("content-type", first.Headers[1].Key);
        Assert.Same(first.ReasonPhrase, second.ReasonPhrase);
        Assert.NotSame(first.Headers[2].Key, second.Headers[2].Key);
    }

    [Fact]
    public void Framing_fields_are_recognised_in_any_case()
    {
        ResponseHead head = HeadText.Parse("HTTP/1.1 200 OK\r\nCONTENT-LENGTH: 12\r\nCoNnEcTiOn: CLOSE\r\n\r\n");
        Assert.Equal("CONTENT-LENGTH", head.Headers[0].Key);
        Assert.Equal(12, head.ContentLength);
        Assert.True(head.ConnectionClose);
    }

    [Theory]
    [InlineData("Content-Length: 42", 42L, null)]
    [InlineData("Content-Length: 0", 0L, null)]
    [InlineData("Content-Length: 007", 7L, null)]
    [InlineData("Content-Length: 42, 42", 42L, null)]
    [InlineData("Content-Length: 42\r\nContent-Length: 42", 42L, null)]
    [InlineData("Content-Length: 9223372036854775807", long.MaxValue, null)]
    [InlineData("Content-Length: 9223372036854775808", -1L, nameof(Http1Error.InvalidContentLength))]
    [InlineData("Content-Length: 42, 43", -1L, nameof(Http1Error.ConflictingContentLength))]
    [InlineData("Content-Length: 42\r\nContent-Length: 43", -1L, nameof(Http1Error.ConflictingContentLength))]
    [InlineData("Content-Length: -1", -1L, nameof(Http1Error.InvalidContentLength))]
    [InlineData("Content-Length: +1", -1L, nameof(Http1Error.InvalidContentLength))]
    [InlineData("Content-Length: 1 2", -1L, nameof(Http1Error.InvalidContentLength))]
    [InlineData("Content-Length: 0x10", -1L, nameof(Http1Error.InvalidContentLength))]
    [InlineData("Content-Length:", -1L, nameof(Http1Error.InvalidContentLength))]
    [InlineData("Content-Length: 42\r\nContent-Length: abc", -1L, nameof(Http1Error.InvalidContentLength))]
    public void Content_length_is_parsed_and_problems_are_recorded(string fields, long expected, string? error)
    {
        ResponseHead head = HeadText.Parse($"HTTP/1.1 200 OK\r\n{fields}\r\n\r\n");
        Assert.True(head.HasContentLength);
        Assert.Equal(expected, head.ContentLength);
        Assert.Equal(error, head.ContentLengthError?.ToString());
    }

    [Theory]
    [InlineData("Transfer-Encoding: chunked", true)]
    [InlineData("Transfer-Encoding: Chunked", true)]
    [InlineData("Transfer-Encoding: , chunked ,", true)]
    [InlineData("Transfer-Encoding: gzip, chunked", false)]
    [InlineData("Transfer-Encoding: chunked, chunked", false)]
    [InlineData("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked", false)]
    [InlineData("Transfer-Encoding: gzip", false)]
    [InlineData("Transfer-Encoding:", false)]
    [InlineData("Transfer-Encoding: chunked;q=1", false)]
    public void Transfer_encoding_is_chunked_only_when_chunked_is_the_only_coding(string fields, bool chunked)
    {
        ResponseHead head = HeadText.Parse($"HTTP/1.1 200 OK\r\n{fields}\r\n\r\n");
        Assert.True(head.HasTransferEncoding);
        Assert.Equal(chunked, head.IsChunked);
    }

    [Fact]
    public void Connection_options_set_flags_and_list_other_tokens_in_lower_case()
    {
        ResponseHead head = HeadText.Parse("HTTP/1.1 101 Switching Protocols\r\nConnection: Keep-Alive, X-Trace,, close\r\n"
            + "Connection: UPGRADE, TE, Proxy-Connection\r\n\r\n");
        Assert.True(head.ConnectionKeepAlive);
        Assert.True(head.ConnectionClose);
        Assert.True(head.ConnectionUpgrade);
        Assert.Equal(["x-trace", "te", "proxy-connection"], head.ConnectionTokens);
    }

    [Theory]
    [InlineData("Keep-Alive: timeout=5, max=100", 5, 100)]
    [InlineData("Keep-Alive: TIMEOUT = 30", 30, -1)]
    [InlineData("Keep-Alive: max=7", -1, 7)]
    [InlineData("Keep-Alive: timeout=abc, max=-1", -1, -1)]
    [InlineData("Keep-Alive: timeout=99999999999", -1, -1)]
    [InlineData("Keep-Alive: timeout", -1, -1)]
    [InlineData("Keep-Alive: timeout=5\r\nKeep-Alive: timeout=6, max=x", 6, -1)]
    public void Keep_alive_parameters(string fields, int timeout, int max)
    {
        ResponseHead head = HeadText.Parse($"HTTP/1.1 200 OK\r\n{fields}\r\n\r\n");
        Assert.Equal(timeout, head.KeepAliveTimeoutSeconds);
        Assert.Equal(max, head.KeepAliveMax);
    }

    [Fact]
    public void A_reused_head_is_reset_by_the_next_parse()
    {
        var parser = new ResponseHeadParser(Http1Limits.Default);
        var head = new ResponseHead();
        var first = new SequenceReader<byte>(new ReadOnlySequence<byte>(Segments.Latin1(
            "HTTP/1.0 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: gzip\r\nConnection: close, X-A\r\nKeep-Alive: timeout=1, max=2\r\n\r\n")));
        Assert.True(parser.TryParse(ref first, head));

        var second = new SequenceReader<byte>(new ReadOnlySequence<byte>(Segments.Latin1("HTTP/1.1 204 No Content\r\n\r\n")));
        Assert.True(parser.TryParse(ref second, head));

        Assert.Equal(Describe(new ResponseHeadForComparison(204, "No Content")), Describe(head));
    }

    public static TheoryData<string, string> MalformedHeads => new()
    {
        { "HTTP/1.1 200 OK\n\r\n", nameof(Http1Error.InvalidLineEnding) },
        { "HTTP/1.1 200 OK\r\nA: b\n\r\n", nameof(Http1Error.InvalidLineEnding) },
        { "HTTP/1.1 200 OK\r\nA: b\r\n\n", nameof(Http1Error.InvalidLineEnding) },
        { "HTTP/1.1 200 OK\n\n", nameof(Http1Error.InvalidLineEnding) },
        { "http/1.1 200 OK\r\n\r\n", nameof(Http1Error.InvalidStatusLine) },
        { "HTTP/1.1\r\n\r\n", nameof(Http1Error.InvalidStatusLine) },
        { "HTTP/1.1x200 OK\r\n\r\n", nameof(Http1Error.InvalidStatusLine) },
        { "HTTP/1.x 200 OK\r\n\r\n", nameof(Http1Error.InvalidStatusLine) },
        { "HTTP/11 200 OK\r\n\r\n", nameof(Http1Error.InvalidStatusLine) },
        { "\r\nHTTP/1.1 200 OK\r\n\r\n", nameof(Http1Error.InvalidStatusLine) },
        { "HTTP/1.1 200 O\u0001K\r\n\r\n", nameof(Http1Error.InvalidStatusLine) },
        { "HTTP/1.1 200 O\rK\r\n\r\n", nameof(Http1Error.InvalidStatusLine) },
        { "HTTP/2.0 200 OK\r\n\r\n", nameof(Http1Error.UnsupportedHttpVersion) },
        { "HTTP/2 200 OK\r\n\r\n", nameof(Http1Error.UnsupportedHttpVersion) },
        { "HTTP/0.9 200 OK\r\n\r\n", nameof(Http1Error.UnsupportedHttpVersion) },
        { "HTTP/1.1 20 OK\r\n\r\n", nameof(Http1Error.InvalidStatusCode) },
        { "HTTP/1.1 2000 OK\r\n\r\n", nameof(Http1Error.InvalidStatusCode) },
        { "HTTP/1.1 099 OK\r\n\r\n", nameof(Http1Error.InvalidStatusCode) },
        { "HTTP/1.1 20a OK\r\n\r\n", nameof(Http1Error.InvalidStatusCode) },
        { "HTTP/1.1  200 OK\r\n\r\n", nameof(Http1Error.InvalidStatusCode) },
        { "HTTP/1.1 200\tOK\r\n\r\n", nameof(Http1Error.InvalidStatusCode) },
        { "HTTP/1.1 200 OK\r\nX-A : b\r\n\r\n", nameof(Http1Error.InvalidHeaderName) },
        { "HTTP/1.1 200 OK\r\nX-A\t: b\r\n\r\n", nameof(Http1Error.InvalidHeaderName) },
        { "HTTP/1.1 200 OK\r\n: b\r\n\r\n", nameof(Http1Error.InvalidHeaderName) },
        { "HTTP/1.1 200 OK\r\nX-A b\r\n\r\n", nameof(Http1Error.InvalidHeaderName) },
        { "HTTP/1.1 200 OK\r\nX(A): b\r\n\r\n", nameof(Http1Error.InvalidHeaderName) },
        { "HTTP/1.1 200 OK\r\nX-\u00e9: b\r\n\r\n", nameof(Http1Error.InvalidHeaderName) },
        { "HTTP/1.1 200 OK\r\n\rX-A: b\r\n\r\n", nameof(Http1Error.InvalidHeaderName) },
        { "HTTP/1.1 200 OK\r\n X-A: b\r\n\r\n", nameof(Http1Error.ObsoleteLineFolding) },
        { "HTTP/1.1 200 OK\r\nX-A: b\r\n c\r\n\r\n", nameof(Http1Error.ObsoleteLineFolding) },
        { "HTTP/1.1 200 OK\r\nX-A: b\r\n\tc\r\n\r\n", nameof(Http1Error.ObsoleteLineFolding) },
        { "HTTP/1.1 200 OK\r\nX-A: b\rc\r\n\r\n", nameof(Http1Error.InvalidHeaderValue) },
        { "HTTP/1.1 200 OK\r\nX-A: b\0c\r\n\r\n", nameof(Http1Error.InvalidHeaderValue) },
        { "HTTP/1.1 200 OK\r\nX-A: b\u007fc\r\n\r\n", nameof(Http1Error.InvalidHeaderValue) },
        { "HTTP/1.1 200 OK\r\nX-A: b\u001bc\r\n\r\n", nameof(Http1Error.InvalidHeaderValue) },
    };

    [Theory]
    [MemberData(nameof(MalformedHeads))]
    public void Malformed_heads_are_rejected_with_their_reason(string text, string error)
    {
        byte[] bytes = Segments.Latin1(text);
        foreach ((int cut, ReadOnlySequence<byte> sequence) in Segments.AllTwoWaySplits(bytes))
        {
            var parser = new ResponseHeadParser(Http1Limits.Default);
            Http1Exception exception = Assert.Throws<Http1Exception>(() =>
            {
                var reader = new SequenceReader<byte>(sequence);
                parser.TryParse(ref reader, new ResponseHead());
            });
            Assert.True(error == exception.Error.ToString(), $"cut at {cut}: expected {error}, got {exception.Error}");
            Assert.False(exception.IsHeaderSectionSize);
        }
    }

    [Fact]
    public void Field_count_at_the_limit_parses_and_one_more_is_too_many()
    {
        var limits = new Http1Limits { MaxResponseHeaderCount = 3 };
        Assert.Equal(3, HeadText.Parse("HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", limits).Headers.Count);

        Http1Exception exception = Assert.Throws<Http1Exception>(
            () => HeadText.Parse("HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n", limits));
        Assert.Equal(Http1Error.TooManyHeaders, exception.Error);
        Assert.True(exception.IsHeaderSectionSize);
    }

    [Fact]
    public void Head_of_exactly_the_size_limit_parses_and_one_byte_more_is_too_large()
    {
        byte[] head = Segments.Latin1("HTTP/1.1 200 OK\r\nX-Filler: " + new string('a', 200) + "\r\n\r\n");
        byte[] withBody = [.. head, .. "BODY"u8];

        var atLimit = new ResponseHeadParser(new Http1Limits { MaxResponseHeaderBytes = head.Length });
        var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(withBody));
        Assert.True(atLimit.TryParse(ref reader, new ResponseHead()));
        Assert.Equal(head.Length, reader.Consumed);

        var belowLimit = new ResponseHeadParser(new Http1Limits { MaxResponseHeaderBytes = head.Length - 1 });
        Http1Exception exception = Assert.Throws<Http1Exception>(() =>
        {
            var tooLarge = new SequenceReader<byte>(new ReadOnlySequence<byte>(withBody));
            belowLimit.TryParse(ref tooLarge, new ResponseHead());
        });
        Assert.Equal(Http1Error.HeaderSectionTooLarge, exception.Error);
        Assert.True(exception.IsHeaderSectionSize);
    }

    [Fact]
    public void Incomplete_head_is_too_large_as_soon_as_the_limit_is_reached_without_its_end()
    {
        const int Limit = 100;
        var parser = new ResponseHeadParser(new Http1Limits { MaxResponseHeaderBytes = Limit });
        // A head that never ends: an endless field value.
        byte[] endless = Segments.Latin1("HTTP/1.1 200 OK\r\nX-Endless: " + new string('a', 300));

        var below = new SequenceReader<byte>(new ReadOnlySequence<byte>(endless, 0, Limit - 1));
        Assert.False(parser.TryParse(ref below, new ResponseHead()));
        Assert.Equal(0, below.Consumed);

        foreach (int available in new[] { Limit, Limit + 1, endless.Length })
        {
            Http1Exception exception = Assert.Throws<Http1Exception>(() =>
            {
                var reader = new SequenceReader<byte>(Segments.Split(endless[..available], available / 2));
                parser.TryParse(ref reader, new ResponseHead());
            });
            Assert.Equal(Http1Error.HeaderSectionTooLarge, exception.Error);
        }
    }

    [Fact]
    public void Consecutive_heads_in_one_buffer_parse_one_after_the_other()
    {
        byte[] bytes = Segments.Latin1("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        var parser = new ResponseHeadParser(Http1Limits.Default);
        var head = new ResponseHead();
        var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(bytes));

        Assert.True(parser.TryParse(ref reader, head));
        Assert.True(head.IsInformational);
        Assert.True(parser.TryParse(ref reader, head));
        Assert.Equal(200, head.StatusCode);
        Assert.True(reader.End);
    }

    [Fact]
    public void A_value_repeated_by_the_next_response_on_the_connection_reuses_the_string_and_a_changed_one_does_not()
    {
        var parser = new ResponseHeadParser(Http1Limits.Default);
        var head = new ResponseHead();
        ResponseHead ParseNext(string text)
        {
            var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(Segments.Latin1(text)));
            Assert.True(parser.TryParse(ref reader, head));
            return head;
        }

        var first = ParseNext("HTTP/1.1 200 OK\r\nServer: up\r\nDate: one\r\nX-Id: caf\u00e9\r\nContent-Length: 0\r\n\r\n").Headers.ToArray();
        var second = ParseNext("HTTP/1.1 200 OK\r\nServer: up\r\nDate: two\r\nX-Id: caf\u00e9\r\nContent-Length: 0\r\n\r\n").Headers.ToArray();
        Assert.Same(first[0].Value, second[0].Value);
        Assert.Equal("two", second[1].Value);
        Assert.Equal("caf\u00e9", second[2].Value);
        Assert.Same(first[3].Value, second[3].Value);

        // Same value under another name, or at another position: decoded anew, and still right.
        var third = ParseNext("HTTP/1.1 200 OK\r\nX-Other: up\r\nServer: up\r\n\r\n").Headers.ToArray();
        Assert.NotSame(second[0].Value, third[0].Value);
        Assert.Equal([new("X-Other", "up"), new("Server", "up")], third);
    }

    private static ResponseHead ParseOne(byte[] bytes, out long consumed)
    {
        var head = new ResponseHead();
        var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(bytes));
        Assert.True(new ResponseHeadParser(Http1Limits.Default).TryParse(ref reader, head));
        consumed = reader.Consumed;
        return head;
    }

    // Everything a ResponseHead exposes, as one comparable string.
    private static string Describe(ResponseHead head) =>
        $"{head.MinorVersion} {head.StatusCode} [{head.ReasonPhrase}] "
        + string.Join("|", head.Headers.Select(h => $"{h.Key}={h.Value}"))
        + $" cl={head.ContentLength} hascl={head.HasContentLength} clerr={head.ContentLengthError} te={head.HasTransferEncoding}"
        + $" chunked={head.IsChunked} close={head.ConnectionClose} ka={head.ConnectionKeepAlive} up={head.ConnectionUpgrade}"
        + $" tokens={string.Join(",", head.ConnectionTokens)} kat={head.KeepAliveTimeoutSeconds} kam={head.KeepAliveMax}";

    private static string Describe(ResponseHeadForComparison expected)
    {
        var head = new ResponseHead();
        head.SetStatusLine(1, expected.StatusCode, expected.ReasonPhrase);
        return Describe(head);
    }

    private readonly record struct ResponseHeadForComparison(int StatusCode, string ReasonPhrase);
}
