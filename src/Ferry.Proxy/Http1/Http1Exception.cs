namespace Ferry.Http1;

/// <summary>A message from an upstream that Ferry refuses to interpret. Forwarding maps it to a Proxy-Status.</summary>
internal sealed class Http1Exception : Exception
{
    public Http1Exception(Http1Error error)
        : base(Describe(error))
    {
        Error = error;
    }

    public Http1Error Error { get; }

    /// <summary>True when the head was refused for its size rather than its syntax: RFC 9209 names that
    /// http_response_header_section_size, every other reason is http_protocol_error.</summary>
    public bool IsHeaderSectionSize => Error is Http1Error.HeaderSectionTooLarge or Http1Error.TooManyHeaders;

    private static string Describe(Http1Error error) => error switch
    {
        Http1Error.InvalidStatusLine => "The response status line is malformed.",
        Http1Error.UnsupportedHttpVersion => "The response HTTP version is not 1.x.",
        Http1Error.InvalidStatusCode => "The response status code is not three digits from 100 to 999.",
        Http1Error.InvalidLineEnding => "A line does not end in CRLF.",
        Http1Error.InvalidHeaderName => "A field name is not a token or has whitespace before the colon.",
        Http1Error.InvalidHeaderValue => "A field value contains a control character.",
        Http1Error.ObsoleteLineFolding => "A field line is folded (obs-fold).",
        Http1Error.HeaderSectionTooLarge => "The response header section exceeds the size limit.",
        Http1Error.TooManyHeaders => "The response header section exceeds the field count limit.",
        Http1Error.InvalidContentLength => "The Content-Length value is invalid.",
        Http1Error.ConflictingContentLength => "The response has differing Content-Length values.",
        Http1Error.ContentLengthWithTransferEncoding => "The response has both Content-Length and Transfer-Encoding.",
        Http1Error.UnsupportedTransferEncoding => "The response transfer coding is not exactly chunked.",
        Http1Error.TransferEncodingInHttp10 => "An HTTP/1.0 response has Transfer-Encoding.",
        Http1Error.UnexpectedUpgrade => "The response switches protocols although no upgrade was requested.",
        Http1Error.InvalidChunkSize => "A chunk size is invalid.",
        Http1Error.InvalidChunkExtension => "A chunk extension contains a control character.",
        Http1Error.ChunkLineTooLong => "A chunk-size line exceeds the size limit.",
        Http1Error.InvalidChunkTerminator => "Chunk data is not followed by CRLF.",
        Http1Error.TrailerSectionTooLarge => "The trailer section exceeds the size limit.",
        _ => throw new ArgumentOutOfRangeException(nameof(error), error, null),
    };
}
