using Ferry.Model;

namespace Ferry.LoadBalancing;

// A hash ring with virtual nodes (Karger et al.; Ketama, nginx's `hash $key consistent`): each destination owns
// Weight × VirtualNodes points, placed by hashing its id, and a key goes to the first point at or after its own hash
// whose destination is a candidate. Adding or removing one of N destinations moves only the keys of the arcs it
// gains or loses, about 1/N of them; a destination out of rotation hands its keys to the next points on the ring and
// gets them back when it returns. The ring is built once: destinations only change with a new configuration.
internal sealed class ConsistentHashPolicy : LoadBalancingPolicy
{
    private readonly ulong[] _points;              // sorted hashes
    private readonly DestinationState[] _owners;   // owner of the point at the same index

    public ConsistentHashPolicy(IReadOnlyList<DestinationState> destinations, int virtualNodes)
    {
        var ring = new List<(ulong Point, DestinationState Owner)>();
        foreach (var d in destinations)
        {
            for (var i = 0; i < d.Config.Weight * virtualNodes; i++)
            {
                ring.Add((Hash($"{d.Id}#{i}"), d));
            }
        }
        // Ties (a 64-bit collision) are ordered by id so that every Ferry instance builds the same ring.
        ring.Sort((a, b) => a.Point != b.Point ? a.Point.CompareTo(b.Point) : string.CompareOrdinal(a.Owner.Id, b.Owner.Id));
        _points = ring.Select(r => r.Point).ToArray();
        _owners = ring.Select(r => r.Owner).ToArray();
    }

    // Keeping a key on its destination is the point of hashing; a full destination makes the request queue instead.
    public override bool PrefersFreeCapacity => false;

    public override DestinationState Choose(ReadOnlySpan<DestinationState> candidates, string? hashKey)
    {
        var start = Array.BinarySearch(_points, Hash(hashKey ?? ""));
        if (start < 0)
        {
            start = ~start;
        }
        for (var i = 0; i < _points.Length; i++)
        {
            var owner = _owners[(start + i) % _points.Length];
            foreach (var c in candidates)
            {
                if (ReferenceEquals(c, owner))
                {
                    return owner;
                }
            }
        }
        // Every candidate owns points, so the walk always finds one; this covers a candidate from another ring.
        return candidates[0];
    }

    // FNV-1a over the UTF-16 code units, then MurmurHash3's 64-bit finalizer: FNV alone clusters the hashes of
    // strings that differ only in their last characters ("a#1", "a#2"), which would bunch a destination's points.
    internal static ulong Hash(string key)
    {
        var h = 14695981039346656037UL;
        foreach (var c in key)
        {
            h = (h ^ c) * 1099511628211UL;
        }
        h ^= h >> 33;
        h *= 0xff51afd7ed558ccdUL;
        h ^= h >> 33;
        h *= 0xc4ceb9fe1a85ec53UL;
        h ^= h >> 33;
        return h;
    }
}
