using Ferry.Configuration;
using Ferry.Health;
using Microsoft.Extensions.Time.Testing;

namespace Ferry.Tests.Health;

public sealed class DestinationHealthTests
{
    private static readonly PassiveHealthConfig Passive = PassiveHealthConfig.Default with
    {
        MaxFailures = 3,
        FailureWindow = TimeSpan.FromSeconds(10),
        ReactivationPeriod = TimeSpan.FromSeconds(30),
    };

    private static DestinationHealth Health(FakeTimeProvider clock, PassiveHealthConfig? passive = null, ActiveHealthConfig? active = null,
        TimeSpan slowStart = default) =>
        new(passive ?? Passive, active ?? ActiveHealthConfig.Default, slowStart, clock);

    [Fact]
    public void MaxFailuresInTheWindow_EjectForTheReactivationPeriod()
    {
        var clock = new FakeTimeProvider();
        var health = Health(clock);

        health.ReportFailure("refused");
        health.ReportFailure("refused");
        Assert.True(health.IsAvailable);
        health.ReportFailure("refused");
        Assert.False(health.IsAvailable);
        Assert.Contains("3 failures in a row", health.Reason);

        clock.Advance(DestinationHealth.FirstTrialDelay - TimeSpan.FromMilliseconds(1));
        Assert.False(health.IsCandidate);
        clock.Advance(TimeSpan.FromMilliseconds(1));
        Assert.False(health.IsAvailable);
        // Without traffic no trial is made: the ejection simply runs out.
        clock.Advance(Passive.ReactivationPeriod);
        Assert.True(health.IsAvailable);
        Assert.Equal("ok", health.Reason);
    }

    [Fact]
    public void AnEjectedDestination_TakesOneTrialRequest_AndASuccessRestoresIt()
    {
        var clock = new FakeTimeProvider();
        var health = Health(clock, Passive with { MaxFailures = 1 });
        health.ReportFailure("refused");
        Assert.False(health.IsCandidate);

        clock.Advance(DestinationHealth.FirstTrialDelay);
        Assert.True(health.IsCandidate);
        // Still out of rotation for /status and the metrics until the trial succeeds.
        Assert.False(health.IsAvailable);
        Assert.Contains("trial request due", health.Reason);

        health.OnRequestStarted();
        Assert.False(health.IsCandidate);
        Assert.Contains("trial request in flight", health.Reason);
        // Another request that raced the first one through the balancer does not start a second trial window.
        health.OnRequestStarted();
        Assert.False(health.IsCandidate);

        health.ReportSuccess();
        Assert.True(health.IsCandidate);
        Assert.True(health.IsAvailable);
        Assert.Equal("ok", health.Reason);
        clock.Advance(Passive.ReactivationPeriod);
        Assert.True(health.IsCandidate);
    }

    [Fact]
    public void AFailedTrial_KeepsTheDestinationOut_AndBacksOffTheNextOne()
    {
        var clock = new FakeTimeProvider();
        var health = Health(clock, Passive with { MaxFailures = 3 });
        for (var i = 0; i < 3; i++)
        {
            health.ReportFailure("refused");
        }

        clock.Advance(DestinationHealth.FirstTrialDelay);
        health.OnRequestStarted();
        // One failed trial is enough, whatever MaxFailures says.
        health.ReportFailure("refused again");
        Assert.False(health.IsCandidate);
        Assert.Contains("trial request failed: refused again", health.Reason);

        clock.Advance(DestinationHealth.FirstTrialDelay);
        Assert.False(health.IsCandidate);
        clock.Advance(DestinationHealth.MaxTrialDelay - DestinationHealth.FirstTrialDelay);
        Assert.True(health.IsCandidate);

        // The wait stops growing at MaxTrialDelay.
        health.OnRequestStarted();
        health.ReportFailure("refused");
        clock.Advance(DestinationHealth.MaxTrialDelay - TimeSpan.FromMilliseconds(1));
        Assert.False(health.IsCandidate);
        clock.Advance(TimeSpan.FromMilliseconds(1));
        Assert.True(health.IsCandidate);

        // Each failed trial extends the ejection: without traffic it lasts ReactivationPeriod from the last one.
        health.OnRequestStarted();
        health.ReportFailure("refused");
        clock.Advance(Passive.ReactivationPeriod - TimeSpan.FromMilliseconds(1));
        Assert.Contains("passive", health.Reason);
        clock.Advance(TimeSpan.FromMilliseconds(1));
        Assert.Equal("ok", health.Reason);
    }

    [Fact]
    public void FailuresOfRequestsSentBeforeTheEjection_DoNotDelayTheTrial()
    {
        var clock = new FakeTimeProvider();
        var health = Health(clock, Passive with { MaxFailures = 1 });
        health.ReportFailure("refused");
        health.ReportFailure("refused");
        health.ReportFailure("refused");

        clock.Advance(DestinationHealth.FirstTrialDelay);
        Assert.True(health.IsCandidate);
    }

