using Ferry.Upstream;
using Microsoft.Extensions.Time.Testing;

namespace Ferry.Tests.Upstream;

public sealed class KeepAliveLearnerTests
{
    private static TimeSpan S(double seconds) => TimeSpan.FromSeconds(seconds);

    [Fact]
    public void IdleTimeout_IsTheEarliestClose_ALaterCloseNeverRaisesIt()
    {
        var learner = new KeepAliveLearner(new FakeTimeProvider());

        learner.ObserveIdleClose(S(2.004), requests: 1);
        learner.ObserveIdleClose(S(3.0), requests: 1);  // gunicorn's loop woke late: no evidence that 2.5 s is safe
        learner.ObserveIdleClose(S(2.6), requests: 1);

        Assert.Equal(S(2.004), learner.IdleTimeout);
    }

    [Fact]
    public void IdleTimeout_AnEarlierCloseLowersIt_AtOnce()
    {
        var learner = new KeepAliveLearner(new FakeTimeProvider());

        learner.ObserveIdleClose(S(2.9), requests: 1);
        learner.ObserveIdleClose(S(2.0), requests: 1);

        Assert.Equal(S(2.0), learner.IdleTimeout);
    }

    [Fact]
    public void IdleTimeout_IsSettled_OnlyAfterEnoughCloses()
    {
        var learner = new KeepAliveLearner(new FakeTimeProvider());
        for (var i = 1; i < KeepAliveLearner.SettledAfter; i++)
        {
            learner.ObserveIdleClose(S(2.5), requests: 1);
            Assert.False(learner.IdleTimeoutSettled);
        }

        learner.ObserveIdleClose(S(2.5), requests: 1);

        Assert.True(learner.IdleTimeoutSettled);
    }

    [Fact]
    public void SentinelOutlived_ForgetsTheValue_OnlyAfterEnoughInARow()
    {
        var learner = new KeepAliveLearner(new FakeTimeProvider());
        learner.ObserveIdleClose(S(2), requests: 1);

        for (var i = 1; i < KeepAliveLearner.OutlivedToForget; i++)
        {
            Assert.False(learner.SentinelOutlived());
            Assert.Equal(S(2), learner.IdleTimeout);
        }
        Assert.True(learner.SentinelOutlived());

        Assert.Null(learner.IdleTimeout);
        Assert.False(learner.IdleTimeoutSettled);
        Assert.Equal(1, learner.Forgotten);
    }

    [Fact]
    public void SentinelOutlived_AnyIdleCloseInBetween_StartsTheCountAgain()
    {
        var learner = new KeepAliveLearner(new FakeTimeProvider());
        learner.ObserveIdleClose(S(2), requests: 1);

        for (var i = 1; i < KeepAliveLearner.OutlivedToForget; i++)
        {
            Assert.False(learner.SentinelOutlived());
        }
        learner.ObserveIdleClose(S(2.7), requests: 1); // the destination still closes idle connections
        for (var i = 1; i < KeepAliveLearner.OutlivedToForget; i++)
        {
            Assert.False(learner.SentinelOutlived());
        }

        Assert.Equal(S(2), learner.IdleTimeout);
        Assert.Equal(0, learner.Forgotten);
    }

    [Fact]
    public void AfterForgetting_TheNextClosesAreLearnedAgain()
    {
        var learner = new KeepAliveLearner(new FakeTimeProvider());
        learner.ObserveIdleClose(S(2), requests: 1);
        for (var i = 0; i < KeepAliveLearner.OutlivedToForget; i++)
        {
            learner.SentinelOutlived();
        }

        learner.ObserveIdleClose(S(20.02), requests: 1);

        Assert.Equal(S(20.02), learner.IdleTimeout);
        Assert.False(learner.IdleTimeoutSettled);
    }

    [Fact]
    public void IsOutlived_WellPastTheLearnedValue()
    {
        var learner = new KeepAliveLearner(new FakeTimeProvider());
        Assert.False(learner.IsOutlived(S(100)));
        learner.ObserveIdleClose(S(2), requests: 1);

        Assert.False(learner.IsOutlived(S(3.99)));
        Assert.True(learner.IsOutlived(S(4)));
    }

    [Fact]
    public void ImmediateCloses_AreRequestLimits_NotIdleTimeouts()
    {
        var learner = new KeepAliveLearner(new FakeTimeProvider());

        learner.ObserveIdleClose(TimeSpan.FromMilliseconds(3), requests: 100);

        Assert.Null(learner.IdleTimeout);
        Assert.Equal(0, learner.IdleSamples);
    }

    [Fact]
    public void MaxRequests_NeedsTwoMatchingCloses()
    {
        var learner = new KeepAliveLearner(new FakeTimeProvider());

        learner.ObserveIdleClose(TimeSpan.Zero, requests: 100);
        Assert.Equal(0, learner.MaxRequests);
        learner.ObserveIdleClose(TimeSpan.Zero, requests: 37); // a different count: not confirmed
        Assert.Equal(0, learner.MaxRequests);
        learner.ObserveIdleClose(TimeSpan.Zero, requests: 37);

        Assert.Equal(37, learner.MaxRequests);
    }

    [Fact]
    public void MaxRequests_IsNeverBelowWhatAConnectionServed()
    {
        var learner = new KeepAliveLearner(new FakeTimeProvider());
        learner.NoteServed(120);

        learner.ObserveIdleClose(TimeSpan.Zero, requests: 100);
        learner.ObserveIdleClose(TimeSpan.Zero, requests: 100);

        Assert.Equal(0, learner.MaxRequests); // a restart closing every connection, not a limit
    }

    [Fact]
    public void MaxRequests_IsForgotten_WhenAProbeAnswersMore_OrAfterItsLifetime()
    {
        var clock = new FakeTimeProvider();
        var learner = new KeepAliveLearner(clock);
        learner.ObserveIdleClose(TimeSpan.Zero, requests: 100);
        learner.ObserveIdleClose(TimeSpan.Zero, requests: 100);

        learner.NoteServed(101);
        Assert.Equal(0, learner.MaxRequests);

        learner.ObserveIdleClose(TimeSpan.Zero, requests: 150);
        learner.ObserveIdleClose(TimeSpan.Zero, requests: 150);
        Assert.Equal(150, learner.MaxRequests);
        clock.Advance(KeepAliveLearner.MaxRequestsLifetime);
        Assert.Equal(0, learner.MaxRequests);
    }
}
