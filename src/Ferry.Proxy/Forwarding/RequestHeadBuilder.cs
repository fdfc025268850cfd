using System.Globalization;
using System.IO.Pipelines;
using Ferry.Configuration;
using Ferry.Http1;
using Microsoft.AspNetCore.Http.Features;

namespace Ferry.Forwarding;

// How the request body follows the head upstream.
internal enum BodyMode { None, ContentLength, Chunked }

// The request head an attempt writes upstream (step 4 of the request path): the request line from the raw target after
// the route's transforms, Host, the client's headers minus hop-by-hop and untrusted forwarding ones, the route's header
// rules, traceparent, X-Forwarded-*, the upgrade offers and the body's framing. Static and given what the exchange
// already holds, so that writing a head costs no object of its own.
internal static class RequestHeadBuilder
{
    // The client's Upgrade offers whose protocol the route tunnels (Routes:<id>:Upgrades); null when none is left.
    public static string? UpgradeToForward(HttpRequest request, RouteConfig route)
    {
        var allowed = route.Upgrades;
        if (allowed.Count == 0)
        {
            return null;
        }
        string? kept = null;
        foreach (var value in request.Headers.Upgrade)
        {
            if (value is null)
            {
                continue;
            }
            foreach (var range in value.AsSpan().Split(','))
            {
                var offer = value.AsSpan()[range].Trim();
                var slash = offer.IndexOf('/');
                var protocol = slash < 0 ? offer : offer[..slash];
                foreach (var name in allowed)
                {
                    if (protocol.Equals(name, StringComparison.OrdinalIgnoreCase))
                    {
                        kept = kept is null ? offer.ToString() : $"{kept}, {offer}";
                        break;
                    }
                }
            }
        }
        return kept;
    }

    // `authority`: the destination's, written as Host unless the client's is kept. `peerTrusted`: the client is a
    // trusted proxy (ListenerConnectionFeature.PeerTrusted). `traceParent`: this attempt's span, when traced.
    // `upgrade`: the offers to forward (UpgradeToForward); `upgradable`: the request may become a tunnel, so a body of
    // unknown length is not re-framed.
    public static BodyMode Write(PipeWriter output, HttpContext context, RouteConfig route, ForwardingConfig forwarding, string authority,
        bool peerTrusted, string? traceParent, string? upgrade, bool upgradable)
    {
        var request = context.Request;
        RequestHeadWriter.WriteRequestLine(output, request.Method, RequestTarget(context, route));
        var rules = route.Transforms;
        var host = (rules.OriginalHost ?? forwarding.PreserveHost) && request.Host.HasValue ? request.Host.Value! : authority;
        RequestHeadWriter.WriteHeader(output, "Host", host);
        var dropsHeaders = rules.DroppedRequestHeaders.Length > 0;

        var headers = request.Headers;
        var connectionTokens = HopByHop.ConnectionTokens(headers.Connection);
        var xForwarded = forwarding.XForwarded;
        // Forwarding headers from a client are what it wants the destination to believe: dropped, unless the peer is
        // a trusted proxy whose chain Ferry extends (docs/configuration.md, TrustedProxies).
        foreach (var header in headers)
        {
            var name = header.Key;
            if (name.Length == 0 || name[0] == ':' || HopByHop.IsHopByHopOrManaged(name)
                || (connectionTokens is not null && HopByHop.IsNamedBy(connectionTokens, name))
                || (peerTrusted ? xForwarded && name.Equals("X-Forwarded-For", StringComparison.OrdinalIgnoreCase) : IsForwarding(name))
                || (traceParent is not null && name.Equals("traceparent", StringComparison.OrdinalIgnoreCase))
                || (dropsHeaders && rules.DropsRequestHeader(name)))
            {
                continue;
            }
            RequestHeadWriter.WriteHeader(output, name, header.Value);
        }
        foreach (var rule in rules.AddedRequestHeaders)
        {
            RequestHeadWriter.WriteHeader(output, rule.Name, rule.Value);
        }
        if (traceParent is not null)
        {
            // W3C Trace Context: the destination's parent is this attempt's span; tracestate passes through as is.
            RequestHeadWriter.WriteHeader(output, "traceparent", traceParent);
        }
        if (xForwarded)
        {
            var remote = context.Connection.RemoteIpAddress;
            if (remote is { IsIPv4MappedToIPv6: true })
            {
                remote = remote.MapToIPv4();
            }
            if (peerTrusted)
            {
                // The trusted proxy saw the client's request: its Proto and Host describe it better than Ferry can.
                WriteAppended(output, "X-Forwarded-For", headers["X-Forwarded-For"], remote?.ToString());
                WriteIfAbsent(output, "X-Forwarded-Proto", headers, request.Scheme);
                WriteIfAbsent(output, "X-Forwarded-Host", headers, request.Host.Value);
            }
            else
            {
                WriteIfAbsent(output, "X-Forwarded-For", null, remote?.ToString());
                WriteIfAbsent(output, "X-Forwarded-Proto", null, request.Scheme);
                WriteIfAbsent(output, "X-Forwarded-Host", null, request.Host.Value);
            }
        }
        if (upgrade is not null)
        {
            RequestHeadWriter.WriteHeader(output, "Connection", "Upgrade");
            RequestHeadWriter.WriteHeader(output, "Upgrade", upgrade);
        }

        BodyMode mode;
        if (request.ContentLength is long length)
        {
            RequestHeadWriter.WriteHeader(output, "Content-Length", length.ToString(CultureInfo.InvariantCulture));
            mode = length > 0 ? BodyMode.ContentLength : BodyMode.None;
        }
        else if (!upgradable && context.Features.Get<IHttpRequestBodyDetectionFeature>()?.CanHaveBody == true)
        {
            // Length unknown (chunked HTTP/1.1, or HTTP/2 without content-length): re-frame as chunked.
            RequestHeadWriter.WriteHeader(output, "Transfer-Encoding", "chunked");
            mode = BodyMode.Chunked;
        }
        else
        {
            mode = BodyMode.None;
        }
        RequestHeadWriter.WriteEnd(output);
        return mode;
    }

