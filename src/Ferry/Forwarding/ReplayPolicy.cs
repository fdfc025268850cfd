using Ferry.Configuration;
using Ferry.Errors;

namespace Ferry.Forwarding;

// Which requests may be sent again after failing on a reused connection before any response byte (docs/replay.md).
internal static class ReplayPolicy
{
    public const string IdempotencyKey = "Idempotency-Key";

    // RFC 9110 §9.2.2: idempotent methods, and any request the client marked with an Idempotency-Key (the IETF
    // httpapi draft's header, which servers use to deduplicate), or every method when the operator opted in.
    public static bool MethodAllows(HttpRequest request, ReplayConfig config) =>
        config.NonIdempotent
        || HttpMethods.IsGet(request.Method) || HttpMethods.IsHead(request.Method) || HttpMethods.IsOptions(request.Method)
        || HttpMethods.IsTrace(request.Method) || HttpMethods.IsPut(request.Method) || HttpMethods.IsDelete(request.Method)
        || request.Headers.ContainsKey(IdempotencyKey);

    // A failure on a reused connection before any response byte is a keep-alive race. It is replayed when the method
    // allows it, or whatever the method when the destination provably never received the request.
    public static bool CanReplay(ProxyException failure, bool reused, bool methodAllows, bool bodyReplayable) =>
        reused && bodyReplayable && failure is { Error: ProxyError.ConnectionTerminated, BeforeResponse: true }
        && (methodAllows || failure.ProvenUnprocessed);
}
