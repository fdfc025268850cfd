using Ferry.Configuration;
using Ferry.Errors;
using Ferry.Forwarding;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;

namespace Ferry.Tests.Forwarding;

// The replay decision of docs/replay.md ("Which requests"), taken once per request before its body is read.
public sealed class ReplayPolicyTests
{
    private static readonly ReplayConfig Config = ReplayConfig.Default;

    // `chunked`: a body of unknown length, as Kestrel reports it.
    private static DefaultHttpContext Request(string method, long? contentLength = null, bool chunked = false,
        params (string Name, string Value)[] headers)
    {
        var context = new DefaultHttpContext();
        context.Request.Method = method;
        context.Request.ContentLength = contentLength;
        context.Features.Set<IHttpRequestBodyDetectionFeature>(new BodyDetection(chunked || contentLength > 0));
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

    private static ReplayDecision Decide(DefaultHttpContext context, ReplayConfig? config = null, bool upgradable = false) =>
        ReplayPolicy.Decide(context, config ?? Config, upgradable);

    private static ProxyException Race(bool proven = false) =>
        new(ProxyError.ConnectionTerminated, "test") { BeforeResponse = true, ProvenUnprocessed = proven };

    [Theory]
    [InlineData("GET")]
    [InlineData("HEAD")]
    [InlineData("OPTIONS")]
    [InlineData("TRACE")]
    [InlineData("PUT")]
    [InlineData("DELETE")]
    public void IdempotentMethods_WithoutBody_AreReplayable_AndTakeAnyIdleConnection(string method)
    {
        var replay = Decide(Request(method));

        Assert.Equal(new ReplayDecision(MethodAllows: true, BodyReplayable: true, BufferLength: 0), replay);
        Assert.True(replay.Replayable);
        Assert.False(replay.OnlySafeIdle);
        Assert.False(replay.NeedsEvidence(reused: true));
        Assert.True(replay.CanReplay(Race(), reused: true, replayedBefore: false));
    }

    [Theory]
    [InlineData("POST")]
    [InlineData("PATCH")]
    public void OtherMethods_NeedTheEvidence_AndOnlyASafeIdleConnection(string method)
    {
        var replay = Decide(Request(method, contentLength: 10));

        Assert.Equal(new ReplayDecision(MethodAllows: false, BodyReplayable: true, BufferLength: 10), replay);
        Assert.False(replay.Replayable);
        Assert.True(replay.OnlySafeIdle);
        Assert.True(replay.NeedsEvidence(reused: true));
        Assert.False(replay.NeedsEvidence(reused: false)); // a new connection is never a race
        Assert.False(replay.CanReplay(Race(), reused: true, replayedBefore: false));
        Assert.True(replay.CanReplay(Race(proven: true), reused: true, replayedBefore: false));
    }

    [Fact]
    public void AnIdempotencyKey_OrTheOperatorsOptIn_AllowsAnyMethod()
    {
        Assert.True(Decide(Request("POST", headers: (ReplayPolicy.IdempotencyKey, "k1"))).MethodAllows);
        Assert.True(Decide(Request("POST"), ReplayConfig.Default with { NonIdempotent = true }).MethodAllows);
        Assert.False(Decide(Request("POST")).MethodAllows);
    }

    [Fact]
    public void ABodyOfAnnouncedLength_UpToMaxBodySize_IsBuffered()
    {
        var config = new ReplayConfig(MaxBodySize: 100, NonIdempotent: false);

        Assert.Equal(100, Decide(Request("PUT", contentLength: 100), config).BufferLength);
        Assert.True(Decide(Request("PUT", contentLength: 100), config).Replayable);

        var tooLarge = Decide(Request("PUT", contentLength: 101), config);
        Assert.Equal(0, tooLarge.BufferLength);
        Assert.False(tooLarge.BodyReplayable);
        Assert.False(tooLarge.Replayable);
        Assert.True(tooLarge.OnlySafeIdle);
        Assert.False(tooLarge.NeedsEvidence(reused: true)); // the evidence cannot help: the body is gone
        Assert.False(tooLarge.CanReplay(Race(proven: true), reused: true, replayedBefore: false));
    }

    [Fact]
    public void ABodyOfUnknownLength_Streams_AndIsNeverReplayed()
    {
        var replay = Decide(Request("PUT", chunked: true));

        Assert.Equal(new ReplayDecision(MethodAllows: true, BodyReplayable: false, BufferLength: 0), replay);
        Assert.True(replay.OnlySafeIdle);
    }

    [Fact]
    public void AnEmptyBody_NeedsNoBuffer()
    {
        Assert.Equal(new ReplayDecision(MethodAllows: true, BodyReplayable: true, BufferLength: 0), Decide(Request("PUT", contentLength: 0)));
    }

    [Fact]
    public void ARequestThatMayBecomeATunnel_IsNotReadAhead()
    {
        var replay = Decide(Request("GET", contentLength: 10), upgradable: true);

        Assert.Equal(0, replay.BufferLength);
        Assert.False(replay.BodyReplayable);
    }

    [Fact]
    public void OnlyAKeepAliveRaceOnAReusedConnection_IsReplayed_AndOnlyOnce()
    {
        var replay = Decide(Request("GET"));

        Assert.True(replay.CanReplay(Race(), reused: true, replayedBefore: false));
        Assert.False(replay.CanReplay(Race(), reused: false, replayedBefore: false));
        Assert.False(replay.CanReplay(Race(), reused: true, replayedBefore: true));
        Assert.False(replay.CanReplay(new ProxyException(ProxyError.ConnectionTerminated, "test") { BeforeResponse = false },
            reused: true, replayedBefore: false));
        Assert.False(replay.CanReplay(new ProxyException(ProxyError.ResponseTimeout, "test") { BeforeResponse = true },
            reused: true, replayedBefore: false));
    }
}
