using System.Diagnostics;

namespace Ferry.Loops;

/// <summary>
/// A timer of one <see cref="TimerWheel"/>: allocated once by its owner and armed, moved and cancelled any number of
/// times without allocating. Armed in at most one wheel at a time.
/// </summary>
internal sealed class LoopTimer(Action<object?>? callback, object? state)
{
    // Links in a slot's circular list (the slot's head is a LoopTimer without a callback); null while not armed.
    internal LoopTimer? Prev;
    internal LoopTimer? Next;
    internal long Tick;     // the wheel tick at which it fires
    internal long Deadline; // what it was armed for, in the wheel's timestamps
    internal TimerWheel? Wheel;

    internal Action<object?>? Callback { get; } = callback;
    internal object? State { get; } = state;

    public bool IsArmed => Wheel is not null;

    internal LoopTimer() : this(null, null)
    {
        Prev = Next = this;
    }

    internal bool IsEmptyList => ReferenceEquals(Next, this);

    internal void Unlink()
    {
        Prev!.Next = Next;
        Next!.Prev = Prev;
        Prev = Next = null;
    }

    internal void Append(LoopTimer timer)
    {
        var last = Prev!;
        timer.Prev = last;
        timer.Next = this;
        last.Next = timer;
        Prev = timer;
    }

    // Moves every timer of this list to the end of `to`, in order, leaving this list empty.
    internal void MoveAllTo(LoopTimer to)
    {
        if (IsEmptyList)
        {
            return;
        }
        var first = Next!;
        var last = Prev!;
        var tail = to.Prev!;
        tail.Next = first;
        first.Prev = tail;
        last.Next = to;
        to.Prev = last;
        Next = Prev = this;
    }
}

/// <summary>
/// The timers of one event loop: a hierarchical timing wheel, used on the loop's thread only, so arming, moving,
/// cancelling and firing take no lock and allocate nothing (each timer is a node its owner keeps). Arm and cancel
/// are O(1): a timer is linked into the slot of its tick, or unlinked.
/// <para>One tick is 1 ms: the loop sleeps in epoll_wait, whose timeout counts milliseconds, so a finer tick could not
/// be waited for, and a coarser one would make the short timeouts of tests (and a 100 ms timeout, the shortest
/// Ferry's upstreams are given in practice) late by a larger share. A timer fires in the first
/// <see cref="Advance"/> at or after the end of its tick: never before its deadline, at most a tick and the loop's
/// wake-up latency after it.</para>
/// <para>Level 0 holds the next 256 ticks, one slot each; level 1 holds 256 slots of 256 ticks (65.5 s), whose timers
/// move down to level 0 when their slot's turn comes. A timer further away than that (a timeout of minutes) waits in
/// level 1 and is looked at once every 65.5 s until it is near. Exchanges arm 60 s timeouts by default and clear them
/// a few milliseconds later, so most timers live and die in level 1 without ever being looked at.</para>
/// <para>The loop asks <see cref="TimeoutMs"/> how long it may sleep: the time to the earliest slot that holds a
/// timer, and no limit when none is armed: an idle loop is never woken for its timers.</para>
/// </summary>
internal sealed class TimerWheel
{
    private const int Bits = 8;
    private const int Slots = 1 << Bits;
    private const int Mask = Slots - 1;

    private readonly TimeProvider _time;
    private readonly long _origin;     // the timestamp of tick 0
    private readonly long _tickLength; // timestamp units per tick
    private readonly LoopTimer[] _near = NewSlots(); // level 0: one tick each, ticks [_next, _next + 256)
    private readonly LoopTimer[] _far = NewSlots();  // level 1: 256 ticks each
    private readonly LoopTimer _due = new();         // the timers firing in the current Advance
    private readonly LoopTimer _moving = new();      // the timers of a level-1 slot moving down

    // The next tick Advance processes: every tick before it has been processed.
    private long _next;
    // No timer fires, and no level-1 slot holding timers moves down, before this tick (MaxValue: nothing armed).
    // A lower bound: a cancelled timer leaves it where it was, and the loop then wakes once for nothing.
    private long _earliest = long.MaxValue;
    // The clock when Advance last read it (or the arm that found the wheel empty): what TimeoutMs counts from, so that
    // a batch of the loop reads the clock once for its timers.
    private long _now;

    public TimerWheel(TimeProvider time)
    {
        _time = time;
        _tickLength = Math.Max(1, time.TimestampFrequency / 1000);
        _origin = _now = time.GetTimestamp();
    }

    /// <summary>Timers armed now.</summary>
    public int Count { get; private set; }

    /// <summary>Timers fired since the wheel was made; read from any thread.</summary>
    public long Fired => Volatile.Read(ref _fired);

    private long _fired;

    /// <summary>Where a callback's exception is reported; the other timers fire regardless.</summary>
    public Action<Exception>? OnError { get; set; }

    private static LoopTimer[] NewSlots()
    {
        var slots = new LoopTimer[Slots];
        for (var i = 0; i < slots.Length; i++)
        {
            slots[i] = new LoopTimer();
        }
        return slots;
    }

