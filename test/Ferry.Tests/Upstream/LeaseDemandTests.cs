using Ferry.Upstream;
using Microsoft.Extensions.Time.Testing;

namespace Ferry.Tests.Upstream;

public sealed class LeaseDemandTests
{
    private static readonly TimeSpan Tick = TimeSpan.FromMilliseconds(250);

    [Fact]
    public void RecentPeak_IsTheMostConcurrentLeases_AndIsForgottenAfterTwoQuietWindows()
    {
        var clock = new FakeTimeProvider();
        var demand = new LeaseDemand(clock);
        for (var i = 0; i < 300; i++)
        {
            demand.Begin();
        }
        for (var i = 0; i < 290; i++)
        {
            demand.End();
        }
        Assert.Equal(10, demand.InFlight);
        Assert.Equal(300, demand.RecentPeak);

        // Kept through the window after the one it happened in.
        Advance(clock, demand, LeaseDemand.Window);
        Assert.Equal(300, demand.RecentPeak);
        Advance(clock, demand, LeaseDemand.Window - Tick);
        Assert.Equal(300, demand.RecentPeak);

        // Two windows later only what is still in flight counts.
        Advance(clock, demand, LeaseDemand.Window);
        Assert.Equal(10, demand.RecentPeak);
    }

    [Fact]
    public void IdleCap_IsMaxIdle_OrTheRecentPeakWhenHigher_AndZeroWithoutPooling()
    {
        var demand = new LeaseDemand(new FakeTimeProvider());
        for (var i = 0; i < 3000; i++)
        {
            demand.Begin();
        }
        Assert.Equal(3000, demand.IdleCap(1024));
        Assert.Equal(5000, demand.IdleCap(5000));
        Assert.Equal(0, demand.IdleCap(0));
    }

    [Theory]
    [InlineData(1025, 1024, 30_000, true)]
    [InlineData(1024, 1024, 300_000, false)] // at MaxIdle: only the idle timeout closes it
    [InlineData(3000, 1024, 29_999, false)]  // used within the window: the traffic still needs it
    [InlineData(1, 0, 30_000, true)]
    public void IsSurplus_AboveMaxIdle_AndIdleForAWholeWindow(int idleCount, int maxIdle, int coldestIdleMs, bool surplus) =>
        Assert.Equal(surplus, LeaseDemand.IsSurplus(idleCount, maxIdle, TimeSpan.FromMilliseconds(coldestIdleMs)));

    // The pool's rules on a LIFO stack of idle times, without sockets: 3,000 concurrent requests in a closed loop whose
    // concurrency swings between 500 and 3,000 every second, MaxIdle 1,024. A fixed cap of 1,024 closed every surplus
    // connection at each release and reopened it at the next peak; sized by the recent peak, the pool opens 3,000
    // connections and closes none while the traffic lasts, then ages the surplus out down to MaxIdle once it stops.
    [Fact]
    public void SteadyTraffic_OpensEachConnectionOnce_AndTheSurplusAgesOutWhenTrafficDrops()
    {
        const int MaxIdle = 1024;
        var clock = new FakeTimeProvider();
        var demand = new LeaseDemand(clock);
        var idle = new List<long>(); // IdleSince of each idle connection, index 0 = coldest
        var opened = 0;
        var closed = 0;

        void Lease(int count)
        {
            for (var i = 0; i < count; i++)
            {
                demand.Begin();
                if (idle.Count > 0)
                {
                    idle.RemoveAt(idle.Count - 1);
                }
                else
                {
                    opened++;
                }
            }
        }

        void Release(int count)
        {
            for (var i = 0; i < count; i++)
            {
                if (idle.Count >= demand.IdleCap(MaxIdle))
                {
                    idle.RemoveAt(0);
                    closed++;
                }
                idle.Add(clock.GetTimestamp());
                demand.End();
            }
        }

        void Scavenge()
        {
            demand.Tick();
            while (idle.Count > 0 && LeaseDemand.IsSurplus(idle.Count, MaxIdle, clock.GetElapsedTime(idle[0])))
            {
                idle.RemoveAt(0);
                closed++;
            }
        }

        for (var second = 0; second < 120; second++)
        {
            Lease(3000);
            Release(2500);
            for (var t = 0; t < 4; t++)
            {
                clock.Advance(Tick);
                Scavenge();
            }
            Release(500);
        }
        Assert.Equal(3000, opened);
        Assert.Equal(0, closed);
        Assert.Equal(3000, idle.Count);

        // The traffic drops to 100 concurrent requests: the connections it leaves cold close after a window.
        for (var t = 0; t < 4 * 2 * LeaseDemand.Window.TotalSeconds; t++)
        {
            Lease(100);
            clock.Advance(Tick);
            Release(100);
            Scavenge();
        }
        Assert.Equal(3000, opened);
        Assert.Equal(3000 - MaxIdle, closed);
        Assert.Equal(MaxIdle, idle.Count);
    }

    private static void Advance(FakeTimeProvider clock, LeaseDemand demand, TimeSpan by)
    {
        for (var elapsed = TimeSpan.Zero; elapsed < by; elapsed += Tick)
        {
            clock.Advance(Tick);
            demand.Tick();
        }
    }
}
