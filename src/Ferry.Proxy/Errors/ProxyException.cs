namespace Ferry.Errors;

// Raised inside the engine and caught by the forwarder, which turns it into a response or an abort. On the way, the
// pool looks at a refused connect (the next address, a sign of overload) and the active health checker catches what
// fails its checks.
internal sealed class ProxyException(ProxyError error, string details, Exception? inner = null)
    : Exception($"{error}: {details}", inner)
{
    public ProxyError Error { get; } = error;
    public string Details { get; } = details;

    // No byte of a response arrived before the failure: one condition for sending the request again (ReplayPolicy).
    public bool BeforeResponse { get; init; }

    // The destination cannot have processed the request: its FIN arrived and its TCP stack never acknowledged a byte
    // of the request (docs/replay.md, "The evidence for a POST").
    public bool ProvenUnprocessed { get; init; }

    // Sent as Retry-After (whole seconds, rounded up) when Ferry answers the error itself.
    public TimeSpan? RetryAfter { get; init; }
}
