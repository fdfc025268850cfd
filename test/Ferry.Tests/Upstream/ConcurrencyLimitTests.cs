using Ferry.Upstream;
using Microsoft.Extensions.Time.Testing;

namespace Ferry.Tests.Upstream;

// Synthetic destinations driven in injected time: every 10 ms, as many requests as the limit and the demand allow
// complete, each with the latency the destination's model gives for that concurrency.
public sealed class ConcurrencyLimitTests
{
    private static readonly TimeSpan Step = TimeSpan.FromMilliseconds(10);

    // A backend serving `capacity` requests at once in `service` each; the others wait in its queue.
    private static Func<int, TimeSpan> FixedCapacity(int capacity, TimeSpan service) =>
        n => service * Math.Max(1.0, (double)n / capacity);

    private static (int Min, int Max) Run(FakeTimeProvider clock, ConcurrencyLimit limit, TimeSpan duration, int demand, Func<int, TimeSpan> latencyAt,
        TimeSpan connecting = default)
    {
        var (min, max) = (int.MaxValue, 0);
        for (var t = TimeSpan.Zero; t < duration; t += Step)
        {
            clock.Advance(Step);
            var inFlight = Math.Min(demand, limit.Limit);
            for (var i = 0; i < inFlight; i++)
            {
                limit.Sample(latencyAt(inFlight), inFlight, connecting);
            }
            min = Math.Min(min, limit.Limit);
            max = Math.Max(max, limit.Limit);
        }
        return (min, max);
    }

    [Fact]
    public void FixedCapacity_ConvergesBetweenCapacityAndTwiceIt()
    {
        var clock = new FakeTimeProvider();
        var limit = new ConcurrencyLimit(clock, min: 1, max: 1000, initial: 1);
        var backend = FixedCapacity(4, TimeSpan.FromMilliseconds(100));

        Run(clock, limit, TimeSpan.FromSeconds(10), demand: 200, backend);
        var (min, max) = Run(clock, limit, TimeSpan.FromSeconds(10), demand: 200, backend);

        // Never below the capacity (the backend stays busy), never so far above that requests wait in its queue for
        // longer than they are served: capacity × (Tolerance + NoiseFloor / service time) = 4 × 2.1.
        Assert.InRange(min, 4, 9);
        Assert.InRange(max, 4, 9);
    }

    [Fact]
    public void FiveTimesSlowerAndFewerAtOnce_LimitFollowsWithinSeconds_ThenRisesAgainOnRecovery()
    {
        var clock = new FakeTimeProvider();
        var limit = new ConcurrencyLimit(clock, min: 1, max: 1000, initial: 1);
        var service = TimeSpan.FromMilliseconds(40);
        Run(clock, limit, TimeSpan.FromSeconds(10), demand: 200, FixedCapacity(8, service));
        var before = limit.Limit;
        Assert.InRange(before, 8, 19);

        // Five times slower and able to serve only a fifth as many at once: the same limit would queue 5× in the backend.
        var slow = FixedCapacity(2, service * 5);
        var (low, _) = Run(clock, limit, TimeSpan.FromSeconds(2), demand: 200, slow);
        Assert.True(low <= before / 2, $"limit {before} only fell to {low} in 2 s");
        var (min, max) = Run(clock, limit, TimeSpan.FromSeconds(20), demand: 200, slow);
        Assert.True(min >= 1);
        Assert.InRange(limit.Limit, 1, 5);

        // Recovered: the lower latency is the new baseline at once, and the limit grows back to the capacity.
        Run(clock, limit, TimeSpan.FromSeconds(5), demand: 200, FixedCapacity(8, service));
        Assert.InRange(limit.Limit, 8, 19);
        Assert.True(limit.Increases > 0 && limit.Decreases > 0);
    }

