using Ferry.Configuration;
using Ferry.Upstream;
using Microsoft.Extensions.Time.Testing;

namespace Ferry.Tests.Upstream;

public sealed class KeepAlivePolicyTests
{
    private readonly FakeTimeProvider _clock = new();

    private static TimeSpan S(double seconds) => TimeSpan.FromSeconds(seconds);

    private KeepAlivePolicy Policy(TimeSpan? idleTimeout = null, int maxRequests = 0, TimeSpan? maxLifetime = null) =>
        new(KeepAliveConfig.Default with
        {
            IdleTimeout = idleTimeout,
            MaxRequests = maxRequests,
            MaxLifetime = maxLifetime ?? KeepAliveConfig.Default.MaxLifetime,
        }, _clock);

    private long Now => _clock.GetTimestamp();

    // A connection idle for `idle` now, opened `age` ago (FakeTimeProvider timestamps are ticks).
    private ConnectionKeepAlive Idle(TimeSpan idle, int requests = 1, int announcedTimeout = -1, int announcedMax = -1,
        bool probe = false, TimeSpan? age = null) =>
        new(Now - (age ?? idle).Ticks, Now - idle.Ticks, requests, announcedTimeout, announcedMax, probe);

    private static void LearnIdleTimeout(KeepAlivePolicy policy, TimeSpan idle, int closes = 1)
    {
        for (var i = 0; i < closes; i++)
        {
            policy.Learner.ObserveIdleClose(idle, requests: 1);
        }
    }

    private static void LearnMaxRequests(KeepAlivePolicy policy, int requests)
    {
        policy.Learner.ObserveIdleClose(TimeSpan.Zero, requests);
        policy.Learner.ObserveIdleClose(TimeSpan.Zero, requests);
        Assert.Equal(requests, policy.Learner.MaxRequests);
    }

    [Theory]
    [InlineData(0.5, 0.2)]   // at least 200 ms
    [InlineData(2, 0.5)]     // a quarter
    [InlineData(5, 1.25)]
    [InlineData(60, 2)]      // at most 2 s
    public void Margin_IsAQuarter_Clamped(double limit, double margin) =>
        Assert.Equal(S(margin), KeepAlivePolicy.Margin(S(limit)));

    [Fact]
    public void IdleTimeout_IsTheConfiguredOne_OrTheAutomaticCap_WhileNothingIsLearned()
    {
        Assert.Equal(KeepAliveConfig.Default.AutoIdleTimeoutCap, Policy().IdleTimeout);
        Assert.Equal(KeepAliveConfig.Default.AutoIdleTimeoutCap, Policy().ConfiguredIdleTimeout);
        Assert.Equal(S(4), Policy(idleTimeout: S(4)).IdleTimeout);
        Assert.Equal(S(4), Policy(idleTimeout: S(4)).ConfiguredIdleTimeout);
    }

    [Fact]
    public void IdleTimeout_IsTheLearnedValueMinusTheMargin_BelowTheConfiguredOneOrTheCap()
    {
        var policy = Policy();
        LearnIdleTimeout(policy, S(2));
        Assert.Equal(S(1.5), policy.IdleTimeout);

        var configured = Policy(idleTimeout: S(1));
        LearnIdleTimeout(configured, S(2));
        Assert.Equal(S(1), configured.IdleTimeout);

        var capped = Policy();
        LearnIdleTimeout(capped, S(300));
        Assert.Equal(KeepAliveConfig.Default.AutoIdleTimeoutCap, capped.IdleTimeout);
    }

    [Fact]
    public void Expiry_AnnouncedIdleTimeout_AMarginBeforeIt()
    {
        var policy = Policy();

        Assert.Null(policy.ExpiryReason(Idle(S(3.74), announcedTimeout: 5), Now));
        Assert.Equal(RetireReason.AnnouncedLimit, policy.ExpiryReason(Idle(S(3.75), announcedTimeout: 5), Now));
    }

