namespace Ferry.Http1;

internal enum BodyKind
{
    /// <summary>No body follows the head.</summary>
    None,

    /// <summary>Exactly <see cref="BodyFraming.ContentLength"/> bytes follow.</summary>
    ContentLength,

    /// <summary>A chunked body follows; decode it with <see cref="ChunkedDecoder"/>.</summary>
    Chunked,

    /// <summary>The body runs until the upstream closes the connection.</summary>
    CloseDelimited,

    /// <summary>After a 101 the connection carries another protocol in both directions.</summary>
    Upgrade,
}

/// <summary>How a response body is delimited. <see cref="ContentLength"/> is the byte count for
/// <see cref="BodyKind.ContentLength"/>, 0 for <see cref="BodyKind.None"/>, -1 otherwise.
/// <see cref="KeepAlivePermitted"/>: the message framing and the upstream's Connection options allow the connection
/// to carry another request once this body is read.</summary>
internal readonly record struct BodyFraming(BodyKind Kind, long ContentLength, bool KeepAlivePermitted);

/// <summary>RFC 9112 §6.3: the one place that decides how a response body is delimited.</summary>
internal static class ResponseFraming
{
    public static BodyFraming Decide(bool isHeadRequest, bool requestedUpgrade, ResponseHead head)
    {
        ArgumentNullException.ThrowIfNull(head);

        if (head.StatusCode == 101)
        {
            // A 101 nobody asked for would turn the connection into something Ferry cannot frame.
            return requestedUpgrade
                ? new(BodyKind.Upgrade, -1, KeepAlivePermitted: false)
                : throw new Http1Exception(Http1Error.UnexpectedUpgrade);
        }

        bool reusable = IsReusable(head);

        // Rule 1: responses to HEAD, 1xx (the final response follows), 204 and 304 end at the head, whatever their
        // Content-Length or Transfer-Encoding say (those describe the representation, not this message).
        if (head.IsInformational || isHeadRequest || head.StatusCode is 204 or 304)
        {
            return new(BodyKind.None, 0, reusable);
        }

        if (head.HasTransferEncoding)
        {
            if (head.HasContentLength)
            {
                // Rule 3 lets a recipient prefer Transfer-Encoding, but also calls this an attempt at smuggling;
                // whoever sent it disagrees with some other hop about the length, so a proxy must not guess.
                throw new Http1Exception(Http1Error.ContentLengthWithTransferEncoding);
            }

            if (head.MinorVersion == 0)
            {
                // RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing.
                throw new Http1Exception(Http1Error.TransferEncodingInHttp10);
            }

            // Rule 4 only trusts chunked as the final coding; Ferry forwards bodies undecoded except for chunked,
            // so it accepts exactly one coding, chunked.
            return head.IsChunked
                ? new(BodyKind.Chunked, -1, reusable)
                : throw new Http1Exception(Http1Error.UnsupportedTransferEncoding);
        }

        if (head.ContentLengthError is { } error)
        {
            // Rule 5: an invalid Content-Length is unrecoverable.
            throw new Http1Exception(error);
        }

        if (head.HasContentLength)
        {
            return head.ContentLength == 0
                ? new(BodyKind.None, 0, reusable)
                : new(BodyKind.ContentLength, head.ContentLength, reusable);
        }

        // Rule 8: the body ends when the upstream closes, so the connection cannot be reused.
        return new(BodyKind.CloseDelimited, -1, KeepAlivePermitted: false);
    }

    // RFC 9112 §9.3: HTTP/1.1 is persistent unless "close"; HTTP/1.0 only with "keep-alive" (RFC 9112 §C.2.2).
    private static bool IsReusable(ResponseHead head) =>
        !head.ConnectionClose && (head.MinorVersion >= 1 || head.ConnectionKeepAlive);
}
