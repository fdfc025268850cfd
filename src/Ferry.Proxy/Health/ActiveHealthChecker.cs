using System.Buffers;
using System.IO.Pipelines;
using System.Net.Sockets;
using Ferry.Configuration;
using Ferry.Errors;
using Ferry.Http1;
using Ferry.Model;
using Ferry.Upstream;

namespace Ferry.Health;

// Periodic HTTP checks of every destination of a cluster, each on a connection of its own (never a pooled one: a
// check must not take a connection from a request, nor count as one of its keep-alive requests). A check passes when
// a response head with an expected status arrives within the timeout; the connection is closed after it.
internal sealed class ActiveHealthChecker : IAsyncDisposable
{
    private readonly ClusterState _cluster;
    private readonly ActiveHealthConfig _config;
    private readonly TimeProvider _time;
    private readonly CancellationTokenSource _stopping = new();
    private readonly ITimer[] _timers;
    private readonly Task?[] _running;
    private readonly Lock _lock = new();
    private long _checks; // checks completed, passed or not

    public ActiveHealthChecker(ClusterState cluster, TimeProvider time)
    {
        _cluster = cluster;
        _config = cluster.Config.HealthCheck.Active;
        _time = time;
        _timers = new ITimer[cluster.Destinations.Count];
        _running = new Task?[cluster.Destinations.Count];
        for (var i = 0; i < _timers.Length; i++)
        {
            // The first check of each destination falls anywhere in the first interval, so that destinations (and
            // proxies started together) do not all probe at the same instant.
            _timers[i] = time.CreateTimer(static s => ((Slot)s!).Owner.Fire(((Slot)s).Index), new Slot(this, i),
                _config.Interval * Random.Shared.NextDouble(), Timeout.InfiniteTimeSpan);
        }
    }

    public long Checks => Interlocked.Read(ref _checks);

    private sealed record Slot(ActiveHealthChecker Owner, int Index);

    private void Fire(int index)
    {
        lock (_lock)
        {
            if (_stopping.IsCancellationRequested)
            {
                return;
            }
            _running[index] = RunAsync(index);
        }
    }

    private async Task RunAsync(int index)
    {
        var destination = _cluster.Destinations[index];
        var (passed, reason) = await CheckAsync(destination, _stopping.Token);
        if (_stopping.IsCancellationRequested)
        {
            return;
        }
        destination.Health.ReportCheck(passed, reason);
        _timers[index].Change(NextDelay(_config, Random.Shared.NextDouble()), Timeout.InfiniteTimeSpan);
        // Counted last: once a check is counted, its result is in effect and the next one is scheduled.
        Interlocked.Increment(ref _checks);
    }

    // interval × (1 ± jitter), from a uniform sample in [0, 1).
    internal static TimeSpan NextDelay(ActiveHealthConfig config, double sample) =>
        config.Interval * (1 + config.Jitter * (2 * sample - 1));

    // One check: connect, send the request, read the response head. Never throws but for shutdown.
    public async Task<(bool Passed, string Reason)> CheckAsync(DestinationState destination, CancellationToken cancellationToken)
    {
        using var timeout = new CancellationTokenSource(_config.Timeout, _time);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(timeout.Token, cancellationToken);
        Socket? socket = null;
        try
        {
            socket = await Connector.ConnectAsync(destination.EndPoint, _config.Timeout, _time, linked.Token);
            // An https destination is checked over TLS: a certificate problem fails the check as it would a request.
            await using Stream stream = destination.Tls is { } tls
                ? await tls.HandshakeAsync(new NetworkStream(socket, ownsSocket: false), _config.Timeout, _time, linked.Token)
                : new NetworkStream(socket, ownsSocket: false);
            var output = PipeWriter.Create(stream, new StreamPipeWriterOptions(leaveOpen: true));
            RequestHeadWriter.WriteRequestLine(output, _config.Method, _config.Path);
            RequestHeadWriter.WriteHeader(output, "Host", destination.Authority);
            RequestHeadWriter.WriteHeader(output, "User-Agent", "ferry-health-check");
            RequestHeadWriter.WriteHeader(output, "Connection", "close");
            RequestHeadWriter.WriteEnd(output);
            await output.FlushAsync(linked.Token);

            var input = PipeReader.Create(stream, new StreamPipeReaderOptions(leaveOpen: true));
            var parser = new ResponseHeadParser(_cluster.Limits);
            var head = new ResponseHead();
            while (true)
            {
                var read = await input.ReadAsync(linked.Token);
                var reader = new SequenceReader<byte>(read.Buffer);
                var parsed = parser.TryParse(ref reader, head);
                input.AdvanceTo(reader.Position, read.Buffer.End);
                if (parsed && !head.IsInformational)
                {
                    return _config.Expects(head.StatusCode)
                        ? (true, $"status {head.StatusCode}")
                        : (false, $"status {head.StatusCode}, expected {string.Join(", ", _config.ExpectedStatuses)}");
                }
                if (!parsed && read.IsCompleted)
                {
                    return (false, "the connection closed before a response head");
                }
            }
        }
        catch (OperationCanceledException) when (timeout.IsCancellationRequested && !cancellationToken.IsCancellationRequested)
        {
            return (false, $"no response within {_config.Timeout.TotalMilliseconds:0} ms");
        }
        catch (ProxyException ex) when (!cancellationToken.IsCancellationRequested)
        {
            return (false, ex.Details);
        }
        catch (Exception ex) when (ex is IOException or SocketException or Http1Exception && !cancellationToken.IsCancellationRequested)
        {
            return (false, ex.Message);
        }
        finally
        {
            socket?.Dispose();
        }
    }

    public async ValueTask DisposeAsync()
    {
        Task[] running;
        lock (_lock)
        {
            _stopping.Cancel();
            running = _running.OfType<Task>().ToArray();
        }
        foreach (var timer in _timers)
        {
            timer.Dispose();
        }
        try
        {
            await Task.WhenAll(running);
        }
        catch (Exception ex) when (ex is OperationCanceledException or ProxyException)
        {
            // The checks in progress were abandoned: nothing depends on their result any more.
        }
        _stopping.Dispose();
    }
}
