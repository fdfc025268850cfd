using Ferry.Model;
using Ferry.Upstream;
using Microsoft.AspNetCore.WebUtilities;

namespace Ferry.Forwarding;

// The request path of DESIGN.md §1. Each numbered step below is one stage of it.
internal sealed partial class Forwarder(ProxyStateHolder state, TimeProvider time, ILogger<Forwarder> logger)
{
    // Connect failures move on to the next destination (nothing was sent, so it is always safe); this bounds how many
    // destinations one request may try, like nginx's proxy_next_upstream_tries.
    internal const int MaxConnectAttempts = 5;

    internal TimeProvider Time => time;

    public async Task InvokeAsync(HttpContext context)
    {
        var proxy = state.Current;
        var request = context.Request;

        // 1. Routing: host + path → route → cluster.
        var route = proxy.Routes.Match(request.Method, request.Host.Value ?? "", request.Path.Value ?? "/");
        if (route is null)
        {
            await FailAsync(context, proxy, new ProxyException(ProxyError.NoRoute, "no route matches the request"), null);
            return;
        }
        var cluster = route.Cluster;

        List<DestinationState>? tried = null;
        ProxyException? lastError = null;
        DestinationState? lastDestination = null;
        for (var attempt = 0; attempt < MaxConnectAttempts; attempt++)
        {
            // 2. Load balancing: pick a destination; availability decides who is eligible, panic if nobody is.
            var destination = cluster.Balancer.Pick(tried);
            if (destination is null)
            {
                break;
            }
            lastDestination = destination;
            destination.EnterRequest();
            try
            {
                // 3. Pool: lease an idle connection that is provably alive, or connect.
                UpstreamConnection connection;
                bool reused;
                try
                {
                    (connection, reused) = await destination.Pool.AcquireAsync(cluster.Limits, context.RequestAborted);
                }
                catch (ProxyException ex) when (ProxyErrors.IsConnectFailure(ex.Error))
                {
                    // 5. Forwarding decision for a failed connect: the destination is at fault, try the next one.
                    destination.ReportConnectFailure();
                    LogConnectFailed(destination.Cluster.Id, destination.Id, destination.NextHop, ex.Details);
                    (tried ??= []).Add(destination);
                    lastError = ex;
                    continue;
                }
                if (!reused)
                {
                    destination.ReportSuccess();
                }

                // 4.–7. Write the request, read the response head, stream the body back, return the connection.
                await new Exchange(context, route, destination, connection, reused, time).RunAsync();
                return;
            }
            catch (ProxyException ex)
            {
                await FailAsync(context, proxy, ex, destination);
                return;
            }
            finally
            {
                destination.LeaveRequest();
            }
        }
        await FailAsync(context, proxy,
            lastError ?? new ProxyException(ProxyError.DestinationUnavailable, "no destination can take the request"),
            lastDestination);
    }

    // Every response Ferry generates itself comes from here: status, Proxy-Status and a log line agree on the cause.
    private async Task FailAsync(HttpContext context, ProxyState proxy, ProxyException ex, DestinationState? destination)
    {
        var (status, type) = ProxyErrors.Describe(ex.Error);
        var nextHop = destination?.NextHop;
        if (ex.Error == ProxyError.ClientAborted)
        {
            LogClientAborted(context.Request.Method, context.Request.Path.Value, ex.Details);
            context.Abort();
            return;
        }
        LogProxyError(context.Request.Method, context.Request.Path.Value, destination?.Cluster.Id, destination?.Id, nextHop, type, ex.Details);
        if (context.Response.HasStarted)
        {
            // The status line is gone: aborting is the only way to tell the client the body is incomplete.
            context.Abort();
            return;
        }
        var response = context.Response;
        response.Clear();
        response.StatusCode = status;
        response.Headers[ProxyStatusHeader.Name] = ProxyStatusHeader.Format(type, ex.Details, nextHop, proxy.Config.ProxyStatus.IncludeDetails);
        response.ContentType = "text/plain; charset=utf-8";
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
}

// The live ProxyState; swapped atomically when configuration changes.
internal sealed class ProxyStateHolder(ProxyState initial)
{
    private ProxyState _current = initial;

    public ProxyState Current
    {
        get => Volatile.Read(ref _current);
        set => Volatile.Write(ref _current, value);
    }
}
