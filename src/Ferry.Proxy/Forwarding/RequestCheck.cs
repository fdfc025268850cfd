using Ferry.Errors;
using Ferry.Http1;
using Microsoft.AspNetCore.Http.Features;

namespace Ferry.Forwarding;

// What Kestrel accepts from a client is wider than what can be written as an HTTP/1.1 request: HTTP/2 carries a
// :path with a space, field names with a space or a colon, CONNECT with no path at all. The head writer refuses such
// a request, but only once a connection is taken, where the failure would look like the destination's. Checked here,
// before any destination is involved, it is the client's error: a 4xx, and no health, retry or pool change.
internal static class RequestCheck
{
    // Null when the request can be forwarded; otherwise the error to answer with.
    public static ProxyException? Check(HttpContext context)
    {
        var request = context.Request;
        var method = request.Method;
        if (!HeadWriting.IsToken(method))
        {
            return new ProxyException(ProxyError.RequestNotExpressible, "the request method is not an HTTP token");
        }
        if (HttpMethods.IsConnect(method))
        {
            // HTTP/1.1 CONNECT names an authority, HTTP/2 CONNECT (extended or not) has no :path: neither has an
            // origin-form target to send, and a tunnel to a client-chosen authority is not Ferry's to open.
            return new ProxyException(ProxyError.MethodNotImplemented, "CONNECT is not forwarded");
        }
        var raw = context.Features.Get<IHttpRequestFeature>()?.RawTarget;
        if (raw is { Length: > 0 } && (raw[0] == '/' || raw == "*"))
        {
            // Origin-form is sent as the client wrote it (Exchange.RequestTarget), so it must be a valid one.
            if (!HeadWriting.IsTarget(raw) || (raw == "*" && !HttpMethods.IsOptions(method)))
            {
                return new ProxyException(ProxyError.RequestNotExpressible,
                    "the request target contains whitespace or a control character, or is \"*\" for a method other than OPTIONS");
            }
        }
        foreach (var header in request.Headers)
        {
            var name = header.Key;
            if (name.StartsWith(':'))
            {
                continue; // a pseudo-header Kestrel validated itself; never forwarded as a field
            }
            if (!HeadWriting.IsToken(name))
            {
                return new ProxyException(ProxyError.RequestNotExpressible, "a header field name is not an HTTP token");
            }
            foreach (var value in header.Value)
            {
                if (value is not null && !HeadWriting.IsValue(value))
                {
                    return new ProxyException(ProxyError.RequestNotExpressible, $"the value of {name} contains CR, LF, NUL or a character above U+00FF");
                }
            }
        }
        return null;
    }
}
