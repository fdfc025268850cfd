using Ferry.Model;

namespace Ferry.Forwarding;

// The live ProxyState; swapped atomically when configuration changes (ConfigReloader).
internal sealed class ProxyStateHolder(ProxyState initial)
{
    private ProxyState _current = initial;

    public ProxyState Current => Volatile.Read(ref _current);

    // The state a request runs on from start to end, counted until it calls Leave. Counted before it is checked to be
    // still current: a state swapped out and then seen with no requests can never be taken again, so what only it
    // uses may be disposed (ConfigReloader's drain).
    public ProxyState Acquire()
    {
        while (true)
        {
            var state = Volatile.Read(ref _current);
            state.Enter();
            if (ReferenceEquals(state, Volatile.Read(ref _current)))
            {
                return state;
            }
            state.Leave();
        }
    }

    // Makes `next` current; returns the state it replaced.
    public ProxyState Swap(ProxyState next) => Interlocked.Exchange(ref _current, next);
}
