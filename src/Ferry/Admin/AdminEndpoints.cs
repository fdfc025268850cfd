using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Ferry.Configuration;
using Ferry.Forwarding;
using Ferry.Hosting;
using Ferry.Metrics;
using Ferry.Upstream;

namespace Ferry.Admin;

// The admin listener: /healthz for orchestrators, / (the status page), /status and /stats for people and scripts,
// /metrics for Prometheus. With Admin:Token set, everything but /healthz needs "Authorization: Bearer <token>".
internal sealed class AdminEndpoints(ProxyStateHolder state, AdminConfig? config = null, PrometheusCollector? metrics = null, RequestStats? stats = null,
    ConfigReloader? reloader = null, Hosting.CertificateStore? certificates = null, DrainState? drain = null, Loops.EventLoops? loops = null)
{
    private readonly byte[]? _tokenHash = config?.Token is { } token ? SHA256.HashData(Encoding.UTF8.GetBytes(token)) : null;

    // The admin endpoints of the server whose services were built by AddFerryObservability.
    public static AdminEndpoints Create(ProxyStateHolder state, AdminConfig config, IServiceProvider proxyServices, ConfigReloader? reloader = null) =>
        new(state, config, proxyServices.GetService<PrometheusCollector>(), proxyServices.GetService<RequestTelemetry>()?.Stats, reloader,
            proxyServices.GetService<Hosting.CertificateStore>(), proxyServices.GetService<DrainState>(), proxyServices.GetService<Loops.EventLoops>());

    /// <summary>What <see cref="FerryServerOptions.Admin"/> takes: the admin listener's handler.</summary>
    public static readonly AdminHandlerFactory Handler = (state, config, proxyServices, reloader) =>
        Create(state, config, proxyServices, reloader).InvokeAsync;

    public Task InvokeAsync(HttpContext context)
    {
        var path = context.Request.Path.Value;
        if (!IsAllowedHost(context.Request.Host))
        {
            // RFC 9110 §15.5.20: this listener is not configured to answer for that authority.
            context.Response.StatusCode = StatusCodes.Status421MisdirectedRequest;
            context.Response.ContentType = "text/plain";
            return context.Response.WriteAsync("misdirected: this host name is not in Admin:AllowedHosts\n");
        }
        // /reload changes what runs, so it takes POST only; everything else only reads.
        var reload = path == "/reload" && reloader is not null;
        if (reload ? !HttpMethods.IsPost(context.Request.Method) : !HttpMethods.IsGet(context.Request.Method) && !HttpMethods.IsHead(context.Request.Method))
        {
            context.Response.StatusCode = StatusCodes.Status405MethodNotAllowed;
            context.Response.Headers.Allow = reload ? "POST" : "GET, HEAD";
            return Task.CompletedTask;
        }
        if (path == "/healthz")
        {
            context.Response.ContentType = "text/plain";
            if (drain?.IsDraining == true)
            {
                // A readiness probe takes the process out of its Service's endpoints while it finishes what it has.
                context.Response.StatusCode = StatusCodes.Status503ServiceUnavailable;
                return context.Response.WriteAsync("draining\n");
            }
            return context.Response.WriteAsync("ok\n");
        }
        if (!IsAuthorized(context.Request))
        {
            context.Response.StatusCode = StatusCodes.Status401Unauthorized;
            context.Response.Headers.WWWAuthenticate = "Bearer realm=\"ferry-admin\"";
            context.Response.ContentType = "text/plain";
            return context.Response.WriteAsync("unauthorized: send Authorization: Bearer <Admin:Token>\n");
        }
        switch (path)
        {
            case "/reload" when reloader is not null:
                return ReloadAsync(context, reloader);
            case "/":
                context.Response.ContentType = "text/html; charset=utf-8";
                context.Response.Headers.CacheControl = "no-store";
                return context.Response.WriteAsync(StatusPage.Html);
            case "/status":
                context.Response.ContentType = "application/json";
                context.Response.Headers.CacheControl = "no-store";
                return WriteStatusAsync(context.Response.BodyWriter);
            case "/stats" when stats is not null:
                context.Response.ContentType = "application/json";
                context.Response.Headers.CacheControl = "no-store";
                return WriteStatsAsync(context, stats);
            case "/metrics" when metrics is not null:
                context.Response.ContentType = PrometheusCollector.ContentType;
                return context.Response.WriteAsync(metrics.Scrape());
            default:
                context.Response.StatusCode = StatusCodes.Status404NotFound;
                context.Response.ContentType = "text/plain";
                return context.Response.WriteAsync("not found: try /, /healthz, /status, /stats or /metrics (POST /reload)\n");
        }
    }

    // A web page can make the operator's browser send a cross-origin POST without any preflight; the browser names
    // the page's origin, and a reload is only taken from a client that is not a page of another origin.
    private static async Task ReloadAsync(HttpContext context, ConfigReloader reloader)
    {
        var origin = context.Request.Headers.Origin.ToString();
        if (origin.Length > 0 && (!Uri.TryCreate(origin, UriKind.Absolute, out var originUri)
            || !string.Equals(originUri.Authority, context.Request.Host.Value, StringComparison.OrdinalIgnoreCase)))
        {
            context.Response.StatusCode = StatusCodes.Status403Forbidden;
            context.Response.ContentType = "text/plain";
            await context.Response.WriteAsync("forbidden: POST /reload from a page of another origin\n");
            return;
        }
        var result = await reloader.ReloadAsync("admin");
        // 422: the configuration read is not one Ferry can run; the running one is kept.
        context.Response.StatusCode = result.Success ? StatusCodes.Status200OK : StatusCodes.Status422UnprocessableEntity;
        context.Response.ContentType = "application/json";
        context.Response.Headers.CacheControl = "no-store";
        using (var json = new Utf8JsonWriter(context.Response.BodyWriter, new JsonWriterOptions { Indented = true }))
        {
            WriteReload(json, result, reloader.Loaded);
        }
        await context.Response.BodyWriter.FlushAsync();
    }

    private static void WriteReload(Utf8JsonWriter json, ReloadResult result, LoadedConfig loaded)
    {
        json.WriteStartObject();
        json.WriteString("time", result.Time);
        json.WriteString("result", result.Success ? "success" : "failure");
        json.WriteBoolean("changed", result.Changed);
        json.WriteString("trigger", result.Trigger);
        json.WriteString("source", loaded.Path);
        json.WriteString("version", result.Version);
        json.WriteString("runningVersion", loaded.Version);
        json.WriteStartArray("errors");
        foreach (var error in result.Errors)
        {
            json.WriteStringValue(error);
        }
        json.WriteEndArray();
        json.WriteStartArray("warnings");
        foreach (var warning in result.Warnings)
        {
            json.WriteStringValue(warning);
        }
        json.WriteEndArray();
        json.WriteEndObject();
    }

    // DNS rebinding needs a name: a page on attacker.example whose address is switched to 127.0.0.1 sends
    // "Host: attacker.example". IP literals and the loopback name cannot be rebound; other names must be listed.
    private bool IsAllowedHost(HostString host)
    {
        var name = host.Host;
        if (string.IsNullOrEmpty(name))
        {
            return false;
        }
        if (name.Equals("localhost", StringComparison.OrdinalIgnoreCase) || name.EndsWith(".localhost", StringComparison.OrdinalIgnoreCase)
            || System.Net.IPAddress.TryParse(name.StartsWith('[') && name.EndsWith(']') ? name[1..^1] : name, out _))
        {
            return true;
        }
        var allowed = config?.AllowedHosts ?? [];
        for (var i = 0; i < allowed.Count; i++)
        {
            if (allowed[i] == "*" || string.Equals(allowed[i], name.TrimEnd('.'), StringComparison.OrdinalIgnoreCase))
            {
                return true;
            }
        }
        return false;
    }

    // The token travels in the Authorization header, or for a browser opening the status page in the access_token
    // query parameter (RFC 6750 §2.3: for clients that cannot set the header; it may end up in browser history).
    // Both sides are hashed first so that the comparison is constant-time whatever the lengths.
    private bool IsAuthorized(HttpRequest request)
    {
        if (_tokenHash is null)
        {
            return true;
        }
        string? presented = null;
        var header = request.Headers.Authorization.ToString();
        if (header.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase))
        {
            presented = header["Bearer ".Length..].Trim();
        }
        else if (request.Query.TryGetValue("access_token", out var query))
        {
            presented = query.ToString();
        }
        return presented is not null
            && CryptographicOperations.FixedTimeEquals(SHA256.HashData(Encoding.UTF8.GetBytes(presented)), _tokenHash);
    }

    private static async Task WriteStatsAsync(HttpContext context, RequestStats stats)
    {
        var seconds = int.TryParse(context.Request.Query["seconds"], out var s) ? s : RequestStats.WindowSeconds;
        using (var json = new Utf8JsonWriter(context.Response.BodyWriter))
        {
            stats.WriteJson(json, seconds);
        }
        await context.Response.BodyWriter.FlushAsync();
    }

    private async Task WriteStatusAsync(System.IO.Pipelines.PipeWriter output)
    {
        var proxy = state.Current;
        using (var json = new Utf8JsonWriter(output, new JsonWriterOptions { Indented = true }))
        {
            json.WriteStartObject();
            if (reloader is not null)
            {
                // What runs and where it came from; lastReload null: nothing was reloaded since the start.
                var loaded = reloader.Loaded;
                json.WriteStartObject("config");
                json.WriteString("version", loaded.Version);
                json.WriteString("loadedAt", loaded.LoadedAt);
                json.WriteString("source", loaded.Path);
                json.WriteNumber("drainingDestinations", reloader.Draining);
                json.WriteEndObject();
                json.WritePropertyName("lastReload");
                if (reloader.LastReload is { } last)
                {
                    WriteReload(json, last, loaded);
                }
                else
                {
                    json.WriteNullValue();
                }
            }
            // What serves the proxied listeners: with Engine Auto, the one the server could start.
            json.WriteString("engine", loops is null ? nameof(EngineKind.Sockets) : nameof(EngineKind.Loops));
            json.WriteStartArray("listeners");
            foreach (var listener in proxy.Config.Listeners)
            {
                json.WriteStringValue(listener.EndPoint.ToString());
            }
            json.WriteEndArray();
            WriteCertificates(json);
            WriteEventLoops(json);
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
                json.WriteBoolean("panic", cluster.Panicking);
                json.WriteNumber("maxConnections", cluster.Config.ConnectionLimit.MaxConnections);
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
                    json.WriteNumber("effectiveWeight", d.EffectiveWeight / 100.0);
                    json.WriteNumber("slowStart", Math.Round(d.Health.SlowStartFactor(), 3));
                    json.WriteNumber("inFlight", d.InFlight);
                    json.WriteNumber("queued", pool.Queued);
                    // The adaptive concurrency limit and what it is estimated from; limit null: no limit at all.
                    json.WriteStartObject("concurrencyLimit");
                    json.WriteBoolean("adaptive", pool.Adaptive is not null);
                    if (pool.CurrentLimit == int.MaxValue)
                    {
                        json.WriteNull("limit");
                    }
                    else
                    {
                        json.WriteNumber("limit", pool.CurrentLimit);
                    }
                    json.WriteNumber("inFlight", pool.InFlight);
                    json.WriteNumber("queued", pool.Queued);
                    json.WriteNumber("slowConnects", pool.SlowConnects);
                    if (pool.Adaptive is { } adaptive)
                    {
                        WriteMilliseconds(json, "baselineLatencyMs", adaptive.Baseline);
                        WriteMilliseconds(json, "recentLatencyMs", adaptive.LastLatency);
                        json.WriteNumber("increases", adaptive.Increases);
                        json.WriteNumber("decreases", adaptive.Decreases);
                        json.WriteNumber("overloads", adaptive.Overloads);
                        json.WriteNumber("rebases", adaptive.Rebases);
                    }
                    json.WriteEndObject();
                    if (d.Resolver is { } resolver)
                    {
                        // The host name's current addresses; error: the latest refresh failed and these are kept.
                        json.WriteStartObject("dns");
                        json.WriteString("host", resolver.Host);
                        json.WriteStartArray("addresses");
                        foreach (var endPoint in resolver.EndPoints)
                        {
                            json.WriteStringValue(endPoint.Address.ToString());
                        }
                        json.WriteEndArray();
                        json.WriteString("error", resolver.Error);
                        json.WriteEndObject();
                    }
                    json.WriteStartObject("pool");
                    json.WriteNumber("idle", pool.Idle);
                    json.WriteNumber("active", pool.Active);
                    json.WriteNumber("recentPeakLeases", pool.RecentPeakLeases);
                    json.WriteNumber("opened", pool.Opened);
                    json.WriteNumber("reused", pool.Reused);
                    var leases = pool.Opened + pool.Reused;
                    json.WriteNumber("reuseRatio", leases == 0 ? 0 : Math.Round((double)pool.Reused / leases, 4));
                    // Engine: Loops: leases whose idle connection was served by another loop than the client's and
                    // was moved to it.
                    json.WriteNumber("crossLoopLeases", pool.CrossLoopLeases);
                    json.WriteNumber("idleTimeoutSeconds", pool.KeepAlive.IdleTimeout.TotalSeconds);
                    json.WriteNumber("replays", d.Replays);
                    json.WriteNumber("closedWhileIdleFin", pool.ClosedByFin);
                    json.WriteNumber("closedWhileIdleReset", pool.ClosedByReset);
                    json.WriteStartObject("learned");
                    if (pool.Learner.IdleTimeout is { } learnedIdle)
                    {
                        json.WriteNumber("idleTimeoutSeconds", Math.Round(learnedIdle.TotalSeconds, 3));
                    }
                    else
                    {
                        json.WriteNull("idleTimeoutSeconds");
                    }
                    json.WriteNumber("maxRequests", pool.Learner.MaxRequests);
                    json.WriteNumber("idleSamples", pool.Learner.IdleSamples);
                    // Whether enough closes were seen for the learned value alone to govern non-replayable requests.
                    json.WriteBoolean("idleTimeoutSettled", pool.Learner.IdleTimeoutSettled);
                    json.WriteNumber("idleTimeoutForgotten", pool.Learner.Forgotten);
                    json.WriteNumber("provenIdleSeconds", Math.Round(pool.KeepAlive.ProvenIdle.TotalSeconds, 3));
                    // Requests that could not be replayed and connected because every idle connection was too old.
                    json.WriteNumber("unsafeIdleSkips", pool.SkippedUnsafe);
                    json.WriteEndObject();
                    // Local ports in the busiest 4-tuple space; recentlyClosed estimates TIME_WAIT, which no socket API shows.
                    var ports = pool.Ports.Busiest();
                    json.WriteStartObject("portSpace");
                    json.WriteString("source", ports.Key?.Source?.ToString());
                    json.WriteString("remote", ports.Key?.Remote.ToString());
                    json.WriteNumber("open", ports.Open);
                    json.WriteNumber("recentlyClosed", ports.RecentlyClosed);
                    json.WriteNumber("range", ports.RangeSize);
                    json.WriteNumber("utilization", Math.Round(ports.Utilization, 4));
                    json.WriteEndObject();
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

    // One entry per certificate of an HTTPS listener: what is served now and how its last reload went.
    private void WriteCertificates(Utf8JsonWriter json)
    {
        json.WriteStartArray("certificates");
        foreach (var listener in certificates?.Listeners ?? [])
        {
            foreach (var slot in listener.Slots)
            {
                json.WriteStartObject();
                json.WriteString("listener", slot.Listener);
                json.WriteString("serverName", slot.Name);
                json.WriteString("path", slot.Source.Path);
                if (slot.Current is { } current)
                {
                    json.WriteString("subject", current.Subject);
                    json.WriteString("serialNumber", current.SerialNumber);
                    json.WriteString("notAfter", current.NotAfter);
                }
                json.WriteString("loadedAt", slot.LoadedAt);
                if (slot.LastReload is { } reload)
                {
                    json.WriteString("lastReload", reload);
                }
                else
                {
                    json.WriteNull("lastReload");
                }
                json.WriteString("lastReloadResult", slot.LastResult);
                json.WriteString("lastReloadError", slot.LastError);
                json.WriteNumber("reloads", slot.Successes);
                json.WriteNumber("reloadFailures", slot.Failures);
                json.WriteEndObject();
            }
        }
        json.WriteEndArray();
    }

    // With Engine: Loops only: each loop's descriptors and the stalls its watchdog saw (stallThresholdMs null: no watchdog).
    private void WriteEventLoops(Utf8JsonWriter json)
    {
        if (loops is null)
        {
            return;
        }
        json.WriteStartObject("eventLoops");
        WriteMilliseconds(json, "stallThresholdMs", loops.Watchdog?.Threshold);
        json.WriteStartArray("loops");
        foreach (var loop in loops.All)
        {
            var activity = loop.Activity;
            json.WriteStartObject();
            json.WriteNumber("index", loop.Index);
            json.WriteNumber("clients", loop.Clients);
            json.WriteNumber("descriptors", loop.Registered);
            json.WriteNumber("stalls", activity.Stalls);
            WriteMilliseconds(json, "stalledMs", activity.Stalled);
            WriteMilliseconds(json, "longestStallMs", activity.Longest);
            // The stall in progress, if any: a loop stuck for good shows here before its stall ends.
            WriteMilliseconds(json, "stalledNowMs", activity.StalledNow);
            json.WriteEndObject();
        }
        json.WriteEndArray();
        json.WriteEndObject();
    }

    private static void WriteMilliseconds(Utf8JsonWriter json, string name, TimeSpan? value)
    {
        if (value is { } v)
        {
            json.WriteNumber(name, Math.Round(v.TotalMilliseconds, 3));
        }
        else
        {
            json.WriteNull(name);
        }
    }
}
