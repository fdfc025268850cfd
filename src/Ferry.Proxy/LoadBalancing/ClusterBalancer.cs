using Ferry.Model;

namespace Ferry.LoadBalancing;

// A destination for one attempt (null: nobody may take it), and whether every destination was out of rotation.
internal readonly record struct Pick(DestinationState? Destination, bool Panic);

// Decides who may take a request, then lets the policy choose among them:
// 1. primaries in rotation; 2. if none, backups in rotation; 3. if none and panic is allowed, every primary, then every
// backup, because refusing everyone is worse than trying a destination that may have recovered. Destinations the
// request already tried are never candidates. Among the candidates, those below their connection limit are preferred
// (unless the policy hashes), so a burst spills over to a destination with room before anyone queues.
internal sealed class ClusterBalancer
{
    private readonly DestinationState[] _primaries;
    private readonly DestinationState[] _backups;

    [ThreadStatic]
    private static DestinationState[]? t_buffer;

    public ClusterBalancer(IReadOnlyList<DestinationState> destinations, LoadBalancingPolicy policy)
    {
        _primaries = destinations.Where(d => !d.Config.Backup).ToArray();
        _backups = destinations.Where(d => d.Config.Backup).ToArray();
        Policy = policy;
    }

    public LoadBalancingPolicy Policy { get; }

    // Destination null: every destination was tried, or all are out of rotation and panic is not allowed.
    public Pick Pick(IReadOnlyCollection<DestinationState>? tried, string? hashKey, bool panicAllowed)
    {
        var buffer = t_buffer ??= new DestinationState[Math.Max(8, _primaries.Length + _backups.Length)];
        if (buffer.Length < _primaries.Length + _backups.Length)
        {
            buffer = t_buffer = new DestinationState[_primaries.Length + _backups.Length];
        }
        try
        {
            var count = Collect(_primaries, tried, requireAvailable: true, buffer);
            if (count == 0)
            {
                count = Collect(_backups, tried, requireAvailable: true, buffer);
            }
            var panic = count == 0;
            if (panic && panicAllowed)
            {
                count = Collect(_primaries, tried, requireAvailable: false, buffer);
                if (count == 0)
                {
                    count = Collect(_backups, tried, requireAvailable: false, buffer);
                }
            }
            if (count == 0)
            {
                return new Pick(null, panic);
            }
            var candidates = buffer.AsSpan(0, count);
            if (Policy.PrefersFreeCapacity && count > 1)
            {
                candidates = PreferFreeCapacity(candidates);
            }
            return new Pick(Policy.Choose(candidates, hashKey), panic);
        }
        finally
        {
            Array.Clear(buffer);
        }
    }

    private static int Collect(DestinationState[] set, IReadOnlyCollection<DestinationState>? tried, bool requireAvailable, DestinationState[] into)
    {
        var count = 0;
        foreach (var d in set)
        {
            if ((!requireAvailable || d.IsCandidate) && (tried is null || !tried.Contains(d)))
            {
                into[count++] = d;
            }
        }
        return count;
    }

    // Moves the candidates with a free connection slot to the front; all of them when none has one.
    private static Span<DestinationState> PreferFreeCapacity(Span<DestinationState> candidates)
    {
        var free = 0;
        for (var i = 0; i < candidates.Length; i++)
        {
            if (candidates[i].Pool.HasFreeSlot)
            {
                (candidates[free], candidates[i]) = (candidates[i], candidates[free]);
                free++;
            }
        }
        return free == 0 ? candidates : candidates[..free];
    }
}
