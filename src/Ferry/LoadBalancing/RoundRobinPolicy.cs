using Ferry.Model;

namespace Ferry.LoadBalancing;

// nginx's smooth weighted round robin (ngx_http_upstream_get_peer): every pick adds each candidate's weight to its
// running weight, takes the largest and subtracts the total from it. With weights 5,1,1 it yields a a b a c a a rather
// than a a a a a b c, so a heavy destination never receives a burst.
// Backups are used only when no primary is available; when nothing is available at all, every destination is a
// candidate again (panic), because refusing everyone is worse than trying a destination that may have recovered.
internal sealed class RoundRobinPolicy
{
    private readonly DestinationState[] _primaries;
    private readonly DestinationState[] _backups;
    private readonly Lock _lock = new();

    public RoundRobinPolicy(IReadOnlyList<DestinationState> destinations)
    {
        _primaries = destinations.Where(d => !d.Config.Backup).ToArray();
        _backups = destinations.Where(d => d.Config.Backup).ToArray();
    }

    // Returns null only when every destination is in `tried`.
    public DestinationState? Pick(IReadOnlyCollection<DestinationState>? tried = null, bool panicAllowed = true)
    {
        lock (_lock)
        {
            return PickFrom(_primaries, tried, requireAvailable: true)
                ?? PickFrom(_backups, tried, requireAvailable: true)
                ?? (panicAllowed
                    ? PickFrom(_primaries, tried, requireAvailable: false) ?? PickFrom(_backups, tried, requireAvailable: false)
                    : null);
        }
    }

    private static DestinationState? PickFrom(DestinationState[] set, IReadOnlyCollection<DestinationState>? tried, bool requireAvailable)
    {
        DestinationState? best = null;
        long total = 0;
        foreach (var d in set)
        {
            if ((requireAvailable && !d.IsAvailable) || (tried is not null && tried.Contains(d)))
            {
                continue;
            }
            d.CurrentWeight += d.Config.Weight;
            total += d.Config.Weight;
            if (best is null || d.CurrentWeight > best.CurrentWeight)
            {
                best = d;
            }
        }
        if (best is not null)
        {
            best.CurrentWeight -= total;
        }
        return best;
    }
}
