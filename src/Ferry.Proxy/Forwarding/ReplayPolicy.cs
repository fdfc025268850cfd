using Ferry.Configuration;
using Ferry.Errors;
using Microsoft.AspNetCore.Http.Features;

namespace Ferry.Forwarding;

// Which requests may be sent again after failing on a reused connection before any response byte (docs/replay.md).
// Decide runs once per request, before its body is read; every attempt reads the ReplayDecision it returns.
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

    // `upgradable`: the request may become a tunnel. Kestrel's body stream of such a request carries the tunnel's bytes
    // (an upgrade request has no payload), so it is never read ahead.
    public static ReplayDecision Decide(HttpContext context, ReplayConfig config, bool upgradable)
    {
        var request = context.Request;
        // Only a body of announced length can be read whole before the first attempt; a larger one, or one of unknown
        // length (chunked), streams and is never sent again.
        var bufferLength = request.ContentLength is long length && length > 0 && length <= config.MaxBodySize && !upgradable
            ? (int)length
            : 0;
        var noBody = request.ContentLength is null or 0
            && context.Features.Get<IHttpRequestBodyDetectionFeature>()?.CanHaveBody != true;
        return new ReplayDecision(MethodAllows(request, config), BodyReplayable: bufferLength > 0 || noBody, bufferLength);
    }
}

// What the replay policy allows one request. `BufferLength`: the body's length when the forwarder reads it whole before
// the first attempt (BufferedBody), 0 when it streams or there is none.
internal readonly record struct ReplayDecision(bool MethodAllows, bool BodyReplayable, int BufferLength)
{
    // Can be sent again whatever the failure, so it may also go to the next destination (Retry:OnErrors,
    // Retry:Statuses).
    public bool Replayable => MethodAllows && BodyReplayable;

    // A request that cannot be replayed takes only an idle connection that the idle-age rule calls safe
    // (KeepAlivePolicy.IsSafeForNonReplayable): a race would cost it a 502 rather than a replay.
    public bool OnlySafeIdle => !Replayable;

    // Whether the exchange notes bytes_acked before it sends on this connection: only when the evidence can change the
    // outcome (the body can be sent again and the method alone does not allow it). Everything else saves one
    // getsockopt(TCP_INFO) per request.
    public bool NeedsEvidence(bool reused) => reused && BodyReplayable && !MethodAllows;

    // A failure on a reused connection before any response byte is a keep-alive race. It is replayed once, when the
    // method allows it, or whatever the method when the destination provably never received the request.
    public bool CanReplay(ProxyException failure, bool reused, bool replayedBefore) =>
        !replayedBefore && reused && BodyReplayable
        && failure is { Error: ProxyError.ConnectionTerminated, BeforeResponse: true }
        && (MethodAllows || failure.ProvenUnprocessed);
}
