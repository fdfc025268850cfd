using System.Text.Json;
using Ferry.Forwarding;
using Ferry.Upstream;

namespace Ferry.Admin;

// The admin listener: /healthz for orchestrators, /status for people and scripts.
internal sealed class AdminEndpoints(ProxyStateHolder state)
{
    public Task InvokeAsync(HttpContext context)
    {
        var path = context.Request.Path.Value;
        if (!HttpMethods.IsGet(context.Request.Method) && !HttpMethods.IsHead(context.Request.Method))
        {
            context.Response.StatusCode = StatusCodes.Status405MethodNotAllowed;
            return Task.CompletedTask;
        }
        switch (path)
        {
            case "/healthz":
                context.Response.ContentType = "text/plain";
                return context.Response.WriteAsync("ok\n");
            case "/status":
                context.Response.ContentType = "application/json";
                return WriteStatusAsync(context.Response.BodyWriter);
            default:
                context.Response.StatusCode = StatusCodes.Status404NotFound;
                context.Response.ContentType = "text/plain";
                return context.Response.WriteAsync("not found: try /healthz or /status\n");
        }
    }

    private async Task WriteStatusAsync(System.IO.Pipelines.PipeWriter output)
    {
        var proxy = state.Current;
        using (var json = new Utf8JsonWriter(output, new JsonWriterOptions { Indented = true }))
        {
            json.WriteStartObject();
            json.WriteStartArray("listeners");
            foreach (var listener in proxy.Config.Listeners)
            {
                json.WriteStringValue(listener.EndPoint.ToString());
            }
            json.WriteEndArray();
            json.WriteStartArray("routes");
            foreach (var route in proxy.Routes.Routes)
            {
                json.WriteStartObject();
                json.WriteString("id", route.Config.RouteId);
                json.WriteString("cluster", route.Cluster.Id);
                json.WriteEndObject();
            }
            json.WriteEndArray();
            json.WriteStartArray("clusters");
            foreach (var cluster in proxy.Clusters.Values)
            {
                json.WriteStartObject();
                json.WriteString("id", cluster.Id);
                json.WriteString("loadBalancingPolicy", cluster.Config.LoadBalancingPolicy);
                json.WriteStartArray("destinations");
                foreach (var d in cluster.Destinations)
                {
                    var pool = d.Pool;
                    json.WriteStartObject();
                    json.WriteString("id", d.Id);
                    json.WriteString("address", d.Config.Address.ToString());
                    json.WriteNumber("weight", d.Config.Weight);
                    json.WriteBoolean("backup", d.Config.Backup);
                    json.WriteString("health", d.IsAvailable ? "available" : "unavailable");
                    json.WriteString("healthReason", d.HealthReason);
                    json.WriteNumber("inFlight", d.InFlight);
                    json.WriteStartObject("pool");
                    json.WriteNumber("idle", pool.Idle);
                    json.WriteNumber("active", pool.Active);
                    json.WriteNumber("opened", pool.Opened);
                    json.WriteNumber("reused", pool.Reused);
                    json.WriteNumber("idleTimeoutSeconds", pool.IdleTimeout.TotalSeconds);
                    json.WriteStartObject("retired");
                    foreach (var reason in Enum.GetValues<RetireReason>())
                    {
                        json.WriteNumber(JsonNamingPolicy.CamelCase.ConvertName(reason.ToString()), pool.Retired(reason));
                    }
                    json.WriteEndObject();
                    json.WriteEndObject();
                    json.WriteEndObject();
                }
                json.WriteEndArray();
                json.WriteEndObject();
            }
            json.WriteEndArray();
            json.WriteEndObject();
        }
        await output.FlushAsync();
    }
}
