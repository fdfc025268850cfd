namespace Ferry.Http1;

/// <summary>Why an upstream's HTTP/1.1 message was rejected.</summary>
internal enum Http1Error
{
    /// <summary>The first line is not "HTTP/1.x SP 3DIGIT [SP reason-phrase]".</summary>
    InvalidStatusLine,

    /// <summary>A well-formed HTTP-version other than 1.x.</summary>
    UnsupportedHttpVersion,

    /// <summary>The status code is not three digits from 100 to 999.</summary>
    InvalidStatusCode,

    /// <summary>A line ends in LF without CR, or in CR without LF (RFC 9112 §2.2 allows rejecting both).</summary>
    InvalidLineEnding,

    /// <summary>A field name is empty, not an RFC 9110 token, or followed by whitespace before the colon.</summary>
    InvalidHeaderName,

    /// <summary>A field value holds a control character other than HTAB.</summary>
    InvalidHeaderValue,

    /// <summary>A field line starts with SP or HTAB (obs-fold, RFC 9112 §5.2).</summary>
    ObsoleteLineFolding,

    /// <summary>The head is longer than <see cref="Http1Limits.MaxResponseHeaderBytes"/>.</summary>
    HeaderSectionTooLarge,

    /// <summary>The head has more field lines than <see cref="Http1Limits.MaxResponseHeaderCount"/>.</summary>
    TooManyHeaders,

    /// <summary>Content-Length is not 1*DIGIT, or does not fit a long.</summary>
    InvalidContentLength,

    /// <summary>Several Content-Length values that differ (RFC 9110 §8.6).</summary>
    ConflictingContentLength,

    /// <summary>Both Transfer-Encoding and Content-Length: the classic smuggling vector (RFC 9112 §6.3 rule 3).</summary>
    ContentLengthWithTransferEncoding,

    /// <summary>Transfer codings other than exactly "chunked".</summary>
    UnsupportedTransferEncoding,

    /// <summary>Transfer-Encoding in an HTTP/1.0 response, whose framing RFC 9112 §6.1 says to treat as faulty.</summary>
    TransferEncodingInHttp10,

    /// <summary>101 Switching Protocols to a request that did not ask for an upgrade.</summary>
    UnexpectedUpgrade,

    /// <summary>A chunk size that is not hex, is missing, or overflows a long.</summary>
    InvalidChunkSize,

    /// <summary>A chunk extension with a control character.</summary>
    InvalidChunkExtension,

    /// <summary>A chunk-size line longer than <see cref="Http1Limits.MaxChunkLineBytes"/>.</summary>
    ChunkLineTooLong,

    /// <summary>Chunk data not followed by CRLF.</summary>
    InvalidChunkTerminator,

    /// <summary>A trailer section longer than <see cref="Http1Limits.MaxTrailerBytes"/>.</summary>
    TrailerSectionTooLarge,
}
