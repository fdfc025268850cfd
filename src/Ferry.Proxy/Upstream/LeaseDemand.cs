namespace Ferry.Upstream;

// How many connections a destination's recent traffic needs: the peak number of requests holding or opening one of its
// connections at once, over the last one to two windows. A fixed idle cap closes, at every peak above it, connections
// that the next moment's traffic opens again (3,000 clients, MaxIdle 1,024: 7,165 connections opened in 10 s). Sized by
// the recent peak instead, the pool closes nothing while the traffic continues; what the traffic stopped needing ages
// out: in a LIFO stack the connection at the bottom is idle since the stack was last that shallow, so a connection idle
// for a whole window at the bottom of a stack deeper than MaxIdle was not needed by that window's peak.
internal sealed class LeaseDemand(TimeProvider time)
{
    // Long enough to span the pauses of bursty traffic; short next to the 60 s of a closed connection's TIME_WAIT, which
    // holds a local port longer than an idle connection kept for a window does.
    public static readonly TimeSpan Window = TimeSpan.FromSeconds(30);

    private int _inFlight;  // requests holding or opening a connection now
    private int _current;   // peak of _inFlight since _windowStart
    private int _previous;  // peak of the window before
    private long _windowStart = time.GetTimestamp();

    public int InFlight => Volatile.Read(ref _inFlight);

    // The most requests that held or opened a connection at once, over the last one to two windows.
    public int RecentPeak => Math.Max(Volatile.Read(ref _previous), Volatile.Read(ref _current));

    public void Begin()
    {
        var now = Interlocked.Increment(ref _inFlight);
        int seen;
        while (now > (seen = Volatile.Read(ref _current)) && Interlocked.CompareExchange(ref _current, now, seen) != seen)
        {
        }
    }

    public void End() => Interlocked.Decrement(ref _inFlight);

    // Called periodically (the pool's scavenger): a window that has passed becomes the previous one.
    public void Tick()
    {
        var now = time.GetTimestamp();
        if (time.GetElapsedTime(Volatile.Read(ref _windowStart), now) >= Window)
        {
            Volatile.Write(ref _windowStart, now);
            Volatile.Write(ref _previous, Interlocked.Exchange(ref _current, Volatile.Read(ref _inFlight)));
        }
    }

    // Idle connections a release may keep: MaxIdle, or the recent peak when it is higher; 0 keeps none (no pooling).
    // Only a connection count far above the recent need reaches it: it bounds memory and ports, it does not shape the pool.
    public int IdleCap(int maxIdle) => maxIdle == 0 ? 0 : Math.Max(maxIdle, RecentPeak);

    // Whether the coldest of `idleCount` idle connections, idle for `coldestIdle`, is surplus that should close.
    public static bool IsSurplus(int idleCount, int maxIdle, TimeSpan coldestIdle) => idleCount > maxIdle && coldestIdle >= Window;
}
