using System.Globalization;
using System.Net;

namespace Ferry.Upstream;

// The kernel's local port range (ip_local_port_range). Towards one destination IP:port from one source address, each
// connection needs its own local port from it: that is the whole 4-tuple space.
internal readonly record struct EphemeralRange(int Low, int High)
{
    public const string ProcPath = "/proc/sys/net/ipv4/ip_local_port_range";

    // Linux's default (Documentation/networking/ip-sysctl.rst, ip_local_port_range).
    public static EphemeralRange LinuxDefault { get; } = new(32768, 60999);

    public int Size => High - Low + 1;

    // The range in force, or Linux's default where the file is absent (another OS) or unreadable.
    public static EphemeralRange Read(string path = ProcPath)
    {
        try
        {
            return Parse(File.ReadAllText(path)) ?? LinuxDefault;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return LinuxDefault;
        }
    }

    // "32768\t60999\n"
    public static EphemeralRange? Parse(string text)
    {
        var parts = text.Split([' ', '\t', '\n'], StringSplitOptions.RemoveEmptyEntries);
        return parts.Length == 2
            && int.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out var low)
            && int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out var high)
            && low > 0 && high >= low
            ? new EphemeralRange(low, high)
            : null;
    }
}

// One 4-tuple space: a destination address and port, from one source address (null: the kernel chooses).
internal readonly record struct PortSpaceKey(IPAddress? Source, IPEndPoint Remote);

// How full the busiest 4-tuple space of a destination is.
internal readonly record struct PortSpaceUsage(PortSpaceKey? Key, int Open, int RecentlyClosed, int RangeSize)
{
    public int Used => Open + RecentlyClosed;
    public double Utilization => RangeSize == 0 ? 0 : (double)Used / RangeSize;
}

// Local ports a destination's connections take, per 4-tuple space, against the ephemeral range: past it, connects fail
// with EADDRNOTAVAIL. The kernel's TIME_WAIT sockets are invisible through the socket API, so the count is an
// estimate: connections Ferry holds open, plus those it closed or saw closed in the last 60 s (Linux's
// TCP_TIMEWAIT_LEN, include/net/tcp.h). Only the side that closes first holds TIME_WAIT, so connections the destination
// closed are overcounted: the estimate errs towards warning early.
internal sealed class PortSpace
{
    internal static readonly TimeSpan TimeWait = TimeSpan.FromSeconds(60);

    // Warn while a fifth of the range is still free: time to add source addresses or keep-alive before EADDRNOTAVAIL.
    internal const double WarnAt = 0.8;

    // At most one warning per destination per minute: a busy proxy would otherwise log it with every new connection.
    internal static readonly TimeSpan WarnEvery = TimeSpan.FromSeconds(60);

    private sealed class Space
    {
        public int Open;                         // connections open in this space
        public readonly Queue<long> Closed = []; // close timestamps within TimeWait, oldest first
    }

    private readonly TimeProvider _time;
    private readonly Lock _lock = new();
    private readonly Dictionary<PortSpaceKey, Space> _spaces = []; // guarded by _lock
    private long _lastWarning;           // timestamp of the last warning handed out; guarded by _lock
    private bool _warnedOnce;            // guarded by _lock
    private PortSpaceUsage? _warning;    // a warning not yet taken; guarded by _lock
    private volatile bool _warningPending;

    public PortSpace(int rangeSize, TimeProvider time)
    {
        RangeSize = rangeSize;
        _time = time;
    }

    public int RangeSize { get; }

    public void Opened(PortSpaceKey key)
    {
        var now = _time.GetTimestamp();
        lock (_lock)
        {
            if (!_spaces.TryGetValue(key, out var space))
            {
                _spaces[key] = space = new Space();
            }
            space.Open++;
            Prune(space, now);
            var usage = new PortSpaceUsage(key, space.Open, space.Closed.Count, RangeSize);
            if (usage.Utilization >= WarnAt && (!_warnedOnce || _time.GetElapsedTime(_lastWarning, now) >= WarnEvery))
            {
                _warnedOnce = true;
                _lastWarning = now;
                _warning = usage;
                _warningPending = true;
            }
        }
    }

    // Once for every key passed to Opened, when that connection is closed.
    public void Closed(PortSpaceKey key)
    {
        var now = _time.GetTimestamp();
        lock (_lock)
        {
            var space = _spaces[key];
            space.Open--;
            space.Closed.Enqueue(now);
            if (space.Closed.Count > RangeSize)
            {
                // Past the range the estimate is already over 100 %: older entries change nothing.
                space.Closed.Dequeue();
            }
            Prune(space, now);
        }
    }

    public PortSpaceUsage Busiest()
    {
        var now = _time.GetTimestamp();
        var busiest = new PortSpaceUsage(null, 0, 0, RangeSize);
        lock (_lock)
        {
            List<PortSpaceKey>? empty = null;
            foreach (var (key, space) in _spaces)
            {
                Prune(space, now);
                if (space.Open == 0 && space.Closed.Count == 0)
                {
                    (empty ??= []).Add(key);
                }
                else if (space.Open + space.Closed.Count > busiest.Used)
                {
                    busiest = new PortSpaceUsage(key, space.Open, space.Closed.Count, RangeSize);
                }
            }
            foreach (var key in empty ?? [])
            {
                _spaces.Remove(key);
            }
        }
        return busiest;
    }

    // A space that passed WarnAt, at most once per WarnEvery; null otherwise. Cheap enough to ask on every request.
    public PortSpaceUsage? TakeWarning()
    {
        if (!_warningPending)
        {
            return null;
        }
        lock (_lock)
        {
            _warningPending = false;
            var warning = _warning;
            _warning = null;
            return warning;
        }
    }

    private void Prune(Space space, long now)
    {
        while (space.Closed.TryPeek(out var closed) && _time.GetElapsedTime(closed, now) >= TimeWait)
        {
            space.Closed.Dequeue();
        }
    }
}
