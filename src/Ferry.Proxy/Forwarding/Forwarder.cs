using System.Diagnostics;
using System.Globalization;
using System.Threading.RateLimiting;
using Ferry.Configuration;
using Ferry.Errors;
using Ferry.Hosting;
using Ferry.LoadBalancing;
using Ferry.Metrics;
using Ferry.Model;
using Ferry.RateLimiting;
using Ferry.Routing;
using Ferry.Upstream;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.WebUtilities;

namespace Ferry.Forwarding;

// The request path of docs/architecture.md ("The request path"). Each numbered step below is one stage of it.
internal sealed partial class Forwarder(
    ProxyStateHolder state, TimeProvider time, RequestTelemetry telemetry, FerryTracing tracing, ILogger<Forwarder> logger)
{
    public Task InvokeAsync(HttpContext context) => InvokeAsync(context, context.Features.Get<ListenerConnectionFeature>());

    // `connection`: the request's ListenerConnectionFeature, looked up once by the caller and used for the whole request.
    public async Task InvokeAsync(HttpContext context, ListenerConnectionFeature? connection)
    {
        var request = context.Request;
        RawConnectionHeader.Restore(request.Headers);
        var requestFeature = context.Features.Get<IHttpRequestFeature>();
        var record = new RequestRecord
        {
            StartTime = time.GetUtcNow(),
            StartTimestamp = time.GetTimestamp(),
            Method = request.Method,
            Target = requestFeature?.RawTarget ?? request.Path.Value ?? "/",
            Protocol = request.Protocol,
            ClientAddress = ClientAddress.Resolve(context, connection)?.ToString(),
            Host = request.Host.Value,
            // Looked up on HTTPS listeners only: plain ones pay no feature lookup for it.
            ClientTls = connection?.Listener.Tls is null ? null : TlsVersion(context),
        };
        BufferedBody? body = null;
        RateLimitLease? permit = null; // a Concurrency policy's permit is held until the response ends
        RouteState? route = null; // its response header rules apply to Ferry's own error responses
        var span = tracing.StartRequest(request);
        // The request runs on this state to its end, whatever reload happens meanwhile; released in the finally below.
        var proxy = state.Acquire();
        try
        {
            // 0. A request that cannot be written as HTTP/1.1 is the client's error, whatever the route.
            if (RequestCheck.Check(context) is { } invalid)
            {
                await FailAsync(context, connection, proxy, record, invalid, null);
                return;
            }
            if (connection?.Listener.RedirectToHttps is { } redirect)
            {
                if (HttpsRedirect.Location(context, redirect) is not { } location)
                {
                    await FailAsync(context, connection, proxy, record, new ProxyException(ProxyError.InvalidHost,
                        "the Host is not a host name or IP address with an optional port; no redirect is built from it"), null);
                    return;
                }
                HttpsRedirect.Write(context.Response, location);
                return;
            }

            // 1. Routing: host + path → route → cluster, on the very path the destination will receive.
            if (requestFeature is not null)
            {
                if (!RequestPath.TryResolve(record.Target, connection?.Listener.AmbiguousPaths ?? AmbiguousPaths.Reject,
                    out var target, out var changedPath, out var problem))
                {
                    await FailAsync(context, connection, proxy, record, new ProxyException(ProxyError.AmbiguousPath, problem!), null);
                    return;
                }
                if (changedPath is not null)
                {
                    // From here on the request is the normalized one: the router, PathRemovePrefix and the request
                    // line written upstream all read it.
                    requestFeature.RawTarget = target;
                    request.Path = new PathString(changedPath);
                }
            }
            route = proxy.Routes.Match(request.Method, request.Host.Value ?? "", request.Path.Value ?? "/");
            if (route is null)
            {
                await FailAsync(context, connection, proxy, record, new ProxyException(ProxyError.NoRoute, "no route matches the request"), null);
                return;
            }
            var cluster = route.Cluster;
            record.RouteId = route.Config.RouteId;
            record.ClusterId = cluster.Id;

            // A body over the route's limit is refused before anything is sent when its length is announced; one of
            // unknown length is held to the same limit by Kestrel while it streams (Exchange classifies the abort).
            var maxBody = route.Config.MaxRequestBodySize;
            if (maxBody > 0 && request.ContentLength > maxBody)
            {
                await FailAsync(context, connection, proxy, record, new ProxyException(ProxyError.RequestBodyTooLarge,
                    $"Content-Length {request.ContentLength} is over the route's MaxRequestBodySize ({maxBody} bytes)"), null, route.Config.Transforms.ResponseHeaders);
                return;
            }
            if (context.Features.Get<IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false } bodySize)
            {
                bodySize.MaxRequestBodySize = maxBody > 0 ? maxBody : null;
            }

            // The route's rate limit, once the route is known (a route without a policy pays one null check) and after
            // the size check (a request refused anyway spends no permit), before any byte of the body is read.
            if (route.RateLimiter is { } limiter)
            {
                permit = await AcquirePermitAsync(context, limiter, route, record);
                if (!permit.IsAcquired)
                {
                    var retryAfter = permit.TryGetMetadata(MetadataName.RetryAfter, out var wait) ? wait : (TimeSpan?)null;
                    record.RateLimiterPolicy = limiter.Name;
                    LogRateLimited(request.Method, request.Path.Value, route.Config.RouteId, limiter.Name);
                    await FailAsync(context, connection, proxy, record, new ProxyException(ProxyError.RateLimited,
                        $"rate limiter policy '{limiter.Name}' ({limiter.Config.Kind} by {limiter.Config.KeyDescription}) has no permit left"
                        + (limiter.Config.QueueLimit > 0 ? " and its queue is full" : "")
                        + (retryAfter is { } after ? $"; retry after {RetryAfterSeconds(after)} s" : ""))
                    { RetryAfter = retryAfter }, null, route.Config.Transforms.ResponseHeaders);
                    return;
                }
            }

            // What may be sent again, decided once for every attempt; small bodies are read whole first, so that a
            // keep-alive race can be replayed (docs/replay.md).
            var upgradable = context.Features.Get<IHttpUpgradeFeature>()?.IsUpgradableRequest == true;
            var replay = ReplayPolicy.Decide(context, cluster.Config.Replay, upgradable);
            if (replay.BufferLength > 0)
            {
                body = await BufferedBody.ReadAsync(context, replay.BufferLength);
            }

            var retry = cluster.Config.Retry;
            var hashKey = cluster.Config.LoadBalancingPolicy == LoadBalancingPolicies.ConsistentHash
                ? HashKey.From(context, cluster.Config.Hash, record.ClientAddress)
                : null;
            List<DestinationState>? tried = null;
            ProxyException? lastError = null;
            DestinationState? lastDestination = null;
            DestinationState? replayTo = null;
            DestinationState? statusRetryTo = null; // chosen when a status in Retry:Statuses was answered
            var replayed = false;
            var tries = 0; // destinations tried; a replay after a keep-alive race is not a new try
            while (replayTo is not null || statusRetryTo is not null || (tries < retry.Tries && WithinRetryBudget(time, record, retry)))
            {
                // 2. Load balancing: pick a destination; availability decides who is eligible, panic if nobody is.
                //    A replay goes back to the same destination: the race was the connection's fault, not its.
                //    After a retryable status, the destination was picked (within the bounds) before giving up its answer.
                var destination = replayTo;
                if (destination is null && statusRetryTo is not null)
                {
                    destination = statusRetryTo;
                    statusRetryTo = null;
                    tries++;
                }
                else if (destination is null)
                {
                    var pick = cluster.Balancer.Pick(tried, hashKey, cluster.Config.Panic.Enabled);
                    if (tried is null && cluster.NotePanic(pick.Panic))
                    {
                        if (pick.Panic)
                        {
                            LogPanic(cluster.Id, pick.Destination is null ? "answering 503 destination_unavailable" : "routing to them anyway");
                        }
                        else
                        {
                            LogPanicOver(cluster.Id);
                        }
                    }
                    destination = pick.Destination;
                    if (destination is null)
                    {
                        break;
                    }
                    tries++;
                }
                lastDestination = destination;
                var attempt = new AttemptRecord { Destination = destination, Replay = replayTo is not null };
                record.Attempts.Add(attempt);
                Activity? attemptSpan = null;
                destination.EnterRequest();
                try
                {
                    // 3. Pool: lease an idle connection that is provably alive, or connect (always, for a replay).
                    //    With a connection limit, the request may wait here in the destination's queue.
                    UpstreamConnection leased;
                    try
                    {
                        leased = await LeaseAsync(destination, cluster.Limits, replay.OnlySafeIdle, forceNew: replayTo is not null,
                            context.RequestAborted, upgradable, connection?.Loop, attempt);
                    }
                    catch (ProxyException ex) when (ProxyErrorTable.Of(ex.Error).ConnectFailure)
                    {
                        // 5. Forwarding decision for a failed connect: the destination is at fault, try the next one.
                        Record(attempt, ex);
                        destination.ReportConnectFailure(ex.Details);
                        LogConnectFailed(destination.Cluster.Id, destination.Id, destination.NextHop, ex.Details);
                        (tried ??= []).Add(destination);
                        lastError = ex;
                        replayTo = null;
                        continue;
                    }
                    if (destination.Pool.Ports.TakeWarning() is { Key: { } space } ports)
                    {
                        LogPortSpace(destination.Cluster.Id, destination.Id, space.Source?.ToString() ?? "any", space.Remote.ToString(),
                            ports.Used, ports.RangeSize, ports.Open);
                    }
                    if (destination.Pool.Adaptive?.TakeMove() is { } move)
                    {
                        LogLimitMoved(destination.Cluster.Id, destination.Id, move.From, move.To, move.Reason);
                    }

                    // 4.–7. Write the request, read the response head, stream the body back, return the connection.
                    attemptSpan = tracing.StartAttempt(destination, request.Method, attempt.Reused);
                    var retryOnStatus = replay.Replayable && retry.Statuses.Count > 0 && tries < retry.Tries
                        ? new StatusRetry(time, cluster, record, hashKey, tried, destination)
                        : null;
                    try
                    {
                        var relayed = await new Exchange(context, connection, route, leased, body, record, attempt, FerryTracing.TraceParent(attemptSpan), time,
                            replay, retryOnStatus).RunAsync();
                        FerryTracing.Stop(attemptSpan, attempt.Status, ProxyError.None);
                        ReportOutcome(destination, attempt.Status);
                        if (relayed)
                        {
                            return;
                        }
                        // 5. Forwarding decision for a status listed in Retry:Statuses: the attempt keeps the status
                        //    it got, passive health judged it as any answer, and the destination picked goes next.
                        statusRetryTo = retryOnStatus!.Next;
                        Debug.Assert(statusRetryTo is not null);
                        LogNextDestination(request.Method, request.Path.Value, destination.Cluster.Id, destination.Id,
                            $"the destination answered {attempt.Status}");
                        (tried ??= []).Add(destination);
                        replayTo = null;
                    }
                    catch (ProxyException ex) when (!context.Response.HasStarted && replay.CanReplay(ex, attempt.Reused, replayed))
                    {
                        // 5. Forwarding decision for a keep-alive race: the destination closed a pooled connection as
                        //    the request went out. Send it again on a fresh connection; health and retries untouched.
                        Record(attempt, ex);
                        FerryTracing.Stop(attemptSpan, attempt.Status, ex.Error);
                        destination.CountReplay();
                        LogReplay(request.Method, request.Path.Value, destination.Cluster.Id, destination.Id, ex.Details);
                        replayed = true;
                        replayTo = destination;
                        lastError = ex;
                    }
                }
                catch (ProxyException ex)
                {
                    Record(attempt, ex);
                    FerryTracing.Stop(attemptSpan, attempt.Status, ex.Error);
                    var destinationFault = ProxyErrorTable.Of(ex.Error).CountsAgainstDestination(attempt.Reused);
                    if (destinationFault)
                    {
                        destination.Health.ReportFailure(ex.Details);
                    }
                    // 5. Forwarding decision for any other failure: the next destination may answer, when the
                    //    destination was at fault, nothing reached the client and the request can be sent again.
                    if (destinationFault && retry.OnErrors && replay.Replayable && !context.Response.HasStarted)
                    {
                        LogNextDestination(request.Method, request.Path.Value, destination.Cluster.Id, destination.Id, ex.Details);
                        (tried ??= []).Add(destination);
                        lastError = ex;
                        replayTo = null;
                        continue;
                    }
                    await FailAsync(context, connection, proxy, record, ex, destination, route.Config.Transforms.ResponseHeaders);
                    return;
                }
                finally
                {
                    destination.LeaveRequest();
                }
            }
            await FailAsync(context, connection, proxy, record,
                lastError ?? new ProxyException(ProxyError.DestinationUnavailable, "every destination is out of rotation and panic is disabled"),
                lastDestination, route.Config.Transforms.ResponseHeaders);
        }
        catch (ProxyException ex)
        {
            await FailAsync(context, connection, proxy, record, ex, null, route?.Config.Transforms.ResponseHeaders);
        }
        finally
        {
            // Every exchange with a destination is over: its connection is back in the pool or closed.
            proxy.Leave();
            body?.Dispose();
            permit?.Dispose();
            record.Duration = time.GetElapsedTime(record.StartTimestamp);
            if (record.Status == 0)
            {
                record.Status = context.Response.StatusCode;
            }
            FerryTracing.Stop(span, record.Status, record.Error);
            // 8. Access log line, metrics and the status page's counts.
            telemetry.Complete(record);
        }
    }

    // The lease's facts go to the attempt's record at once: what InvokeAsync keeps across its awaits is then the
    // connection alone (a Lease and its awaiter were 112 of the 416 bytes of its state machine). A lease of an idle
    // connection completes synchronously and allocates nothing here.
    private static async ValueTask<UpstreamConnection> LeaseAsync(DestinationState destination, Http1.Http1Limits limits, bool onlySafeIdle, bool forceNew,
        CancellationToken requestAborted, bool upgradable, Loops.EventLoop? loop, AttemptRecord attempt)
    {
        var lease = await destination.Pool.AcquireAsync(limits, onlySafeIdle, forceNew, requestAborted, upgradable, loop);
        attempt.Reused = lease.Reused;
        attempt.ConnectTime = lease.ConnectTime;
        if (!lease.Reused && lease.Connection.TlsHandshakeTime is { } handshake)
        {
            attempt.TlsProtocol = lease.Connection.TlsProtocol;
            attempt.TlsHandshakeTime = handshake;
        }
        attempt.IdleTime = lease.IdleTime;
        attempt.ConnectionAge = lease.Age;
        attempt.ConnectionRequests = lease.Connection.RequestCount;
        return lease.Connection;
    }

    private static string? TlsVersion(HttpContext context) =>
        context.Features.Get<Microsoft.AspNetCore.Connections.Features.ITlsHandshakeFeature>() is { } tls
            ? UpstreamConnection.TlsProtocolName(tls.Protocol)
            : null;

    // The permit of the request's partition: its client address, the first value of the policy's header (a request
    // without it shares the partition of the empty value), or the route.
    private async ValueTask<RateLimitLease> AcquirePermitAsync(HttpContext context, RateLimiterPolicy limiter, RouteState route, RequestRecord record)
    {
        var key = limiter.Config.Key switch
        {
            RateLimiterKey.ClientIp => record.ClientAddress ?? "",
            RateLimiterKey.Header => RateLimiterPolicy.HeaderKey(context.Request.Headers[limiter.Config.HeaderName!] is { Count: > 0 } values ? values[0] : null),
            _ => route.Config.RouteId,
        };
        RateLimitLease permit;
        try
        {
            permit = await limiter.AcquireAsync(key, context.RequestAborted);
        }
        catch (OperationCanceledException) when (context.RequestAborted.IsCancellationRequested)
        {
            throw new ProxyException(ProxyError.ClientAborted, $"client went away while queued by rate limiter policy '{limiter.Name}'");
        }
        if (limiter.TakeOverflowStart())
        {
            LogRateLimiterFull(limiter.Name, limiter.Config.MaxPartitions);
        }
        return permit;
    }

    private static string RetryAfterSeconds(TimeSpan wait) =>
        Math.Max(1, (long)Math.Ceiling(wait.TotalSeconds)).ToString(CultureInfo.InvariantCulture);

    // nginx's proxy_next_upstream_timeout: no new destination once the request has spent this long.
    internal static bool WithinRetryBudget(TimeProvider time, RequestRecord record, RetryConfig retry) =>
        retry.Timeout <= TimeSpan.Zero || time.GetElapsedTime(record.StartTimestamp) < retry.Timeout;

    // A status the operator listed as a failure (HealthCheck:Passive:FailureStatuses) counts against the destination;
    // any other answer is proof it serves requests.
    private static void ReportOutcome(DestinationState destination, int status)
    {
        var passive = destination.Cluster.Config.HealthCheck.Passive;
        if (passive.FailureStatuses.Contains(status))
        {
            destination.Health.ReportFailure($"answered {status}");
        }
        else
        {
            destination.ReportSuccess();
        }
    }

    private static void Record(AttemptRecord attempt, ProxyException ex)
    {
        attempt.Error = ex.Error;
        attempt.ErrorDetails = ex.Details;
    }

    // Every response Ferry generates itself comes from here: status, Proxy-Status and a log line agree on the cause.
    // The route's response header rules apply to these as to relayed responses: When=Always and When=Failure ones.
    private async Task FailAsync(HttpContext context, ListenerConnectionFeature? connection, ProxyState proxy, RequestRecord record, ProxyException ex,
        DestinationState? destination, ResponseHeaderRule[]? responseRules = null)
    {
        var error = ProxyErrorTable.Of(ex.Error);
        var (status, type) = (error.Status, error.Type);
        var nextHop = destination?.NextHop;
        record.Error = ex.Error;
        record.ErrorDetails = ex.Details;
        record.Status = status;
        if (ex.Error == ProxyError.ClientAborted)
        {
            LogClientAborted(context.Request.Method, context.Request.Path.Value, ex.Details);
            context.Abort();
            return;
        }
        if (ex.Error != ProxyError.RateLimited)
        {
            LogProxyError(context.Request.Method, context.Request.Path.Value, destination?.Cluster.Id, destination?.Id, nextHop, type, ex.Details);
        }
        if (context.Response.HasStarted)
        {
            // The status line is gone: aborting is the only way to tell the client the body is incomplete.
            record.Status = context.Response.StatusCode;
            context.Abort();
            return;
        }
        var response = context.Response;
        response.Clear();
        response.StatusCode = status;
        if (connection?.Listener.Hsts is { } hsts)
        {
            response.Headers.StrictTransportSecurity = hsts.HeaderValue;
        }
        response.Headers[ProxyStatusHeader.Name] = ProxyStatusHeader.Format(type, ex.Details, nextHop, proxy.Config.ProxyStatus.IncludeDetails);
        if (ex.RetryAfter is { } retryAfter)
        {
            response.Headers.RetryAfter = RetryAfterSeconds(retryAfter);
        }
        response.ContentType = "text/plain; charset=utf-8";
        if (responseRules is { Length: > 0 })
        {
            Transforms.ApplyResponse(response.Headers, responseRules, status);
        }
        if (!HttpMethods.IsHead(context.Request.Method))
        {
            await response.WriteAsync($"{status} {ReasonPhrases.GetReasonPhrase(status)} ({type})\n", context.RequestAborted);
        }
    }

    [LoggerMessage(EventId = 1, Level = LogLevel.Warning,
        Message = "{Method} {Path}: {ErrorType} (cluster {Cluster}, destination {Destination} at {NextHop}): {Details}")]
    private partial void LogProxyError(string method, string? path, string? cluster, string? destination, string? nextHop, string errorType, string details);

    [LoggerMessage(EventId = 2, Level = LogLevel.Warning,
        Message = "connect to {Cluster}/{Destination} at {NextHop} failed, trying the next destination: {Details}")]
    private partial void LogConnectFailed(string cluster, string destination, string nextHop, string details);

    [LoggerMessage(EventId = 3, Level = LogLevel.Debug, Message = "{Method} {Path}: client went away: {Details}")]
    private partial void LogClientAborted(string method, string? path, string details);

    [LoggerMessage(EventId = 4, Level = LogLevel.Information,
        Message = "{Method} {Path}: keep-alive race on {Cluster}/{Destination}, replaying on a new connection: {Details}")]
    private partial void LogReplay(string method, string? path, string cluster, string destination, string details);

    [LoggerMessage(EventId = 5, Level = LogLevel.Warning,
        Message = "{Method} {Path}: {Cluster}/{Destination} failed, trying the next destination: {Details}")]
    private partial void LogNextDestination(string method, string? path, string cluster, string destination, string details);

    [LoggerMessage(EventId = 6, Level = LogLevel.Error,
        Message = "cluster {Cluster}: every destination is out of rotation (panic), {Action}")]
    private partial void LogPanic(string cluster, string action);

    [LoggerMessage(EventId = 7, Level = LogLevel.Warning, Message = "cluster {Cluster}: a destination is back in rotation, panic is over")]
    private partial void LogPanicOver(string cluster);

    [LoggerMessage(EventId = 8, Level = LogLevel.Warning,
        Message = "{Cluster}/{Destination}: about {Used} of {Range} local ports in use from {Source} to {Remote} ({Open} open, the rest closed "
            + "within 60 s and likely in TIME_WAIT); at the end of the range connects fail with EADDRNOTAVAIL. More keep-alive "
            + "(KeepAlive:MaxIdle) or more SourceAddresses widen it")]
    private partial void LogPortSpace(string cluster, string destination, string source, string remote, int used, int range, int open);

    [LoggerMessage(EventId = 9, Level = LogLevel.Information,
        Message = "{Cluster}/{Destination}: adaptive concurrency limit {From} -> {To} ({Reason}); requests above it wait in Ferry's queue")]
    private partial void LogLimitMoved(string cluster, string destination, int from, int to, string reason);

    // Debug: refusing is the policy doing its job, and a flood of refusals must not become a flood of console lines.
    // The access log has every one, with the policy in its details, and ferry_rate_limited_requests_total counts them.
    [LoggerMessage(EventId = 10, Level = LogLevel.Debug, Message = "{Method} {Path}: route {Route}: refused by rate limiter policy {Policy} (429)")]
    private partial void LogRateLimited(string method, string? path, string route, string policy);

    [LoggerMessage(EventId = 11, Level = LogLevel.Warning,
        Message = "rate limiter policy {Policy} holds {MaxPartitions} busy partitions (MaxPartitions): new keys share one overflow partition until some go idle")]
    private partial void LogRateLimiterFull(string policy, int maxPartitions);
}

// Retry:Statuses for one attempt: a listed status moves the request on only while another destination may still be
// tried, so that the last answer is relayed as it came and never replaced by one of Ferry's own. A class rather than a
// closure: a lambda capturing the forwarder's loop state would move that state to the heap for every request.
internal sealed class StatusRetry(TimeProvider time, ClusterState cluster, RequestRecord record, string? hashKey,
    List<DestinationState>? tried, DestinationState current)
{
    // The destination picked for the next try, once ShouldRetry has said yes.
    public DestinationState? Next { get; private set; }

    public bool ShouldRetry(int status)
    {
        var retry = cluster.Config.Retry;
        if (!retry.Statuses.Contains(status) || !Forwarder.WithinRetryBudget(time, record, retry))
        {
            return false;
        }
        Next = cluster.Balancer.Pick([.. tried ?? [], current], hashKey, cluster.Config.Panic.Enabled).Destination;
        return Next is not null;
    }
}