    [Fact]
    public void ATrialThatNeverEnds_NoLongerHoldsTheNextOneBack()
    {
        var clock = new FakeTimeProvider();
        var health = Health(clock, Passive with { MaxFailures = 1 });
        health.ReportFailure("response timeout");
        clock.Advance(DestinationHealth.FirstTrialDelay);
        health.OnRequestStarted();

        clock.Advance(DestinationHealth.TrialTimeout - TimeSpan.FromMilliseconds(1));
        Assert.False(health.IsCandidate);
        clock.Advance(TimeSpan.FromMilliseconds(1));
        Assert.True(health.IsCandidate);
    }

    [Fact]
    public void ATrialIsNeverLaterThanTheEndOfTheEjection()
    {
        var clock = new FakeTimeProvider();
        var health = Health(clock, Passive with { MaxFailures = 1, ReactivationPeriod = TimeSpan.FromMilliseconds(300) });
        health.ReportFailure("refused");
        clock.Advance(TimeSpan.FromMilliseconds(300));
        Assert.True(health.IsCandidate);
        Assert.Equal("ok", health.Reason);
    }

    [Fact]
    public void FailuresSpreadBeyondTheWindow_DoNotEject()
    {
        var clock = new FakeTimeProvider();
        var health = Health(clock);

        for (var i = 0; i < 10; i++)
        {
            health.ReportFailure("timeout");
            clock.Advance(TimeSpan.FromSeconds(6));
        }

        Assert.True(health.IsCandidate);
    }

    [Fact]
    public void ASuccess_BreaksTheRun()
    {
        var clock = new FakeTimeProvider();
        var health = Health(clock);

        for (var i = 0; i < 10; i++)
        {
            health.ReportFailure("timeout");
            health.ReportFailure("timeout");
            health.ReportSuccess();
        }

        Assert.True(health.IsCandidate);
    }

    [Fact]
    public void Disabled_NeverEjects()
    {
        var clock = new FakeTimeProvider();
        var health = Health(clock, Passive with { Enabled = false, MaxFailures = 1 });

        health.ReportFailure("refused");

        Assert.True(health.IsCandidate);
    }

    [Fact]
    public void ActiveChecks_FallThenRise()
    {
        var clock = new FakeTimeProvider();
        var health = Health(clock, active: ActiveHealthConfig.Default with { Enabled = true, Fall = 3, Rise = 2 });

        Assert.False(health.ReportCheck(false, "status 500"));
        Assert.False(health.ReportCheck(false, "status 500"));
        Assert.True(health.IsCandidate);
        Assert.True(health.ReportCheck(false, "status 500"));
        Assert.False(health.IsCandidate);
        Assert.Contains("status 500", health.Reason);

        Assert.False(health.ReportCheck(true, "status 200"));
        Assert.False(health.ReportCheck(false, "status 500"));
        Assert.False(health.ReportCheck(true, "status 200"));
        Assert.False(health.IsCandidate);
        Assert.True(health.ReportCheck(true, "status 200"));
        Assert.True(health.IsCandidate);
    }

    [Fact]
    public void ARecoveredCheck_ClearsAPassiveEjection()
    {
        var clock = new FakeTimeProvider();
        var health = Health(clock, Passive with { MaxFailures = 1 }, ActiveHealthConfig.Default with { Enabled = true, Fall = 1, Rise = 1 });
        health.ReportCheck(false, "refused");
        health.ReportFailure("refused");

        health.ReportCheck(true, "status 200");

        Assert.True(health.IsCandidate);
    }

    [Fact]
    public void SlowStart_RampsFromTheEndOfTheEjection()
    {
        var clock = new FakeTimeProvider();
        var health = Health(clock, Passive with { MaxFailures = 1 }, slowStart: TimeSpan.FromSeconds(100));
        clock.Advance(TimeSpan.FromSeconds(200));
        Assert.Equal(1, health.SlowStartFactor());

        health.ReportFailure("refused");
        clock.Advance(Passive.ReactivationPeriod);
        Assert.True(health.IsCandidate);
        Assert.Equal(DestinationHealth.MinSlowStartFactor, health.SlowStartFactor());
        Assert.Equal("ok (slow start)", health.Reason);

        clock.Advance(TimeSpan.FromSeconds(50));
        Assert.Equal(0.5, health.SlowStartFactor(), 3);
        clock.Advance(TimeSpan.FromSeconds(50));
        Assert.Equal(1, health.SlowStartFactor());
    }

    [Fact]
    public void NoSlowStart_FullWeightAtOnce()
    {
        var clock = new FakeTimeProvider();
        var health = Health(clock, Passive with { MaxFailures = 1 });

        health.ReportFailure("refused");
        clock.Advance(Passive.ReactivationPeriod);

        Assert.Equal(1, health.SlowStartFactor());
    }

    [Theory]
    [InlineData(0.0, 4000)]
    [InlineData(0.5, 5000)]
    [InlineData(0.999999, 6000)]
    public void CheckIntervals_AreJitteredAroundTheInterval(double sample, int expectedMs)
    {
        var config = ActiveHealthConfig.Default with { Interval = TimeSpan.FromSeconds(5), Jitter = 0.2 };

        Assert.Equal(expectedMs, ActiveHealthChecker.NextDelay(config, sample).TotalMilliseconds, 0);
    }
}
