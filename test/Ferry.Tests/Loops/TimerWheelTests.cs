using Ferry.Loops;
using Ferry.Tests.Support;

namespace Ferry.Tests.Loops;

// The loop's timer wheel on a manual clock, driven as the loop drives it: sleep what TimeoutMs says, then Advance.
public sealed class TimerWheelTests
{
    private readonly ManualTimeProvider _time = new();
    private readonly TimerWheel _wheel;
    private readonly List<(string Name, long At)> _fired = [];

    public TimerWheelTests() => _wheel = new TimerWheel(_time);

    private LoopTimer Timer(string name) => new(s => _fired.Add(((string)s!, _time.GetTimestamp())), name);

    private long In(double ms) => _time.GetTimestamp() + (long)(ms * _time.TimestampFrequency / 1000);

    private void Pass(double ms)
    {
        _time.Advance(TimeSpan.FromMilliseconds(ms));
        _wheel.Advance();
    }

    [Fact]
    public void ATimer_FiresOnce_AtTheEndOfItsDeadlinesTick_NotBefore()
    {
        var deadline = In(10.5);
        _wheel.Arm(Timer("a"), deadline);
        Assert.Equal(1, _wheel.Count);
        Assert.InRange(_wheel.TimeoutMs(), 10, 11);

        Pass(10.4);
        Assert.Empty(_fired);
        // At the deadline, within its 1 ms tick: the tick fires as a whole once it has ended.
        Pass(0.1);
        Assert.Empty(_fired);
        Pass(0.5);
        var (name, at) = Assert.Single(_fired);
        Assert.Equal("a", name);
        Assert.Equal(deadline + _time.TimestampFrequency / 2000, at);
        Assert.Equal(0, _wheel.Count);
        Assert.Equal(1, _wheel.Fired);
        Assert.Equal(-1, _wheel.TimeoutMs());

        Pass(1000);
        Assert.Single(_fired);
    }

    [Fact]
    public void ACancelledTimer_NeverFires_AndTheWheelAsksForNoWakeUp()
    {
        var timer = Timer("a");
        _wheel.Arm(timer, In(20));
        _wheel.Cancel(timer);
        Assert.False(timer.IsArmed);
        Assert.Equal(0, _wheel.Count);
        Assert.Equal(-1, _wheel.TimeoutMs());
        _wheel.Cancel(timer);

        Pass(100);
        Assert.Empty(_fired);
        Assert.Equal(0, _wheel.Fired);
    }

    [Fact]
    public void ReArming_MovesTheTimer_EarlierOrLater()
    {
        var a = Timer("a");
        _wheel.Arm(a, In(50));
        _wheel.Arm(a, In(10));
        Assert.Equal(1, _wheel.Count);
        Pass(10);
        Assert.Equal("a", Assert.Single(_fired).Name);

        var b = Timer("b");
        _wheel.Arm(b, In(10));
        var later = In(500);
        _wheel.Arm(b, later);
        Pass(10);
        Assert.Single(_fired);
        Pass(489);
        Assert.Single(_fired);
        Pass(1);
        Assert.Equal(("b", later), _fired[1]);
    }

    [Fact]
    public void TimersDueInOneAdvance_FireInTheOrderOfTheirDeadlines()
    {
        foreach (var (name, ms) in new[] { ("30", 30.0), ("5a", 5), ("1000", 1000), ("20", 20), ("5b", 5), ("300", 300), ("100", 100) })
        {
            _wheel.Arm(Timer(name), In(ms));
        }

        Pass(2000);

        Assert.Equal(["5a", "5b", "20", "30", "100", "300", "1000"], _fired.Select(f => f.Name));
    }

    [Fact]
    public void AFarFutureTimer_FiresAtItsDeadline_AfterFewWakeUps()
    {
        var deadline = In(TimeSpan.FromMinutes(10).TotalMilliseconds + 0.3);
        _wheel.Arm(Timer("far"), deadline);

        var wakeUps = 0;
        while (_fired.Count == 0 && wakeUps < 1000)
        {
            var sleep = _wheel.TimeoutMs();
            Assert.True(sleep >= 0, "a timer is armed: the loop must wake for it");
            Pass(sleep);
            wakeUps++;
        }

        var (_, at) = Assert.Single(_fired);
        Assert.InRange(at - deadline, 0, _time.TimestampFrequency / 1000);
        // One wake-up per turn of the outer level (65.5 s) until the timer is near, then its own.
        Assert.InRange(wakeUps, 2, 15);
    }

    [Fact]
    public void ManyTimersInOneSlot_AllFire_AndOnesCancelledByAnotherCallback_DoNot()
    {
        var deadline = In(40);
        var timers = new LoopTimer[1000];
        for (var i = 0; i < timers.Length; i++)
        {
            var index = i;
            timers[i] = new LoopTimer(_ =>
            {
                _fired.Add((index.ToString(System.Globalization.CultureInfo.InvariantCulture), _time.GetTimestamp()));
                if (index % 2 == 0)
                {
                    _wheel.Cancel(timers[index + 1]);
                }
            }, null);
            _wheel.Arm(timers[i], deadline);
        }
        // Same level-0 slot one turn later: these must wait for their own turn.
        var nextTurn = In(40 + 256);
        for (var i = 0; i < 100; i++)
        {
            _wheel.Arm(Timer("later"), nextTurn);
        }

        Pass(40);

        Assert.Equal(500, _fired.Count);
        Assert.All(_fired, f => Assert.Equal(0, int.Parse(f.Name, System.Globalization.CultureInfo.InvariantCulture) % 2));
        Assert.Equal(100, _wheel.Count);
        Pass(255);
        Assert.Equal(500, _fired.Count);
        Pass(1);
        Assert.Equal(600, _fired.Count);
        Assert.Equal(0, _wheel.Count);
    }