    [Fact]
    public void Expiry_ConfiguredIdleTimeout_OrTheCap_WithoutAMargin()
    {
        Assert.Null(Policy().ExpiryReason(Idle(S(59.9)), Now));
        Assert.Equal(RetireReason.IdleTimeout, Policy().ExpiryReason(Idle(S(60)), Now));
        Assert.Null(Policy(idleTimeout: S(4)).ExpiryReason(Idle(S(3.9)), Now));
        Assert.Equal(RetireReason.IdleTimeout, Policy(idleTimeout: S(4)).ExpiryReason(Idle(S(4)), Now));
        // An announced timeout longer than the cap does not lift it.
        Assert.Equal(RetireReason.IdleTimeout, Policy().ExpiryReason(Idle(S(60), announcedTimeout: 300), Now));
    }

    [Fact]
    public void Expiry_LearnedIdleTimeout_AMarginBeforeIt()
    {
        var policy = Policy();
        LearnIdleTimeout(policy, S(2));

        Assert.Null(policy.ExpiryReason(Idle(S(1.49)), Now));
        Assert.Equal(RetireReason.LearnedLimit, policy.ExpiryReason(Idle(S(1.5)), Now));
        // Announced first: what the destination says about this connection is the more precise reason.
        Assert.Equal(RetireReason.AnnouncedLimit, policy.ExpiryReason(Idle(S(1.5), announcedTimeout: 2), Now));
    }

    [Fact]
    public void Expiry_MaxLifetime_WhateverTheIdleTime()
    {
        var policy = Policy(maxLifetime: TimeSpan.FromHours(1));

        Assert.Null(policy.ExpiryReason(Idle(TimeSpan.Zero, age: TimeSpan.FromMinutes(59)), Now));
        Assert.Equal(RetireReason.Lifetime, policy.ExpiryReason(Idle(TimeSpan.Zero, age: TimeSpan.FromHours(1)), Now));
        Assert.Null(Policy(maxLifetime: TimeSpan.Zero).ExpiryReason(Idle(TimeSpan.Zero, age: TimeSpan.FromDays(2)), Now));
    }

    [Fact]
    public void Expiry_ARequestLimit_ComesFirst()
    {
        var policy = Policy(maxRequests: 10);

        Assert.Equal(RetireReason.MaxRequests, policy.ExpiryReason(Idle(S(600), requests: 10), Now));
    }

    [Fact]
    public void RequestLimit_AnnouncedMax_CountsTheRequestsStillAllowedAfterTheOneItAnswered()
    {
        var policy = Policy();
        var allowed = KeepAlivePolicy.AnnouncedMaxRequests(requests: 5, max: 2);

        Assert.Equal(7, allowed);
        Assert.Null(policy.RequestLimitReason(Idle(TimeSpan.Zero, requests: 6, announcedMax: allowed)));
        Assert.Equal(RetireReason.AnnouncedLimit, policy.RequestLimitReason(Idle(TimeSpan.Zero, requests: 7, announcedMax: allowed)));
        // max=0: the response was the last one the destination takes on this connection.
        Assert.Equal(RetireReason.AnnouncedLimit,
            policy.RequestLimitReason(Idle(TimeSpan.Zero, requests: 5, announcedMax: KeepAlivePolicy.AnnouncedMaxRequests(5, 0))));
    }

    [Fact]
    public void RequestLimit_Configured()
    {
        var policy = Policy(maxRequests: 100);

        Assert.Null(policy.RequestLimitReason(Idle(TimeSpan.Zero, requests: 99)));
        Assert.Equal(RetireReason.MaxRequests, policy.RequestLimitReason(Idle(TimeSpan.Zero, requests: 100)));
        Assert.Equal(RetireReason.AnnouncedLimit, policy.RequestLimitReason(Idle(TimeSpan.Zero, requests: 100, announcedMax: 50)));
        Assert.Null(Policy().RequestLimitReason(Idle(TimeSpan.Zero, requests: 1_000_000)));
    }

    [Fact]
    public void RequestLimit_Learned_ExceptForAProbe()
    {
        var policy = Policy();
        LearnMaxRequests(policy, 37);

        Assert.Null(policy.RequestLimitReason(Idle(TimeSpan.Zero, requests: 36)));
        Assert.Equal(RetireReason.LearnedLimit, policy.RequestLimitReason(Idle(TimeSpan.Zero, requests: 37)));
        Assert.Null(policy.RequestLimitReason(Idle(TimeSpan.Zero, requests: 37, probe: true)));
    }

