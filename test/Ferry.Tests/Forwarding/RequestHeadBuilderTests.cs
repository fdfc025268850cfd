using System.IO.Pipelines;
using System.Net;
using System.Text;
using Ferry.Configuration;
using Ferry.Forwarding;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;

namespace Ferry.Tests.Forwarding;

// The request head written upstream, built from a request as Kestrel hands it over.
public sealed class RequestHeadBuilderTests
{
    private const string Authority = "backend:8080";

    private static readonly RouteConfig Route = new("r", "c", 0, RouteMatchConfig.Default, PathRemovePrefix: null);

    private static DefaultHttpContext Request(string method, string target, params (string Name, string Value)[] headers)
    {
        var context = new DefaultHttpContext();
        context.Request.Method = method;
        context.Request.Scheme = "https";
        context.Request.Host = new HostString("example.com");
        context.Features.Get<IHttpRequestFeature>()!.RawTarget = target;
        var question = target.IndexOf('?');
        context.Request.Path = new PathString(question < 0 ? target : target[..question]);
        context.Request.QueryString = new QueryString(question < 0 ? "" : target[question..]);
        context.Connection.RemoteIpAddress = IPAddress.Parse("198.51.100.7");
        foreach (var (name, value) in headers)
        {
            context.Request.Headers.Append(name, value);
        }
        return context;
    }

    private sealed class BodyDetection(bool canHaveBody) : IHttpRequestBodyDetectionFeature
    {
        public bool CanHaveBody => canHaveBody;
    }

    private sealed record Head(string RequestLine, List<(string Name, string Value)> Fields, BodyMode Mode)
    {
        public string[] Values(string name) =>
            [.. Fields.Where(f => f.Name.Equals(name, StringComparison.OrdinalIgnoreCase)).Select(f => f.Value)];

        public string? Value(string name) => Values(name) is [var one] ? one : null;

        public bool Has(string name) => Values(name).Length > 0;
    }

    private static Head Build(HttpContext context, RouteConfig? route = null, ForwardingConfig? forwarding = null,
        bool peerTrusted = false, string? traceParent = null, string? upgrade = null, bool upgradable = false)
    {
        var pipe = new Pipe();
        var mode = RequestHeadBuilder.Write(pipe.Writer, context, route ?? Route, forwarding ?? ForwardingConfig.Default, Authority,
            peerTrusted, traceParent, upgrade, upgradable);
        pipe.Writer.Complete();
        Assert.True(pipe.Reader.TryRead(out var read));
        var text = Encoding.Latin1.GetString(read.Buffer);
        Assert.EndsWith("\r\n\r\n", text);
        var lines = text[..^4].Split("\r\n");
        var fields = lines[1..].Select(line =>
        {
            var colon = line.IndexOf(':');
            return (line[..colon], line[(colon + 1)..].Trim());
        }).ToList();
        return new Head(lines[0], fields, mode);
    }

    [Fact]
    public void TheRequestLine_KeepsTheRawTarget()
    {
        Assert.Equal("GET /a%2Fb/c?x=%20 HTTP/1.1", Build(Request("GET", "/a%2Fb/c?x=%20")).RequestLine);
    }

    [Fact]
    public void HopByHopFields_AndTheFieldsConnectionNames_AreRemoved()
    {
        var head = Build(Request("GET", "/",
            ("Connection", "keep-alive, X-Private"), ("Keep-Alive", "timeout=5"), ("Proxy-Connection", "keep-alive"), ("TE", "trailers"),
            ("Trailer", "X-T"), ("Upgrade", "websocket"), ("Expect", "100-continue"), ("X-Private", "secret"), ("Accept", "*/*")));

        foreach (var name in new[] { "Connection", "Keep-Alive", "Proxy-Connection", "TE", "Trailer", "Upgrade", "Expect", "X-Private" })
        {
            Assert.False(head.Has(name), name);
        }
        Assert.Equal("*/*", head.Value("Accept"));
    }

    [Fact]
    public void Host_IsTheClientsByDefault_OrTheDestinationsWithoutPreserveHost_AndARouteRuleDecidesFirst()
    {
        Assert.Equal("example.com", Build(Request("GET", "/")).Value("Host"));

        var rewrite = new ForwardingConfig(PreserveHost: false, XForwarded: true);
        Assert.Equal(Authority, Build(Request("GET", "/"), forwarding: rewrite).Value("Host"));

        var keepOriginal = Route with { Transforms = new TransformsConfig([], [], [], [], originalHost: true) };
        Assert.Equal("example.com", Build(Request("GET", "/"), keepOriginal, rewrite).Value("Host"));
        var useDestination = Route with { Transforms = new TransformsConfig([], [], [], [], originalHost: false) };
        Assert.Equal(Authority, Build(Request("GET", "/"), useDestination).Value("Host"));

        // An HTTP/2 request may come without :authority; the destination's is the only one there is.
        var noHost = Request("GET", "/");
        noHost.Request.Host = default;
        Assert.Equal(Authority, Build(noHost).Value("Host"));
    }

