using System.Net;
using System.Net.Sockets;
using Ferry.Errors;

namespace Ferry.Upstream;

// The addresses of a destination given by host name, resolved again every RefreshInterval. .NET's Dns API returns no
// TTL, so the interval stands in for one. New connections take the addresses in turn; when an address disappears from
// the answer, `Changed` lets the pool retire the idle connections to it, while connections to addresses that remain
// are untouched. A failed or empty refresh keeps the previous answer: a DNS hiccup must not empty a destination.
internal sealed class DestinationResolver : IDisposable
{
    public delegate Task<IPAddress[]> Resolve(string host, CancellationToken cancellationToken);

    public static Resolve Default { get; } = static (host, ct) => Dns.GetHostAddressesAsync(host, ct);

    private readonly Resolve _resolve;
    private readonly TimeSpan _timeout;
    private readonly ITimer _timer;
    private readonly CancellationTokenSource _disposed = new();
    private IPEndPoint[] _endPoints = [];  // the latest non-empty answer; replaced whole, never mutated
    private Task? _resolving;              // the resolution in progress, if any; guarded by _lock
    private readonly Lock _lock = new();
    private Exception? _lastError;         // why the latest resolution failed; null after a success; guarded by _lock
    private long _completed;               // resolutions finished, answered or failed; guarded by _lock
    private int _next;                     // round-robin position in _endPoints

    public DestinationResolver(string host, int port, TimeSpan refreshInterval, TimeSpan timeout, Resolve resolve, TimeProvider time)
    {
        Host = host;
        Port = port;
        _resolve = resolve;
        _timeout = timeout;
        _timer = time.CreateTimer(static s => ((DestinationResolver)s!).Refresh(), this, refreshInterval, refreshInterval);
        Refresh();
    }

    public string Host { get; }
    public int Port { get; }

    // Called after an answer that dropped at least one address.
    public Action? Changed { get; set; }

    public IReadOnlyList<IPEndPoint> EndPoints => Volatile.Read(ref _endPoints);

    public long Resolutions { get { lock (_lock) { return _completed; } } }

    // Why the latest resolution failed (the previous answer is still in use); null when it succeeded.
    public string? Error { get { lock (_lock) { return _lastError?.Message; } } }

    public bool Contains(IPAddress address) => Array.Exists(Volatile.Read(ref _endPoints), e => e.Address.Equals(address));

    // The addresses for one connect, the next in turn first; the others follow so that a connect can fall back to them
    // as the OS does for a host name. Waits for the first answer when there is none yet.
    public async ValueTask<IPEndPoint[]> EndPointsForConnectAsync(CancellationToken cancellationToken)
    {
        var endPoints = Volatile.Read(ref _endPoints);
        if (endPoints.Length == 0)
        {
            Task resolving;
            lock (_lock)
            {
                resolving = _resolving ??= ResolveAsync();
            }
            await resolving.WaitAsync(cancellationToken);
            endPoints = Volatile.Read(ref _endPoints);
            if (endPoints.Length == 0)
            {
                throw new ProxyException(ProxyError.DnsError, $"{Host} did not resolve: {Error ?? "no address"}");
            }
        }
        var first = (int)((uint)Interlocked.Increment(ref _next) % (uint)endPoints.Length);
        return [.. endPoints[first..], .. endPoints[..first]];
    }

    private void Refresh()
    {
        lock (_lock)
        {
            _resolving ??= ResolveAsync();
        }
    }

    private async Task ResolveAsync()
    {
        // Returns to the caller first, so that _resolving is set before it is cleared below.
        await Task.Yield();
        IPAddress[] addresses = [];
        Exception? error = null;
        try
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(_disposed.Token);
            timeout.CancelAfter(_timeout);
            addresses = await _resolve(Host, timeout.Token);
        }
        catch (Exception ex)
        {
            // Whatever the resolver threw, the previous answer stays; a connect with none reports this error.
            error = ex;
        }
        if (error is null && addresses.Length == 0)
        {
            error = new SocketException((int)SocketError.NoData);
        }
        IPEndPoint[]? previous = null;
        IPEndPoint[] endPoints = [];
        lock (_lock)
        {
            _resolving = null;
            if (error is null)
            {
                endPoints = addresses.Distinct().Select(a => new IPEndPoint(a, Port)).ToArray();
                previous = Interlocked.Exchange(ref _endPoints, endPoints);
            }
            _lastError = error;
            _completed++;
        }
        if (previous is not null && previous.Any(p => !Array.Exists(endPoints, e => e.Equals(p))))
        {
            Changed?.Invoke();
        }
    }

    public void Dispose()
    {
        _timer.Dispose();
        _disposed.Cancel();
    }
}
