using Ferry.Errors;
using Ferry.Forwarding;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;

namespace Ferry.Tests.Forwarding;

// Requests Kestrel accepts (mostly over HTTP/2) that cannot be written as HTTP/1.1 are the client's error.
public sealed class RequestCheckTests
{
    private static DefaultHttpContext Request(string method, string target, params (string Name, string Value)[] headers)
    {
        var context = new DefaultHttpContext();
        context.Request.Method = method;
        context.Features.Get<IHttpRequestFeature>()!.RawTarget = target;
        context.Request.Path = target.StartsWith('/') ? new PathString(target.Split('?')[0]) : PathString.Empty;
        foreach (var (name, value) in headers)
        {
            context.Request.Headers.Append(name, value);
        }
        return context;
    }

    [Fact]
    public void OrdinaryRequest_Passes()
    {
        Assert.Null(RequestCheck.Check(Request("GET", "/a/b?c=%20d", ("Accept", "*/*"), ("X-Utf8", "caf\u00e9"))));
        Assert.Null(RequestCheck.Check(Request("OPTIONS", "*")));
        // Absolute-form is re-encoded from the parsed path, never sent as received.
        Assert.Null(RequestCheck.Check(Request("GET", "http://example.com/x y")));
    }

    public static TheoryData<string, string, string, string, string> Inexpressible => new()
    {
        { "CONNECT", "127.0.0.1:443", "Host", "x", nameof(ProxyError.MethodNotImplemented) },
        { "CONNECT", "", "Host", "x", nameof(ProxyError.MethodNotImplemented) },
        { "GE T", "/", "Host", "x", nameof(ProxyError.RequestNotExpressible) },
        { "GET", "/a b", "Host", "x", nameof(ProxyError.RequestNotExpressible) },
        { "GET", "/a\tb", "Host", "x", nameof(ProxyError.RequestNotExpressible) },
        { "GET", "/a\u007fb", "Host", "x", nameof(ProxyError.RequestNotExpressible) },
        { "GET", "*", "Host", "x", nameof(ProxyError.RequestNotExpressible) },
        { "GET", "/", "x y", "1", nameof(ProxyError.RequestNotExpressible) },
        { "GET", "/", "x:y", "1", nameof(ProxyError.RequestNotExpressible) },
        { "GET", "/", "X-A", "1\r\nX-Injected: 1", nameof(ProxyError.RequestNotExpressible) },
        { "GET", "/", "X-A", "1\nX", nameof(ProxyError.RequestNotExpressible) },
        { "GET", "/", "X-A", "1\0", nameof(ProxyError.RequestNotExpressible) },
        { "GET", "/", "X-A", "\u0100", nameof(ProxyError.RequestNotExpressible) },
    };

    [Theory]
    [MemberData(nameof(Inexpressible))]
    public void InexpressibleRequest_IsTheClientsError(string method, string target, string name, string value, string expected)
    {
        var error = RequestCheck.Check(Request(method, target, (name, value)));

        Assert.NotNull(error);
        Assert.Equal(expected, error.Error.ToString());
        var info = ProxyErrorTable.Of(error.Error);
        Assert.InRange(info.Status, 400, 501);
        Assert.Equal("http_request_error", info.Type);
        Assert.False(info.CountsAgainstDestination(reusedConnection: false));
    }
}