    [Fact]
    public void Released_KeepsOneInSixteenConnectionsThatReachTheLearnedLimit_AsAProbe()
    {
        var policy = Policy();
        LearnMaxRequests(policy, 37);

        var probes = new List<int>();
        for (var i = 1; i <= 2 * KeepAlivePolicy.LearnedLimitProbeEvery; i++)
        {
            var reason = policy.Released(Idle(TimeSpan.Zero, requests: 37), out var probe);
            Assert.Equal(probe ? null : RetireReason.LearnedLimit, reason);
            if (probe)
            {
                probes.Add(i);
            }
        }

        Assert.Equal([KeepAlivePolicy.LearnedLimitProbeEvery, 2 * KeepAlivePolicy.LearnedLimitProbeEvery], probes);
        Assert.Equal(2, policy.LimitProbes);
    }

    [Fact]
    public void Released_AProbeThatAnswersOneMore_ForgetsTheLearnedLimit()
    {
        var policy = Policy();
        LearnMaxRequests(policy, 37);

        Assert.Null(policy.Released(Idle(TimeSpan.Zero, requests: 38, probe: true), out var probe));

        Assert.False(probe);
        Assert.Equal(0, policy.Learner.MaxRequests);
    }

    [Fact]
    public void Released_AConnectionPastALimitLearnedWhileItWasInUse_RetiresAsItsAnswerForgetsTheLimit()
    {
        var policy = Policy();
        LearnMaxRequests(policy, 37);

        Assert.Equal(RetireReason.LearnedLimit, policy.Released(Idle(TimeSpan.Zero, requests: 50), out var probe));

        Assert.False(probe);
        Assert.Equal(0, policy.Learner.MaxRequests);
    }

    [Fact]
    public void Released_OnlyALearnedLimitGetsProbes()
    {
        var policy = Policy(maxRequests: 10);

        for (var i = 0; i < 2 * KeepAlivePolicy.LearnedLimitProbeEvery; i++)
        {
            Assert.Equal(RetireReason.MaxRequests, policy.Released(Idle(TimeSpan.Zero, requests: 10), out var probe));
            Assert.False(probe);
        }
        Assert.Null(policy.Released(Idle(TimeSpan.Zero, requests: 9), out _));
        Assert.Equal(0, policy.LimitProbes);
    }

    [Fact]
    public void ObserveIdleClose_LearnsTheIdleTimeSinceTheConnectionWentIdle()
    {
        var policy = Policy();

        policy.ObserveIdleClose(Idle(S(2.5), requests: 3), Now);

        Assert.Equal(S(2.5), policy.Learner.IdleTimeout);
    }

    [Fact]
    public void ProvenIdle_IsTheLongestIdleTimeSurvived()
    {
        var policy = Policy();
        Assert.Equal(TimeSpan.Zero, policy.ProvenIdle);

        policy.NoteSurvived(Idle(S(10)), Now);
        policy.NoteSurvived(Idle(S(4)), Now);

        Assert.Equal(S(10), policy.ProvenIdle);
    }

    [Fact]
    public void NonReplayable_BeforeAnythingIsKnown_TakesOnlyConnectionsIdleForLessThanUnknownSafeIdle()
    {
        var policy = Policy();

        Assert.True(policy.IsSafeForNonReplayable(Idle(KeepAlivePolicy.UnknownSafeIdle - TimeSpan.FromMilliseconds(1)), Now));
        Assert.False(policy.IsSafeForNonReplayable(Idle(KeepAlivePolicy.UnknownSafeIdle), Now));
    }

    [Fact]
    public void NonReplayable_TheProvenIdleTimeMinusTheMargin_WidensIt()
    {
        var policy = Policy();
        policy.NoteSurvived(Idle(S(10)), Now);

        Assert.True(policy.IsSafeForNonReplayable(Idle(S(7.99)), Now));
        Assert.False(policy.IsSafeForNonReplayable(Idle(S(8)), Now));

        // A proven time whose margin leaves less than UnknownSafeIdle does not narrow it.
        var shortProof = Policy();
        shortProof.NoteSurvived(Idle(S(1.1)), Now);
        Assert.True(shortProof.IsSafeForNonReplayable(Idle(S(0.99)), Now));
    }

