using System.Diagnostics;
using Ferry.Configuration;
using Ferry.Errors;
using Ferry.Model;

namespace Ferry.Metrics;

// Activities for the "Ferry" ActivitySource: one server span per client request and one client span per upstream
// attempt. StartActivity returns null when nobody listens (no OTLP exporter), so an untraced proxy pays one check.
internal sealed class FerryTracing(TracingConfig config)
{
    public const string SourceName = "Ferry";

    internal static readonly ActivitySource Source = new(SourceName);

    // The request's span, a child of the client's trace context (W3C traceparent/tracestate, or whatever ASP.NET Core
    // already made Activity.Current from them).
    public Activity? StartRequest(HttpRequest request)
    {
        if (!config.Enabled || !Source.HasListeners())
        {
            return null;
        }
        ActivityContext parent = default;
        if (Activity.Current is null
            && request.Headers.TryGetValue("traceparent", out var traceParent)
            && ActivityContext.TryParse(traceParent.ToString(), request.Headers["tracestate"].ToString(), isRemote: true, out var remote))
        {
            parent = remote;
        }
        var activity = Source.StartActivity(request.Method, ActivityKind.Server, parent);
        if (activity is { IsAllDataRequested: true })
        {
            activity.SetTag("http.request.method", request.Method);
            activity.SetTag("url.path", request.Path.Value);
            activity.SetTag("server.address", request.Host.Host);
        }
        return activity;
    }

    // A child of the current request span for one exchange with a destination.
    public Activity? StartAttempt(DestinationState destination, string method, bool reused)
    {
        if (!config.Enabled || !Source.HasListeners())
        {
            return null;
        }
        var activity = Source.StartActivity(method, ActivityKind.Client);
        if (activity is { IsAllDataRequested: true })
        {
            activity.SetTag("http.request.method", method);
            activity.SetTag("server.address", destination.Config.Host);
            activity.SetTag("server.port", destination.Config.Port);
            activity.SetTag("ferry.cluster", destination.Cluster.Id);
            activity.SetTag("ferry.destination", destination.Id);
            activity.SetTag("ferry.reused", reused);
        }
        return activity;
    }

    // Ends a span with the outcome: the HTTP status and, for a failure, the RFC 9209 error type.
    public static void Stop(Activity? activity, int status, ProxyError error)
    {
        if (activity is null)
        {
            return;
        }
        if (status > 0)
        {
            activity.SetTag("http.response.status_code", status);
        }
        if (error != ProxyError.None)
        {
            activity.SetTag("error.type", ProxyErrorTable.Of(error).Type);
            activity.SetStatus(ActivityStatusCode.Error);
        }
        activity.Dispose();
    }

    // The W3C traceparent to send upstream for this attempt (Trace Context §3.2: "00-<trace-id>-<span-id>-<flags>"), or null
    // when there is no activity: the client's own traceparent then crosses the proxy unchanged.
    public static string? TraceParent(Activity? attempt) =>
        attempt is { IdFormat: ActivityIdFormat.W3C } ? attempt.Id : null;
}
