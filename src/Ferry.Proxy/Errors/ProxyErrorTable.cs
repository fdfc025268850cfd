namespace Ferry.Errors;

// Whose failure it is. docs/errors.md explains each error to the one who has to act on it.
internal enum FaultSide
{
    None,        // not a failure
    Client,      // the request or the client's connection
    Destination, // the destination, or every destination of the cluster
    Local,       // Ferry's own limits or resources
}

// Whether a failed attempt counts against the destination's passive health (docs/health.md, "Passive health"). Counting
// anything else would let Ferry's own trouble, or its clients', take healthy destinations out of rotation.
internal enum HealthCount
{
    Never,
    Always,
    // On a reused connection the failure is a keep-alive race: the destination closed an idle connection as the request
    // went out, which says nothing about whether it can serve requests. These are the failures ReplayPolicy replays.
    NewConnectionOnly,
}

// One error's meaning everywhere it matters. Status: what Ferry answers when it still can (499 is only logged: the
// client is gone). Type: the RFC 9209 §2.3 error type of Proxy-Status, logs and metrics. ConnectFailure: the lease
// failed before anything was sent, so the forwarder moves to the next destination at once, whatever Retry:OnErrors says.
internal sealed record ProxyErrorInfo(ProxyError Error, int Status, string Type, FaultSide Fault, HealthCount Health, bool ConnectFailure)
{
    public bool CountsAgainstDestination(bool reusedConnection) =>
        Health == HealthCount.Always || (Health == HealthCount.NewConnectionOnly && !reusedConnection);
}

// docs/errors.md is the client-facing side of this table; ProxyErrorTableTests holds the two together.
internal static class ProxyErrorTable
{
    private const FaultSide Client = FaultSide.Client;
    private const FaultSide Destination = FaultSide.Destination;
    private const FaultSide Local = FaultSide.Local;
    private const HealthCount Never = HealthCount.Never;
    private const HealthCount Always = HealthCount.Always;

    private static readonly ProxyErrorInfo[] Rows = Index(
    [
        new(ProxyError.None, 0, "", FaultSide.None, Never, false),
        new(ProxyError.NoRoute, 404, "destination_not_found", Client, Never, false),
        // No attempt was made: every destination is out of rotation already.
        new(ProxyError.DestinationUnavailable, 503, "destination_unavailable", Destination, Never, false),
        new(ProxyError.ConnectionLimitReached, 503, "connection_limit_reached", Local, Never, false),
        // Nothing connected: the destination refused, did not answer the SYN, or cannot be reached or resolved.
        new(ProxyError.DnsError, 502, "dns_error", Destination, Always, true),
        new(ProxyError.DestinationUnroutable, 502, "destination_ip_unroutable", Destination, Always, true),
        new(ProxyError.ConnectionRefused, 502, "connection_refused", Destination, Always, true),
        new(ProxyError.ConnectionTimeout, 504, "connection_timeout", Destination, Always, true),
        // EADDRNOTAVAIL, EMFILE: Ferry's own shortage, an internal error unrelated to the destination.
        new(ProxyError.LocalResourcesExhausted, 502, "proxy_internal_error", Local, Never, false),
        // The handshake of a new connection failed: the destination presented a certificate that does not check out,
        // or does not speak TLS as configured. An unreadable CA bundle never gets here: it fails the configuration.
        new(ProxyError.TlsProtocolError, 502, "tls_protocol_error", Destination, Always, true),
        new(ProxyError.TlsCertificateError, 502, "tls_certificate_error", Destination, Always, true),
        // On a fresh connection the destination dropped a request it had accepted; on a reused one, a keep-alive race.
        new(ProxyError.ConnectionTerminated, 502, "connection_terminated", Destination, HealthCount.NewConnectionOnly, false),
        // It took the connection but did not read the request, answer, or finish the body in time, or answered
        // something that is not HTTP/1.1.
        new(ProxyError.RequestSendTimeout, 504, "http_request_error", Destination, Always, false),
        new(ProxyError.ResponseTimeout, 504, "http_response_timeout", Destination, Always, false),
        new(ProxyError.ResponseHeaderSectionSize, 502, "http_response_header_section_size", Destination, Always, false),
        new(ProxyError.ResponseTrailerSectionSize, 502, "http_response_trailer_section_size", Destination, Always, false),
        new(ProxyError.ProtocolError, 502, "http_protocol_error", Destination, Always, false),
        new(ProxyError.ResponseIncomplete, 502, "http_response_incomplete", Destination, Always, false),
        new(ProxyError.BodyInactivityTimeout, 504, "http_response_timeout", Destination, Always, false),
        // nginx's 499; the type is Ferry's own, as no Proxy-Status is ever sent for it.
        new(ProxyError.ClientAborted, 499, "client_aborted", Client, Never, false),
        new(ProxyError.ClientRequestBodyError, 400, "http_request_error", Client, Never, false),
        new(ProxyError.RequestNotExpressible, 400, "http_request_error", Client, Never, false),
        new(ProxyError.MethodNotImplemented, 501, "http_request_error", Client, Never, false),
        new(ProxyError.RequestBodyTooLarge, 413, "http_request_error", Client, Never, false),
        new(ProxyError.AmbiguousPath, 400, "http_request_error", Client, Never, false),
        new(ProxyError.InvalidHost, 400, "http_request_error", Client, Never, false),
        // RFC 9209's type for a request the intermediary's configuration or policy refused: it was never forwarded.
        new(ProxyError.RateLimited, 429, "http_request_denied", Client, Never, false),
    ]);

    public static ProxyErrorInfo Of(ProxyError error) => Rows[(int)error];

    public static IReadOnlyList<ProxyErrorInfo> All => Rows;

    // The rows in enum order, so that a lookup is an index. A value without exactly one row fails the first lookup.
    private static ProxyErrorInfo[] Index(ProxyErrorInfo[] rows)
    {
        var values = Enum.GetValues<ProxyError>();
        var indexed = new ProxyErrorInfo?[values.Length];
        foreach (var row in rows)
        {
            if (indexed[(int)row.Error] is not null)
            {
                throw new InvalidOperationException($"ProxyError.{row.Error} has two rows");
            }
            indexed[(int)row.Error] = row;
        }
        foreach (var value in values)
        {
            if (indexed[(int)value] is null)
            {
                throw new InvalidOperationException($"ProxyError.{value} has no row");
            }
        }
        return indexed!;
    }
}
