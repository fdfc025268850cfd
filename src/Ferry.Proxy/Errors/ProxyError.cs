namespace Ferry.Errors;

// Where an exchange failed, named after RFC 9209 error types (docs/errors.md; docs/architecture.md, "Failures").
// Health logic, the Proxy-Status header, logs and metrics all use this one name; what each means to them is its row in
// ProxyErrorTable.
internal enum ProxyError
{
    None,
    NoRoute,                   // no route matched the request
    DestinationUnavailable,    // every destination unavailable and panic disallowed
    ConnectionLimitReached,    // destination connection limit and queue full or queue timeout
    DnsError,                  // destination host name did not resolve
    DestinationUnroutable,     // no route to the destination address
    ConnectionRefused,         // connect refused or reset during connect, or failed for a reason the socket does not name
    ConnectionTimeout,         // connect or TLS handshake did not complete in time (SYN lost, backlog full)
    LocalResourcesExhausted,   // EADDRNOTAVAIL / EMFILE / ENOBUFS: Ferry's problem, not the destination's
    TlsProtocolError,          // the TLS handshake with an https destination failed (alert, version, not TLS at all), or an alert came in place of the response
    TlsCertificateError,       // the https destination's certificate is untrusted, expired or for another name
    ConnectionTerminated,      // the destination closed or reset before the whole response head arrived
    RequestSendTimeout,        // the destination did not take the request in time
    ResponseTimeout,           // no response head in time
    ResponseHeaderSectionSize, // response head over the configured limits
    ResponseTrailerSectionSize, // trailer section of a chunked response over Http1Limits.MaxTrailerBytes (16 KiB, fixed)
    ProtocolError,             // malformed response head or body framing
    ResponseIncomplete,        // the destination failed mid-body or mid-tunnel: the client connection is aborted
    BodyInactivityTimeout,     // the destination stopped sending the body: the client connection is aborted
    ClientAborted,             // the client went away; nothing is sent, an upstream connection in use is closed
    ClientRequestBodyError,    // the client's request body was malformed or too slow
    RequestNotExpressible,     // the request cannot be written as HTTP/1.1 (bad method, target, field name or value)
    MethodNotImplemented,      // CONNECT: Ferry opens no tunnels to arbitrary authorities
    RequestBodyTooLarge,       // the request body is over the route's MaxRequestBodySize
    AmbiguousPath,             // a path servers interpret differently ('..', '%2F', '//'...): refused before routing
    InvalidHost,               // a redirect listener got a Host that is not host[:port]: no Location is built from it
    RateLimited,               // the route's RateLimiterPolicy refused the request (no permit, queue full)
}
