using System.Net;
using System.Net.Sockets;
using Ferry.Http1;

namespace Ferry.Probe;

/// <summary>What to probe and how far to search.</summary>
internal sealed record ProbeConfig(Uri Target, TimeSpan MaxIdle, int MaxRequests, TimeSpan Timeout)
{
    /// <summary>Kestrel's KeepAliveTimeout default (130 s) is the longest of the common server defaults
    /// (nginx 75 s, IIS 120 s, Tomcat 60 s, Node 5 s, Apache 5 s, gunicorn 2 s), so a search up to it finds all of them.</summary>
    public static readonly TimeSpan DefaultMaxIdle = TimeSpan.FromSeconds(130);

    /// <summary>nginx's keepalive_requests default (1000 since 1.19.10) is the largest common per-connection limit.</summary>
    public const int DefaultMaxRequests = 1000;

    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromSeconds(180);

    /// <summary>Bound on connecting and on each response. A backend slower than this is not one whose keep-alive
    /// behaviour can be measured to the 100 ms.</summary>
    public static readonly TimeSpan ExchangeTimeout = TimeSpan.FromSeconds(10);
}

/// <summary>
/// Measures a backend's keep-alive behaviour from the outside, over raw connections: the protocol it answers, what it
/// announces, its idle timeout (seen the moment it closes an idle connection, or bracketed by reuse attempts when it
/// never closes by itself), its request limit per connection, and how it ends connections (FIN or RST).
/// </summary>
internal sealed class BackendProber(ProbeConfig config, TimeProvider time, Action<string>? progress = null)
{
    // Idle connections watched until they close or the search limit passes, besides the reuse ladder, their idle
    // periods starting 49 ms apart over two seconds. A server that looks for expired idle connections only now and
    // then (Tomcat's NIO poller, once a second) closes each at its first look after the timeout, up to a period late;
    // the watcher whose idle period began just before a look reads the timeout itself. Started together, all watchers
    // shared one phase of that period, and Tomcat's 20 s read as anything from 20.0 to 21.0 s. Two seconds at 49 ms
    // sample every phase of a one-second period twice, 24 ms apart, so timers that start a few watchers late and
    // together on a busy machine still leave no wide gap.
    private const int Watchers = 41;
    private static readonly TimeSpan WatcherSpacing = TimeSpan.FromMilliseconds(49);

    // The reuse ladder starts at 250 ms and doubles: a server closing sooner is not keeping connections alive.
    private static readonly TimeSpan FirstReuse = TimeSpan.FromMilliseconds(250);

    // Points tried between the last idle time that worked and the first that failed, in the second round.
    private const int RefinePoints = 8;

    private readonly string _path = string.IsNullOrEmpty(config.Target.PathAndQuery) ? "/" : config.Target.PathAndQuery;
    private IPEndPoint? _endPoint;

    private sealed record IdleOutcome(TimeSpan? ReuseAt, TimeSpan? ClosedAfter, CloseKind Kind, bool? ReuseSucceeded);