    [Fact]
    public void SlowerButSameCapacity_LimitFalls_ThenComesBackWithinSeconds()
    {
        var clock = new FakeTimeProvider();
        var limit = new ConcurrencyLimit(clock, min: 1, max: 1000, initial: 1);
        Run(clock, limit, TimeSpan.FromSeconds(10), demand: 200, FixedCapacity(4, TimeSpan.FromMilliseconds(50)));
        var before = limit.Limit;

        var slower = FixedCapacity(4, TimeSpan.FromMilliseconds(250));
        var (low, _) = Run(clock, limit, TimeSpan.FromSeconds(2), demand: 200, slower);
        Assert.True(low < before);
        // At the floor the slower latency becomes the baseline, and the capacity (4 at once) is found again.
        Run(clock, limit, TimeSpan.FromSeconds(5), demand: 200, slower);
        Assert.InRange(limit.Limit, 4, 9);
        Assert.Equal(1, limit.Rebases);
    }

    [Fact]
    public void NeverBelowOne_NeverAboveTheCap()
    {
        var clock = new FakeTimeProvider();
        var limit = new ConcurrencyLimit(clock, min: 1, max: 50, initial: 8);

        // Unlimited capacity: grows to the cap and stays there.
        var (_, max) = Run(clock, limit, TimeSpan.FromSeconds(5), demand: 1000, _ => TimeSpan.FromMilliseconds(5));
        Assert.Equal(50, max);
        Assert.Equal(50, limit.Limit);

        // Latency that keeps rising whatever the concurrency: down to 1, never below.
        var start = clock.GetUtcNow();
        var (min, _) = Run(clock, limit, TimeSpan.FromSeconds(5), demand: 1000, _ => TimeSpan.FromMilliseconds(5) + (clock.GetUtcNow() - start) * 0.2);
        Assert.Equal(1, min);
        for (var i = 0; i < 10; i++)
        {
            clock.Advance(TimeSpan.FromSeconds(1));
            limit.Overload(inFlight: 1, "test");
        }
        Assert.Equal(1, limit.Limit);
    }

    [Fact]
    public void FastDestination_LightlyUsed_LimitNeverMoves()
    {
        var clock = new FakeTimeProvider();
        var limit = new ConcurrencyLimit(clock, min: 1, max: 1000, initial: 8);
        var random = new Random(1);

        // 0.1 ms answers with scheduling noise of up to 5 ms: relative jumps of 50×, none of them congestion.
        var (min, max) = Run(clock, limit, TimeSpan.FromSeconds(30), demand: 3,
            _ => TimeSpan.FromMilliseconds(0.1 + (random.Next(20) == 0 ? random.NextDouble() * 5 : 0)));

        Assert.Equal(8, min);
        Assert.Equal(8, max);
        Assert.Null(limit.TakeMove());
    }

    [Fact]
    public void FastDestination_ManyClients_LimitGrowsPastTheDemandWithinASecond_AndNeverFalls()
    {
        var clock = new FakeTimeProvider();
        var limit = new ConcurrencyLimit(clock, min: 1, max: 1000, initial: 8);
        var random = new Random(2);
        Func<int, TimeSpan> fast = n => TimeSpan.FromMilliseconds(0.05 * n + random.NextDouble() * 3);

        Run(clock, limit, TimeSpan.FromSeconds(1), demand: 64, fast);
        Assert.True(limit.Limit >= 64, $"limit {limit.Limit} after 1 s of 64 concurrent requests");
        Run(clock, limit, TimeSpan.FromSeconds(30), demand: 64, fast);
        Assert.Equal(0, limit.Decreases);
        Assert.InRange(limit.Limit, 64, 200);
    }

    // A destination that closes its connections every 100 requests (Tomcat) has a reconnect pending at some sample of
    // every window. A connect pending for a fraction of a millisecond is no sign of a full listen queue: the limit grows
    // as without it. (Held back by any pending connect, it stayed at 2 or 3 after a fresh start under load.)
    [Fact]
    public void QuickReconnectsPendingInEveryWindow_DoNotHoldGrowthBack()
    {
        var clock = new FakeTimeProvider();
        var limit = new ConcurrencyLimit(clock, min: 1, max: 1000, initial: 1);
        Func<int, TimeSpan> fast = n => TimeSpan.FromMilliseconds(0.05 * n);

        Run(clock, limit, TimeSpan.FromSeconds(2), demand: 64, fast, connecting: TimeSpan.FromMilliseconds(0.05));

        Assert.True(limit.Limit >= 64, $"limit {limit.Limit} after 2 s of 64 concurrent requests");
    }

