using Ferry.Configuration;
using Ferry.Model;

namespace Ferry.LoadBalancing;

// One way of choosing among the destinations that may take a request. The candidates are never empty and already
// filtered by ClusterBalancer (availability, backups, panic, destinations this request already tried).
internal abstract class LoadBalancingPolicy
{
    // False for policies whose choice must not depend on load (hashing keeps a key on its destination even when that
    // destination's connection limit makes the request wait).
    public virtual bool PrefersFreeCapacity => true;

    public abstract DestinationState Choose(ReadOnlySpan<DestinationState> candidates, string? hashKey);

    public static LoadBalancingPolicy Create(ClusterConfig config, IReadOnlyList<DestinationState> destinations, Random? random = null)
    {
        random ??= Random.Shared;
        return config.LoadBalancingPolicy switch
        {
            LoadBalancingPolicies.LeastRequests => new LeastRequestsPolicy(),
            LoadBalancingPolicies.PowerOfTwoChoices => new PowerOfTwoChoicesPolicy(random),
            LoadBalancingPolicies.Random => new RandomPolicy(random),
            LoadBalancingPolicies.ConsistentHash => new ConsistentHashPolicy(destinations, config.Hash.VirtualNodes),
            _ => new RoundRobinPolicy(),
        };
    }

    // A candidate drawn with probability proportional to its effective weight (slow start included).
    protected static DestinationState WeightedRandom(ReadOnlySpan<DestinationState> candidates, Random random)
    {
        long total = 0;
        foreach (var d in candidates)
        {
            total += d.EffectiveWeight;
        }
        var point = random.NextInt64(total);
        foreach (var d in candidates)
        {
            point -= d.EffectiveWeight;
            if (point < 0)
            {
                return d;
            }
        }
        return candidates[^1];
    }
}

// nginx's smooth weighted round robin (ngx_http_upstream_get_peer): every pick adds each candidate's weight to its
// running weight, takes the largest and subtracts the total from it. With weights 5,1,1 it yields a a b a c a a rather
// than a a a a a b c, so a heavy destination never receives a burst.
internal sealed class RoundRobinPolicy : LoadBalancingPolicy
{
    private readonly Lock _lock = new();

    public override DestinationState Choose(ReadOnlySpan<DestinationState> candidates, string? hashKey)
    {
        lock (_lock)
        {
            DestinationState? best = null;
            long total = 0;
            foreach (var d in candidates)
            {
                var weight = d.EffectiveWeight;
                d.CurrentWeight += weight;
                total += weight;
                if (best is null || d.CurrentWeight > best.CurrentWeight)
                {
                    best = d;
                }
            }
            best!.CurrentWeight -= total;
            return best;
        }
    }
}

// The candidate with the fewest requests in flight per unit of weight (Envoy's and YARP's LeastRequests). Ties go
// round the candidates, so that an idle cluster still spreads its first requests.
internal sealed class LeastRequestsPolicy : LoadBalancingPolicy
{
    private int _next;

    public override DestinationState Choose(ReadOnlySpan<DestinationState> candidates, string? hashKey)
    {
        var start = (int)((uint)Interlocked.Increment(ref _next) % (uint)candidates.Length);
        DestinationState? best = null;
        double bestScore = double.MaxValue;
        for (var i = 0; i < candidates.Length; i++)
        {
            var d = candidates[(start + i) % candidates.Length];
            var score = (d.InFlight + 1.0) / d.EffectiveWeight;
            if (score < bestScore)
            {
                best = d;
                bestScore = score;
            }
        }
        return best!;
    }
}

// Two candidates drawn by weight, the one with fewer requests in flight per unit of weight wins (Mitzenmacher's
// "power of two choices"; YARP's default). Nearly as good as LeastRequests without looking at every destination,
// and it avoids the herd that a stale global minimum attracts.
internal sealed class PowerOfTwoChoicesPolicy(Random random) : LoadBalancingPolicy
{
    public override DestinationState Choose(ReadOnlySpan<DestinationState> candidates, string? hashKey)
    {
        if (candidates.Length == 1)
        {
            return candidates[0];
        }
        var first = WeightedRandom(candidates, random);
        var second = WeightedRandom(candidates, random);
        for (var i = 0; i < 3 && ReferenceEquals(first, second); i++)
        {
            second = WeightedRandom(candidates, random);
        }
        return (second.InFlight + 1.0) / second.EffectiveWeight < (first.InFlight + 1.0) / first.EffectiveWeight ? second : first;
    }
}

internal sealed class RandomPolicy(Random random) : LoadBalancingPolicy
{
    public override DestinationState Choose(ReadOnlySpan<DestinationState> candidates, string? hashKey) => WeightedRandom(candidates, random);
}