    [Fact]
    public void FromAnUntrustedPeer_EveryForwardingFieldIsReplaced()
    {
        var head = Build(Request("GET", "/",
            ("X-Forwarded-For", "203.0.113.1"), ("X-Forwarded-Proto", "http"), ("X-Forwarded-Host", "evil.example"),
            ("X-Forwarded-Port", "1"), ("X-Forwarded-Prefix", "/x"), ("Forwarded", "for=203.0.113.1"), ("X-Real-IP", "203.0.113.1")));

        Assert.Equal(["198.51.100.7"], head.Values("X-Forwarded-For"));
        Assert.Equal(["https"], head.Values("X-Forwarded-Proto"));
        Assert.Equal(["example.com"], head.Values("X-Forwarded-Host"));
        foreach (var name in new[] { "X-Forwarded-Port", "X-Forwarded-Prefix", "Forwarded", "X-Real-IP" })
        {
            Assert.False(head.Has(name), name);
        }
    }

    [Fact]
    public void FromATrustedPeer_XForwardedForIsAppendedTo_AndItsOtherForwardingFieldsPass()
    {
        var head = Build(Request("GET", "/",
                ("X-Forwarded-For", "203.0.113.1"), ("X-Forwarded-For", "10.0.0.2"), ("X-Forwarded-Proto", "http"), ("X-Real-IP", "203.0.113.1")),
            peerTrusted: true);

        Assert.Equal(["203.0.113.1, 10.0.0.2, 198.51.100.7"], head.Values("X-Forwarded-For"));
        Assert.Equal(["http"], head.Values("X-Forwarded-Proto"));
        Assert.Equal(["example.com"], head.Values("X-Forwarded-Host"));
        Assert.Equal("203.0.113.1", head.Value("X-Real-IP"));
    }

    [Fact]
    public void AnIPv4MappedPeer_IsWrittenAsIPv4()
    {
        var context = Request("GET", "/");
        context.Connection.RemoteIpAddress = IPAddress.Parse("::ffff:198.51.100.9");

        Assert.Equal("198.51.100.9", Build(context).Value("X-Forwarded-For"));
    }

    [Fact]
    public void WithoutXForwarded_NothingIsAdded_AndAnUntrustedClientsForwardingFieldsStillDrop()
    {
        var head = Build(Request("GET", "/", ("X-Forwarded-For", "203.0.113.1")), forwarding: new ForwardingConfig(PreserveHost: true, XForwarded: false));

        Assert.False(head.Has("X-Forwarded-For"));
        Assert.False(head.Has("X-Forwarded-Proto"));
        Assert.False(head.Has("X-Forwarded-Host"));
    }

    [Fact]
    public void TheRoutesTransforms_RewriteTheTargetAndTheFields()
    {
        var route = Route with
        {
            Transforms = new TransformsConfig(
                [new PathRule(PathRuleKind.RemovePrefix, "/api")], [],
                [new HeaderRule("X-Set", HeaderAction.Set, "ferry"), new HeaderRule("X-Gone", HeaderAction.Remove, ""),
                    new HeaderRule("X-More", HeaderAction.Append, "2")],
                [], originalHost: null),
        };

        var head = Build(Request("GET", "/api/items?x=1", ("X-Set", "client"), ("X-Gone", "client"), ("X-More", "1")), route);

        Assert.Equal("GET /items?x=1 HTTP/1.1", head.RequestLine);
        Assert.Equal(["ferry"], head.Values("X-Set"));
        Assert.False(head.Has("X-Gone"));
        Assert.Equal(["1", "2"], head.Values("X-More"));
    }

    [Fact]
    public void TheAttemptsTraceparent_ReplacesTheClients()
    {
        const string parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

        Assert.Equal([parent], Build(Request("GET", "/", ("traceparent", "00-x-y-01")), traceParent: parent).Values("traceparent"));
        Assert.Equal(["00-x-y-01"], Build(Request("GET", "/", ("traceparent", "00-x-y-01"))).Values("traceparent"));
    }

    [Fact]
    public void TheBodysFraming_ComesLast()
    {
        var withLength = Request("POST", "/", ("Content-Length", "999"));
        withLength.Request.ContentLength = 12;
        var head = Build(withLength);
        Assert.Equal(("Content-Length", "12"), head.Fields[^1]);
        Assert.Equal(BodyMode.ContentLength, head.Mode);

        var chunked = Request("POST", "/", ("Transfer-Encoding", "chunked"));
        chunked.Features.Set<IHttpRequestBodyDetectionFeature>(new BodyDetection(canHaveBody: true));
        head = Build(chunked);
        Assert.Equal(["chunked"], head.Values("Transfer-Encoding"));
        Assert.Equal(("Transfer-Encoding", "chunked"), head.Fields[^1]);
        Assert.Equal(BodyMode.Chunked, head.Mode);

        // A request that may become a tunnel is not re-framed: what follows its head is the tunnel's.
        Assert.Equal(BodyMode.None, Build(chunked, upgradable: true).Mode);
        Assert.Equal(BodyMode.None, Build(Request("GET", "/")).Mode);
    }

    [Fact]
    public void OnlyTheUpgradeOffersTheRouteAllows_AreForwarded()
    {
        var request = Request("GET", "/ws", ("Connection", "Upgrade"), ("Upgrade", "h2c, WebSocket/13"));

        var upgrade = RequestHeadBuilder.UpgradeToForward(request.Request, Route);
        Assert.Equal("WebSocket/13", upgrade);
        Assert.Null(RequestHeadBuilder.UpgradeToForward(request.Request, Route with { Upgrades = [] }));
        Assert.Null(RequestHeadBuilder.UpgradeToForward(Request("GET", "/", ("Upgrade", "h2c")).Request, Route));

        var head = Build(request, upgrade: upgrade, upgradable: true);
        Assert.Equal(["Upgrade"], head.Values("Connection"));
        Assert.Equal(["WebSocket/13"], head.Values("Upgrade"));
    }
}