    public async Task<ProbeReport> RunAsync(CancellationToken cancellationToken)
    {
        long started = time.GetTimestamp();
        using var deadline = new CancellationTokenSource(config.Timeout, time);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, deadline.Token);
        var ct = linked.Token;
        try
        {
            _endPoint = await ResolveAsync(ct);
            Report($"connecting to {_endPoint}");
            using (var first = await OpenAsync(ct))
            {
                // Connectivity and HTTP-ness are checked before anything runs in parallel, so that errors are clear.
            }

            Report("HTTP/1.1 and HTTP/1.0 requests");
            var http11 = await AskAsync(1, ct);
            var http10 = await TryAskAsync(0, ct);
            var keepsAlive = http11.KeepAlivePermitted;

            IdleMethod idleMethod = IdleMethod.NotApplicable;
            double? idle = null, idleUpper = null;
            CloseKind idleClose = CloseKind.None;
            int? maxRequests = 1;
            LimitEnd limitEnd = LimitEnd.NotApplicable;
            CloseKind limitClose = CloseKind.None;
            if (keepsAlive)
            {
                var idleTask = MeasureIdleAsync(ct);
                var limitTask = CountRequestsAsync(ct);
                (idleMethod, idle, idleUpper, idleClose) = await idleTask;
                (maxRequests, limitEnd, limitClose) = await limitTask;
            }

            var announces = new Announcements(
                http11.KeepAliveTimeoutSeconds >= 0 ? http11.KeepAliveTimeoutSeconds : null,
                http11.KeepAliveMax >= 0 ? http11.KeepAliveMax : null,
                limitEnd switch { LimitEnd.Announced => true, LimitEnd.Silent => false, _ => null });
            var recommendations = ProbeRecommendations.For(config.Target, keepsAlive, idle, idleMethod, idleClose, maxRequests, limitEnd, announces);
            return new ProbeReport(
                config.Target.ToString(),
                http11.Server,
                Answer("HTTP/1.1", http11),
                Answer("HTTP/1.0", http10),
                keepsAlive,
                announces,
                idle,
                idleUpper,
                idleMethod,
                idleClose,
                maxRequests,
                limitEnd,
                limitClose,
                config.MaxIdle.TotalSeconds,
                config.MaxRequests,
                Math.Round(time.GetElapsedTime(started).TotalSeconds, 1),
                recommendations);
        }
        catch (OperationCanceledException) when (deadline.IsCancellationRequested && !cancellationToken.IsCancellationRequested)
        {
            throw new ProbeException(ProbeFailure.Timeout, $"the probe did not finish within {config.Timeout.TotalSeconds:0} s (--timeout)");
        }
    }

    private static ProtocolAnswer Answer(string request, ProbeResponse? response) => response is null
        ? new ProtocolAnswer(request, null, null, false, null, null)
        : new ProtocolAnswer(request, response.MinorVersion == 0 ? "HTTP/1.0" : "HTTP/1.1", response.StatusCode,
            response.KeepAlivePermitted, response.Connection, response.KeepAlive);

    private void Report(string status) => progress?.Invoke(status);

    private async Task<IPEndPoint> ResolveAsync(CancellationToken ct)
    {
        string host = config.Target.HostNameType == UriHostNameType.IPv6 ? config.Target.DnsSafeHost : config.Target.IdnHost;
        if (IPAddress.TryParse(host, out var literal))
        {
            return new IPEndPoint(literal, config.Target.Port);
        }
        IPAddress[] addresses;
        try
        {
            addresses = await Dns.GetHostAddressesAsync(host, ct);
        }
        catch (SocketException e)
        {
            throw new ProbeException(ProbeFailure.Dns, $"cannot resolve {host}: {e.Message}", e);
        }
        // IPv4 first: a name with both families is most often served on IPv4, and one address is enough to measure.
        var address = addresses.OrderBy(a => a.AddressFamily == AddressFamily.InterNetwork ? 0 : 1).FirstOrDefault()
                      ?? throw new ProbeException(ProbeFailure.Dns, $"{host} has no address");
        return new IPEndPoint(address, config.Target.Port);
    }

    private async Task<ProbeConnection> OpenAsync(CancellationToken ct)
    {
        using var timeout = new CancellationTokenSource(ProbeConfig.ExchangeTimeout, time);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(ct, timeout.Token);
        try
        {
            return await ProbeConnection.ConnectAsync(_endPoint!, time, linked.Token);
        }
        catch (OperationCanceledException) when (timeout.IsCancellationRequested && !ct.IsCancellationRequested)
        {
            throw new ProbeException(ProbeFailure.Timeout,
                $"connecting to {_endPoint} timed out after {ProbeConfig.ExchangeTimeout.TotalSeconds:0} s (SYN unanswered: firewall, or a full listen backlog)");
        }
        catch (SocketException e)
        {
            var failure = e.SocketErrorCode is SocketError.ConnectionRefused or SocketError.ConnectionReset
                ? ProbeFailure.Refused
                : ProbeFailure.Unreachable;
            throw new ProbeException(failure, $"cannot connect to {_endPoint}: {e.Message}", e);
        }
    }

    /// <summary>One request on a fresh connection; anything but an HTTP response is fatal.</summary>
    private async Task<ProbeResponse> AskAsync(int minorVersion, CancellationToken ct)
    {
        using var connection = await OpenAsync(ct);
        return await ExchangeAsync(connection, minorVersion, ct)
               ?? throw new ProbeException(ProbeFailure.NotHttp, $"{_endPoint} closed the connection ({connection.Closed}) without answering an HTTP/1.{minorVersion} request");
    }

    /// <summary>HTTP/1.0 is informative only: a backend that refuses it can still be measured.</summary>
    private async Task<ProbeResponse?> TryAskAsync(int minorVersion, CancellationToken ct)
    {
        try
        {
            return await AskAsync(minorVersion, ct);
        }
        catch (ProbeException e) when (e.Failure is ProbeFailure.NotHttp or ProbeFailure.Timeout && !ct.IsCancellationRequested)
        {
            return null;
        }
    }

    /// <summary>Sends a GET and reads the response; null when the connection ended before any response byte.</summary>
    private async Task<ProbeResponse?> ExchangeAsync(ProbeConnection connection, int minorVersion, CancellationToken ct)
    {
        using var timeout = new CancellationTokenSource(ProbeConfig.ExchangeTimeout, time);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(ct, timeout.Token);
        try
        {
            await connection.SendAsync("GET", _path, config.Target.Authority, minorVersion, linked.Token);
        }
        catch (SocketException)
        {
            // The peer is gone already (an RST answered an earlier segment); the read below says how it ended.
        }
        try
        {
            return await connection.ReadResponseAsync(headRequest: false, linked.Token);
        }
        catch (Http1Exception e)
        {
            throw new ProbeException(ProbeFailure.NotHttp, $"{_endPoint} did not answer with HTTP/1.x: {e.Message}", e);
        }
        catch (IOException e)
        {
            throw new ProbeException(ProbeFailure.NotHttp, $"{_endPoint} ended the connection inside a response: {e.Message}", e);
        }
        catch (OperationCanceledException) when (timeout.IsCancellationRequested && !ct.IsCancellationRequested)
        {
            if (connection.HasUnconsumedBytes)
            {
                throw new ProbeException(ProbeFailure.NotHttp, $"{_endPoint} sent bytes that never formed an HTTP/1.x response head");
            }
            throw new ProbeException(ProbeFailure.Timeout, $"{_endPoint} sent no response within {ProbeConfig.ExchangeTimeout.TotalSeconds:0} s");
        }
    }

    private async Task<(IdleMethod Method, double? Seconds, double? Upper, CloseKind Kind)> MeasureIdleAsync(CancellationToken ct)
    {
        var ladder = new List<(TimeSpan? ReuseAt, TimeSpan StartAfter)>();
        for (var t = FirstReuse; t < config.MaxIdle; t *= 2)
        {
            ladder.Add((t, TimeSpan.Zero));
        }
        for (int i = 0; i < Watchers; i++)
        {
            ladder.Add((null, WatcherSpacing * i));
        }
        Report($"idle timeout: {ladder.Count} idle connections, watching up to {config.MaxIdle.TotalSeconds:0} s");
        var outcomes = await Task.WhenAll(ladder.Select(l => WatchIdleAsync(l.ReuseAt, ct, l.StartAfter)));

        var closes = outcomes.Where(o => o.ClosedAfter is not null).OrderBy(o => o.ClosedAfter).ToList();
        if (closes.Count > 0)
        {
            // The earliest close bounds what is safe; the latest shows how precise the server's timer is.
            return (IdleMethod.CloseObserved, Seconds(closes[0].ClosedAfter!.Value), Seconds(closes[^1].ClosedAfter!.Value), closes[0].Kind);
        }

        var (lastOk, firstFail, failKind) = Bracket(outcomes);
        if (firstFail is null)
        {
            return (IdleMethod.NotReached, null, null, CloseKind.None);
        }

        if (firstFail.Value - lastOk > TimeSpan.FromMilliseconds(200))
        {
            var step = (firstFail.Value - lastOk) / (RefinePoints + 1);
            Report($"idle timeout: reuse failed after {Seconds(firstFail.Value)} s, refining from {Seconds(lastOk)} s");
            var refined = await Task.WhenAll(Enumerable.Range(1, RefinePoints).Select(i => WatchIdleAsync(lastOk + (step * i), ct)));
            var (refinedOk, refinedFail, refinedKind) = Bracket(refined);
            lastOk = refinedOk > lastOk ? refinedOk : lastOk;
            if (refinedFail is { } f && f < firstFail)
            {
                (firstFail, failKind) = (f, refinedKind);
            }
        }
        return (IdleMethod.ReuseFailed, Seconds(lastOk), Seconds(firstFail.Value), failKind);
    }

    private static (TimeSpan LastOk, TimeSpan? FirstFail, CloseKind Kind) Bracket(IEnumerable<IdleOutcome> outcomes)
    {
        var reused = outcomes.Where(o => o.ReuseAt is not null && o.ReuseSucceeded is not null).ToList();
        var failed = reused.Where(o => o.ReuseSucceeded == false).OrderBy(o => o.ReuseAt).FirstOrDefault();
        var lastOk = reused.Where(o => o.ReuseSucceeded == true && (failed is null || o.ReuseAt < failed.ReuseAt))
            .Select(o => o.ReuseAt!.Value).DefaultIfEmpty(TimeSpan.Zero).Max();
        return (lastOk, failed?.ReuseAt, failed?.Kind ?? CloseKind.None);
    }

    private static double Seconds(TimeSpan value) => Math.Round(value.TotalSeconds, 2);

    /// <summary>One connection: a request, then idle with a pending read until the peer closes it, or until
    /// <paramref name="reuseAt"/> (then one more request tells whether it still works), or the search limit.
    /// The idle time runs from the moment the response's last byte was read.</summary>
    private async Task<IdleOutcome> WatchIdleAsync(TimeSpan? reuseAt, CancellationToken ct, TimeSpan startAfter = default)
    {
        if (startAfter > TimeSpan.Zero)
        {
            await Task.Delay(startAfter, time, ct);
        }
        using var connection = await OpenAsync(ct);
        var first = await ExchangeAsync(connection, 1, ct);
        if (first is null || !first.KeepAlivePermitted)
        {
            return new IdleOutcome(reuseAt, null, connection.Closed, null);
        }

        using var idle = new CancellationTokenSource(reuseAt ?? config.MaxIdle, time);
        using var idleOrStop = CancellationTokenSource.CreateLinkedTokenSource(ct, idle.Token);
        try
        {
            var kind = await connection.WaitForCloseAsync(idleOrStop.Token);
            if (kind != CloseKind.None)
            {
                var after = time.GetElapsedTime(first.CompletedAt, connection.ClosedAt);
                Report($"idle timeout: a connection was closed ({kind}) after {Seconds(after)} s idle");
                return new IdleOutcome(reuseAt, after, kind, null);
            }
            // Bytes nobody asked for: the connection cannot be trusted for a reuse test.
            return new IdleOutcome(reuseAt, null, CloseKind.None, null);
        }
        catch (OperationCanceledException) when (idle.IsCancellationRequested && !ct.IsCancellationRequested)
        {
            // Still open after the wait.
        }

        if (reuseAt is null)
        {
            return new IdleOutcome(null, null, CloseKind.None, null);
        }
        // The idle time actually reached, not the one planned: a late timer on a busy machine must not make a
        // reuse after 900 ms count as one after 500 ms.
        var idleAtReuse = time.GetElapsedTime(first.CompletedAt);
        try
        {
            var again = await ExchangeAsync(connection, 1, ct);
            return new IdleOutcome(idleAtReuse, null, connection.Closed, again is not null);
        }
        catch (ProbeException e) when (e.Failure is ProbeFailure.Timeout or ProbeFailure.NotHttp && !ct.IsCancellationRequested)
        {
            // A connection dropped without a FIN or RST (a NAT or firewall forgot it) swallows the request; one
            // that ends inside the response failed all the same.
            return new IdleOutcome(idleAtReuse, null, connection.Closed, false);
        }
    }

    /// <summary>Requests back to back on one connection until it ends or the bound is reached.</summary>
    private async Task<(int? Max, LimitEnd End, CloseKind Kind)> CountRequestsAsync(CancellationToken ct)
    {
        using var connection = await OpenAsync(ct);
        for (int i = 1; i <= config.MaxRequests; i++)
        {
            var response = await ExchangeAsync(connection, 1, ct);
            if (response is null)
            {
                Report($"requests per connection: closed silently after {i - 1}");
                return (i - 1, LimitEnd.Silent, connection.Closed);
            }
            if (!response.KeepAlivePermitted)
            {
                using var wait = new CancellationTokenSource(ProbeConfig.ExchangeTimeout, time);
                using var waitOrStop = CancellationTokenSource.CreateLinkedTokenSource(ct, wait.Token);
                var kind = CloseKind.None;
                try
                {
                    kind = await connection.WaitForCloseAsync(waitOrStop.Token);
                }
                catch (OperationCanceledException) when (wait.IsCancellationRequested && !ct.IsCancellationRequested)
                {
                    // It announced the close but left the connection open; our side ends it.
                }
                Report($"requests per connection: {i}, the last one announced");
                return (i, LimitEnd.Announced, kind);
            }
            if (i % 100 == 0)
            {
                Report($"requests per connection: {i} so far");
            }
        }
        return (null, LimitEnd.NotReached, CloseKind.None);
    }
}
