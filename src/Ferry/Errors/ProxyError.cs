namespace Ferry.Errors;

// Where an exchange failed, named after RFC 9209 error types (docs/errors.md; docs/architecture.md, "Failures").
// Health logic, the Proxy-Status header, logs and metrics all use this one name.
internal enum ProxyError
{
    None,
    NoRoute,                   // no route matched the request
    DestinationUnavailable,    // every destination unavailable and panic disallowed
    ConnectionLimitReached,    // destination connection limit and queue full or queue timeout
    DnsError,                  // destination host name did not resolve
    DestinationUnroutable,     // no route to the destination address
    ConnectionRefused,         // connect refused or reset during connect
    ConnectionTimeout,         // connect did not complete in time (SYN lost, backlog full)
    LocalResourcesExhausted,   // EADDRNOTAVAIL / EMFILE: Ferry's problem, not the destination's
    TlsProtocolError,          // the TLS handshake with an https destination failed (alert, version, not TLS at all)
    TlsCertificateError,       // the https destination's certificate is untrusted, expired or for another name
    ConnectionTerminated,      // the destination closed or reset before any response byte
    RequestSendTimeout,        // the destination did not take the request in time
    ResponseTimeout,           // no response head in time
    ResponseHeaderSectionSize, // response head over the configured limits
    ResponseTrailerSectionSize, // trailer section of a chunked response over Http1Limits.MaxTrailerBytes (16 KiB, fixed)
    ProtocolError,             // malformed response head or body framing
    ResponseIncomplete,        // the destination failed mid-body: the client connection is aborted
    BodyInactivityTimeout,     // the destination stopped sending the body: the client connection is aborted
    ClientAborted,             // the client went away; nothing is sent, the upstream connection is closed
    ClientRequestBodyError,    // the client's request body was malformed or too slow
    RequestNotExpressible,     // the request cannot be written as HTTP/1.1 (bad method, target, field name or value)
    MethodNotImplemented,      // CONNECT: Ferry opens no tunnels to arbitrary authorities
    RequestBodyTooLarge,       // the request body is over the route's MaxRequestBodySize
    AmbiguousPath,             // a path servers interpret differently ('..', '%2F', '//'...): refused before routing
    InvalidHost,               // a redirect listener got a Host that is not host[:port]: no Location is built from it
    RateLimited,               // the route's RateLimiterPolicy refused the request (no permit, queue full)
}

internal static class ProxyErrors
{
    // RFC 9209 §2.3 error type and the status Ferry answers with when it still can.
    public static (int Status, string Type) Describe(ProxyError error) => error switch
    {
        ProxyError.NoRoute => (404, "destination_not_found"),
        ProxyError.DestinationUnavailable => (503, "destination_unavailable"),
        ProxyError.ConnectionLimitReached => (503, "connection_limit_reached"),
        ProxyError.DnsError => (502, "dns_error"),
        ProxyError.DestinationUnroutable => (502, "destination_ip_unroutable"),
        ProxyError.ConnectionRefused => (502, "connection_refused"),
        ProxyError.ConnectionTimeout => (504, "connection_timeout"),
        ProxyError.LocalResourcesExhausted => (502, "proxy_internal_error"),
        ProxyError.TlsProtocolError => (502, "tls_protocol_error"),
        ProxyError.TlsCertificateError => (502, "tls_certificate_error"),
        ProxyError.ConnectionTerminated => (502, "connection_terminated"),
        ProxyError.RequestSendTimeout => (504, "http_request_error"),
        ProxyError.ResponseTimeout => (504, "http_response_timeout"),
        ProxyError.ResponseHeaderSectionSize => (502, "http_response_header_section_size"),
        ProxyError.ResponseTrailerSectionSize => (502, "http_response_trailer_section_size"),
        ProxyError.ProtocolError => (502, "http_protocol_error"),
        ProxyError.ResponseIncomplete => (502, "http_response_incomplete"),
        ProxyError.BodyInactivityTimeout => (504, "http_response_timeout"),
        ProxyError.ClientAborted => (499, "client_aborted"),
        ProxyError.ClientRequestBodyError => (400, "http_request_error"),
        ProxyError.RequestNotExpressible => (400, "http_request_error"),
        ProxyError.MethodNotImplemented => (501, "http_request_error"),
        ProxyError.AmbiguousPath => (400, "http_request_error"),
        ProxyError.InvalidHost => (400, "http_request_error"),
        ProxyError.RequestBodyTooLarge => (413, "http_request_error"),
        // RFC 9209 §2.3.15: refused by the intermediary's configuration or policy, never forwarded.
        ProxyError.RateLimited => (429, "http_request_denied"),
        _ => (500, "proxy_internal_error"),
    };

    // Whether the failure says something about the destination's health (docs/health.md): local resource exhaustion,
    // client behaviour and keep-alive races on reused connections never do.
    public static bool IsConnectFailure(ProxyError error) =>
        error is ProxyError.ConnectionRefused or ProxyError.ConnectionTimeout or ProxyError.DestinationUnroutable or ProxyError.DnsError
            or ProxyError.TlsProtocolError or ProxyError.TlsCertificateError;
}

// Raised inside the engine; caught once by the forwarder, which turns it into a response or an abort.
internal sealed class ProxyException(ProxyError error, string details, Exception? inner = null)
    : Exception($"{error}: {details}", inner)
{
    public ProxyError Error { get; } = error;
    public string Details { get; } = details;

    // No byte of a response arrived before the failure: the request may be sent again.
    public bool BeforeResponse { get; init; }

    // The destination cannot have processed the request: its FIN arrived and its TCP stack never acknowledged a byte
    // of the request (docs/replay.md, "The evidence for a POST").
    public bool ProvenUnprocessed { get; init; }

    // Sent as Retry-After (whole seconds, rounded up) when Ferry answers the error itself.
    public TimeSpan? RetryAfter { get; init; }
}