    /// <summary>Arms <paramref name="timer"/> to fire once <paramref name="deadline"/> (a timestamp of the wheel's
    /// TimeProvider) has passed; one that is armed already is moved.</summary>
    public void Arm(LoopTimer timer, long deadline)
    {
        Debug.Assert(timer.Callback is not null);
        if (timer.Wheel is { } wheel)
        {
            Debug.Assert(ReferenceEquals(wheel, this), "a timer is armed in one wheel at a time");
            timer.Unlink();
            Count--;
        }
        else if (Count == 0)
        {
            // Nothing was armed, so Advance has not run since: bring the wheel to now, or this timer's tick would be
            // counted from where it stopped and the next Advance would walk every tick in between.
            _now = _time.GetTimestamp();
            _next = Math.Max(_next, TickAt(_now) + 1);
            _earliest = long.MaxValue;
        }
        timer.Deadline = deadline;
        timer.Tick = Math.Max(TickOf(deadline), _next);
        timer.Wheel = this;
        Count++;
        Place(timer);
    }

    /// <summary>Disarms <paramref name="timer"/>; nothing when it is not armed.</summary>
    public void Cancel(LoopTimer timer)
    {
        if (timer.Wheel is null)
        {
            return;
        }
        Debug.Assert(ReferenceEquals(timer.Wheel, this), "a timer is cancelled in the wheel it is armed in");
        timer.Unlink();
        timer.Wheel = null;
        Count--;
    }

    /// <summary>
    /// How long the loop may wait for events before the next timer is due: -1 when none is armed. Counted from the
    /// last <see cref="Advance"/>, which the loop calls at the end of each batch while timers are armed: the time
    /// since, a few microseconds, is waited too long, never too short.
    /// </summary>
    public int TimeoutMs()
    {
        if (Count == 0)
        {
            return -1;
        }
        var wait = _origin + _earliest * _tickLength - _now;
        if (wait <= 0)
        {
            return 0;
        }
        var frequency = _time.TimestampFrequency;
        // Rounded up: epoll_wait returning a little early would only cost one more wait; late is what a tick allows.
        var ms = wait > frequency * 3600 ? 3_600_000 : (wait * 1000 + frequency - 1) / frequency;
        return (int)ms;
    }

    /// <summary>Fires, inline and in the order of their ticks, the timers whose deadline has passed.</summary>
    public void Advance()
    {
        _now = _time.GetTimestamp();
        var now = TickAt(_now);
        if (now < _next)
        {
            return;
        }
        if (_earliest > now)
        {
            // Nothing to fire nor to move down in between: no tick needs to be looked at.
            _next = now + 1;
            return;
        }
        _next = Math.Max(_next, _earliest);
        while (_next <= now)
        {
            var tick = _next;
            if ((tick & Mask) == 0)
            {
                Cascade(tick);
            }
            _next = tick + 1;
            var slot = _near[(int)(tick & Mask)];
            if (!slot.IsEmptyList)
            {
                Fire(slot);
            }
            if (Count == 0)
            {
                _next = now + 1;
                break;
            }
        }
        _earliest = FindEarliest();
    }

    private void Fire(LoopTimer slot)
    {
        // Taken out of the slot first: a callback may arm a timer 256 ticks ahead, which lands in this very slot.
        slot.MoveAllTo(_due);
        while (!_due.IsEmptyList)
        {
            var timer = _due.Next!;
            Debug.Assert(timer.Tick == _next - 1);
            timer.Unlink();
            timer.Wheel = null;
            Count--;
            _fired++;
            try
            {
                timer.Callback!(timer.State);
            }
            catch (Exception ex)
            {
                OnError?.Invoke(ex);
            }
        }
    }

    // At the first tick of a level-1 slot's span, its timers move down to level 0 (or stay, if due in a later turn).
    private void Cascade(long tick)
    {
        var slot = _far[(int)((tick >> Bits) & Mask)];
        slot.MoveAllTo(_moving);
        while (!_moving.IsEmptyList)
        {
            var timer = _moving.Next!;
            timer.Unlink();
            Place(timer);
        }
    }

    private void Place(LoopTimer timer)
    {
        var tick = timer.Tick;
        if (tick - _next < Slots)
        {
            _near[(int)(tick & Mask)].Append(timer);
            _earliest = Math.Min(_earliest, tick);
            return;
        }
        var index = (int)((tick >> Bits) & Mask);
        _far[index].Append(timer);
        _earliest = Math.Min(_earliest, CascadeTick(index));
    }

    // The next tick at which level-1 slot `index` moves down: the first slot start at or after _next with that index.
    private long CascadeTick(int index)
    {
        var first = (_next + Mask) >> Bits; // the first level-1 span whose start is not yet processed
        return (first + ((index - first) & Mask)) << Bits;
    }

    private long FindEarliest()
    {
        if (Count == 0)
        {
            return long.MaxValue;
        }
        var earliest = long.MaxValue;
        for (var i = 0L; i < Slots; i++)
        {
            if (!_near[(int)((_next + i) & Mask)].IsEmptyList)
            {
                earliest = _next + i;
                break;
            }
        }
        var first = (_next + Mask) >> Bits;
        for (var i = 0L; i < Slots; i++)
        {
            if (!_far[(int)((first + i) & Mask)].IsEmptyList)
            {
                earliest = Math.Min(earliest, (first + i) << Bits);
                break;
            }
        }
        return earliest;
    }

    // The tick whose end `timestamp` falls in or before: a timer of this tick is due once the clock reaches its end.
    private long TickOf(long timestamp)
    {
        var since = timestamp - _origin;
        if (since <= 0)
        {
            return 0;
        }
        return since >= long.MaxValue - _tickLength ? long.MaxValue >> 1 : (since + _tickLength - 1) / _tickLength;
    }

    // The last tick whose end the clock has reached at `timestamp`.
    private long TickAt(long timestamp) => Math.Max(0, timestamp - _origin) / _tickLength;
}