    // Every header a proxy uses to tell the destination about the client: X-Forwarded-For/-Proto/-Host/-Port/-Prefix,
    // Forwarded (RFC 7239) and nginx's X-Real-IP.
    private static bool IsForwarding(string name) =>
        name.StartsWith("X-Forwarded-", StringComparison.OrdinalIgnoreCase)
            && (name.Length == 15 && name.EndsWith("For", StringComparison.OrdinalIgnoreCase)
                || name.Length == 16 && (name.EndsWith("Host", StringComparison.OrdinalIgnoreCase) || name.EndsWith("Port", StringComparison.OrdinalIgnoreCase))
                || name.Length == 17 && name.EndsWith("Proto", StringComparison.OrdinalIgnoreCase)
                || name.Length == 18 && name.EndsWith("Prefix", StringComparison.OrdinalIgnoreCase))
        || name.Equals("Forwarded", StringComparison.OrdinalIgnoreCase)
        || name.Equals("X-Real-IP", StringComparison.OrdinalIgnoreCase);

    private static void WriteIfAbsent(PipeWriter output, string name, IHeaderDictionary? headers, string? value)
    {
        if (!string.IsNullOrEmpty(value) && (headers is null || !headers.ContainsKey(name)))
        {
            RequestHeadWriter.WriteHeader(output, name, value);
        }
    }

    private static void WriteAppended(PipeWriter output, string name, Microsoft.Extensions.Primitives.StringValues existing, string? value)
    {
        if (string.IsNullOrEmpty(value))
        {
            if (existing.Count > 0)
            {
                RequestHeadWriter.WriteHeader(output, name, existing);
            }
            return;
        }
        RequestHeadWriter.WriteHeader(output, name, existing.Count == 0 ? value : $"{string.Join(", ", existing.ToArray())}, {value}");
    }

    // The target as the client sent it, so that percent-encoding survives untouched; the route's path and query rules
    // (Transforms) start from that raw form too.
    private static string RequestTarget(HttpContext context, RouteConfig route)
    {
        var request = context.Request;
        var raw = context.Features.Get<IHttpRequestFeature>()?.RawTarget ?? "";
        var rules = route.Transforms;
        var usable = raw.Length > 0 && (raw[0] == '/' || raw == "*");
        if (!rules.RewritesTarget || raw == "*")
        {
            return usable ? raw : request.Path.ToUriComponent() + request.QueryString.ToUriComponent();
        }
        var question = raw.IndexOf('?');
        var (rawPath, rawQuery) = usable && raw[0] == '/'
            ? (question < 0 ? (raw, "") : (raw[..question], raw[question..]))
            : (request.Path.ToUriComponent(), request.QueryString.ToUriComponent());
        return Transforms.Target(rawPath, rawQuery, request.Path.Value ?? "/", rules, route.Match.Template);
    }

}