    // A turn of the inner level is 256 ticks: its slot for "now + 256" is the slot being fired.
    [Theory]
    [InlineData(255)]
    [InlineData(256)]
    [InlineData(257)]
    public void ACallback_ArmingATimerAboutOneTurnAhead_DoesNotFireItEarly(int ms)
    {
        LoopTimer? next = null;
        var first = new LoopTimer(_ =>
        {
            _fired.Add(("first", _time.GetTimestamp()));
            _wheel.Arm(next!, In(ms));
        }, null);
        next = Timer("next");
        _wheel.Arm(first, In(3));

        Pass(3);
        Assert.Equal(["first"], _fired.Select(f => f.Name));
        for (var i = 1; i < ms; i++)
        {
            Pass(1);
        }
        Assert.Single(_fired);
        Pass(1);
        Assert.Equal(["first", "next"], _fired.Select(f => f.Name));
    }

    [Fact]
    public void AThrowingCallback_IsReported_AndTheOthersStillFire()
    {
        var errors = new List<Exception>();
        _wheel.OnError = errors.Add;
        _wheel.Arm(new LoopTimer(_ => throw new InvalidOperationException("boom"), null), In(5));
        _wheel.Arm(Timer("b"), In(5));

        Pass(5);

        Assert.Equal("boom", Assert.Single(errors).Message);
        Assert.Equal("b", Assert.Single(_fired).Name);
        Assert.Equal(0, _wheel.Count);
    }

    [Fact]
    public void AnIdleWheel_ArmedAgainLater_CountsFromNow()
    {
        _wheel.Arm(Timer("a"), In(5));
        Pass(5);
        // Nothing armed: the loop never calls Advance, and an hour passes.
        _time.Advance(TimeSpan.FromHours(1));
        var deadline = In(30);
        _wheel.Arm(Timer("b"), deadline);

        Assert.InRange(_wheel.TimeoutMs(), 30, 31);
        Pass(29);
        Assert.Single(_fired);
        Pass(1);
        Assert.Equal(("b", deadline), _fired[1]);
    }

    // Random deadlines, steps, cancels and re-arms over both levels and past them: every timer fires at the first
    // Advance at or after its deadline, within a tick, and a cancelled one never fires.
    [Fact]
    public void RandomSchedules_FireNoEarlierThanTheDeadline_AndAtMostATickLater()
    {
        var random = new Random(14);
        var tick = _time.TimestampFrequency / 1000;
        var deadlines = new Dictionary<int, long>();
        var fired = new HashSet<int>();
        var justFired = new List<int>();
        var timers = new LoopTimer[3000];
        for (var i = 0; i < timers.Length; i++)
        {
            var index = i;
            timers[i] = new LoopTimer(_ =>
            {
                Assert.True(fired.Add(index), "fired twice");
                justFired.Add(index);
            }, null);
        }
        for (var step = 0; step < 40_000; step++)
        {
            var action = random.Next(10);
            var i = random.Next(timers.Length);
            if (action < 3 && !fired.Contains(i))
            {
                // Mostly within the first level, some within the second, a few beyond both.
                var ms = random.Next(4) switch { 0 => random.NextDouble() * 256, 1 or 2 => random.NextDouble() * 65_000, _ => 65_000 + random.NextDouble() * 200_000 };
                deadlines[i] = In(ms);
                _wheel.Arm(timers[i], deadlines[i]);
            }
            else if (action == 3 && !fired.Contains(i))
            {
                _wheel.Cancel(timers[i]);
                deadlines.Remove(i);
            }
            var before = _time.GetTimestamp();
            _time.Advance(TimeSpan.FromMilliseconds(random.NextDouble() * (random.Next(50) == 0 ? 5_000 : 20)));
            justFired.Clear();
            _wheel.Advance();
            var now = _time.GetTimestamp();
            foreach (var index in justFired)
            {
                Assert.True(deadlines.TryGetValue(index, out var deadline), "a cancelled timer fired");
                Assert.True(now >= deadline, $"fired {(deadline - now) / (double)tick} ms early");
                // Not yet due (to the tick) at the previous Advance: otherwise it should have fired then.
                Assert.True(deadline > before - tick, "fired late");
            }
            if (step % 500 == 0)
            {
                AssertNoneOverdue(deadlines, fired, now - tick);
            }
        }
        AssertNoneOverdue(deadlines, fired, _time.GetTimestamp() - tick);
        Assert.True(fired.Count > 1000, $"only {fired.Count} timers fired");
        Assert.Equal(deadlines.Keys.Count(k => !fired.Contains(k)), _wheel.Count);
    }

    private static void AssertNoneOverdue(Dictionary<int, long> deadlines, HashSet<int> fired, long dueBy)
    {
        foreach (var (index, deadline) in deadlines)
        {
            Assert.False(!fired.Contains(index) && deadline <= dueBy, $"timer {index} is more than a tick past its deadline and has not fired");
        }
    }
}
