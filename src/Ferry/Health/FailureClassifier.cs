using Ferry.Errors;

namespace Ferry.Health;

// Which failed attempts say something about a destination's health (docs/health.md, "Passive health"). Counting
// anything else would let Ferry's own trouble, or its clients', take healthy destinations out of rotation.
internal static class FailureClassifier
{
    public static bool IsDestinationFault(ProxyError error, bool reusedConnection) => error switch
    {
        // Nothing connected: the destination refused, did not answer the SYN, or cannot be reached or resolved.
        ProxyError.ConnectionRefused or ProxyError.ConnectionTimeout or ProxyError.DestinationUnroutable or ProxyError.DnsError => true,
        // The handshake of a new connection failed: the destination presented a certificate that does not check out,
        // or does not speak TLS as configured. An unreadable CA bundle never gets here: it fails the configuration.
        ProxyError.TlsProtocolError or ProxyError.TlsCertificateError => true,
        // Closed before any response byte: on a fresh connection the destination dropped a request it had accepted;
        // on a reused one it is a keep-alive race (the destination closed an idle connection as the request went
        // out), which says nothing about whether it can serve requests.
        ProxyError.ConnectionTerminated => !reusedConnection,
        // It took the connection but did not read the request, answer, or finish the body in time, or answered
        // something that is not HTTP/1.1.
        ProxyError.RequestSendTimeout or ProxyError.ResponseTimeout or ProxyError.BodyInactivityTimeout
            or ProxyError.ResponseHeaderSectionSize or ProxyError.ResponseTrailerSectionSize or ProxyError.ProtocolError or ProxyError.ResponseIncomplete => true,
        // EADDRNOTAVAIL / EMFILE are Ferry's own shortage; client aborts and bad client bodies are the client's; the
        // rest are decided before any destination is involved.
        _ => false,
    };
}