    [Fact]
    public void NonReplayable_AKnownLimit_AlreadyRetiresWithAMargin_SoAnyIdleConnectionWithinItIsSafe()
    {
        Assert.True(Policy().IsSafeForNonReplayable(Idle(S(30), announcedTimeout: 60), Now));
        Assert.True(Policy(idleTimeout: S(40)).IsSafeForNonReplayable(Idle(S(30)), Now));

        var learning = Policy();
        LearnIdleTimeout(learning, S(20), closes: KeepAliveLearner.SettledAfter - 1);
        Assert.False(learning.IsSafeForNonReplayable(Idle(S(10)), Now)); // one close may be a late one
        LearnIdleTimeout(learning, S(20));
        Assert.True(learning.IsSafeForNonReplayable(Idle(S(10)), Now));
    }

    [Fact]
    public void NonReplayable_NeverTakesAProbe()
    {
        Assert.False(Policy(idleTimeout: S(40)).IsSafeForNonReplayable(Idle(TimeSpan.Zero, probe: true), Now));
    }

    [Fact]
    public void Sentinel_IsAConnectionThatReachedALearnedIdleTimeout_OneAtATime()
    {
        var policy = Policy();
        Assert.False(policy.KeepsAsSentinel(RetireReason.LearnedLimit, sentinelKept: false)); // nothing learned

        LearnIdleTimeout(policy, S(2));

        Assert.True(policy.KeepsAsSentinel(RetireReason.LearnedLimit, sentinelKept: false));
        Assert.False(policy.KeepsAsSentinel(RetireReason.LearnedLimit, sentinelKept: true));
        Assert.False(policy.KeepsAsSentinel(RetireReason.IdleTimeout, sentinelKept: false));
        Assert.False(policy.KeepsAsSentinel(RetireReason.AnnouncedLimit, sentinelKept: false));
    }

    [Fact]
    public void Sentinel_IsWatched_UntilWellPastTheLearnedValue()
    {
        var policy = Policy();
        LearnIdleTimeout(policy, S(2));

        Assert.Equal(SentinelVerdict.Watching, policy.WatchSentinel(Idle(S(3.99)), Now));
        Assert.Equal(SentinelVerdict.Outlived, policy.WatchSentinel(Idle(S(4)), Now));
        Assert.Equal(S(2), policy.Learner.IdleTimeout);
    }

    [Fact]
    public void Sentinel_TheConfiguredIdleTimeoutEndsItsWatch_AsAnOutliving()
    {
        var policy = Policy(idleTimeout: S(3));
        LearnIdleTimeout(policy, S(2));

        Assert.Equal(SentinelVerdict.Watching, policy.WatchSentinel(Idle(S(2.99)), Now));
        Assert.Equal(SentinelVerdict.Outlived, policy.WatchSentinel(Idle(S(3)), Now));
    }

    [Fact]
    public void Sentinel_OutlivingEnoughInARow_ForgetsTheLearnedValue_AndTheIdleTimeProvenUnderIt()
    {
        var policy = Policy();
        LearnIdleTimeout(policy, S(2));
        policy.NoteSurvived(Idle(S(1.4)), Now);

        for (var i = 1; i < KeepAliveLearner.OutlivedToForget; i++)
        {
            Assert.Equal(SentinelVerdict.Outlived, policy.WatchSentinel(Idle(S(4)), Now));
            Assert.Equal(S(1.4), policy.ProvenIdle);
        }
        Assert.Equal(SentinelVerdict.Forgotten, policy.WatchSentinel(Idle(S(4)), Now));

        Assert.Null(policy.Learner.IdleTimeout);
        Assert.Equal(TimeSpan.Zero, policy.ProvenIdle);
        Assert.Equal(KeepAliveConfig.Default.AutoIdleTimeoutCap, policy.IdleTimeout);
    }
}