    // A connect pending for longer than a risen request takes may be waiting for a retransmitted SYN: no growth while
    // one is seen.
    [Fact]
    public void ConnectPendingLongerThanARisenRequest_HoldsGrowthBack()
    {
        var clock = new FakeTimeProvider();
        var limit = new ConcurrencyLimit(clock, min: 1, max: 1000, initial: 4);
        Func<int, TimeSpan> fast = n => TimeSpan.FromMilliseconds(0.05 * n);

        Run(clock, limit, TimeSpan.FromSeconds(2), demand: 64, fast, connecting: TimeSpan.FromMilliseconds(200));

        Assert.Equal(4, limit.Limit);
        Assert.Equal(0, limit.Increases);
    }

    [Fact]
    public void SlowConnects_HalveFromWhatWasInFlight_OnceForABurst()
    {
        var clock = new FakeTimeProvider();
        var limit = new ConcurrencyLimit(clock, min: 1, max: 1000, initial: 40);

        limit.Overload(inFlight: 20, "slow connect");
        Assert.Equal(10, limit.Limit);
        // The same overflow drops several SYNs: their slow connects arrive together and cut once.
        limit.Overload(inFlight: 10, "slow connect");
        limit.Overload(inFlight: 10, "slow connect");
        Assert.Equal(10, limit.Limit);
        Assert.Equal(3, limit.Overloads);

        clock.Advance(ConcurrencyLimit.Window);
        limit.Overload(inFlight: 10, "slow connect");
        Assert.Equal(5, limit.Limit);
    }

    [Fact]
    public void MovesByMoreThanHalf_AreReportedOnce()
    {
        var clock = new FakeTimeProvider();
        var limit = new ConcurrencyLimit(clock, min: 1, max: 1000, initial: 40);

        limit.Overload(inFlight: 30, "slow connect");
        Assert.Equal(new LimitMove(40, 15, "slow connect"), limit.TakeMove());
        Assert.Null(limit.TakeMove());

        // 15 -> 14 -> ... by one: reported only once the slide passes half of the 15 last reported.
        var moves = new List<LimitMove>();
        for (var inFlight = 28; inFlight >= 12; inFlight -= 2)
        {
            clock.Advance(ConcurrencyLimit.Window);
            limit.Overload(inFlight, "slow connect");
            if (limit.TakeMove() is { } move)
            {
                moves.Add(move);
            }
        }
        Assert.Equal(1, limit.Limit);
        Assert.Equal([new LimitMove(15, 7, "slow connect"), new LimitMove(7, 3, "slow connect"), new LimitMove(3, 1, "slow connect")], moves);
    }

    // A cold start under thousands of connections to a fast destination: from 1, the limit grows by half every window
    // and never falls, so the queue drains (the pool's queue does not shed while it drains).
    [Fact]
    public void ColdStart_FastDestination_WideDemand_GrowsPastHundredsWithinTwoSeconds_NeverFalls()
    {
        var clock = new FakeTimeProvider();
        var limit = new ConcurrencyLimit(clock, min: 1, max: 1000, initial: 1);
        var random = new Random(3);
        Func<int, TimeSpan> fast = n => TimeSpan.FromMilliseconds(0.1 + 0.002 * n + random.NextDouble() * 3);

        Run(clock, limit, TimeSpan.FromSeconds(2), demand: 3000, fast);

        Assert.True(limit.Limit >= 300, $"limit {limit.Limit} after 2 s of 3,000 waiting requests");
        Assert.Equal(0, limit.Decreases);
    }
}
