using System.Net;
using System.Text.Json;
using System.Text.Json.Serialization;
using Ferry.Configuration;
using Ferry.Hosting;
using Ferry.Lab;
using Microsoft.Extensions.Configuration;

namespace Ferry.Incidents;

/// <summary>One incident through one proxy: what the clients saw (in all and per method) and what the upstream
/// counted. <see cref="UpstreamPosts"/> above <see cref="PostsOk"/> would mean a POST processed with no 2xx answer:
/// twice (a replay) or answered with an error.</summary>
internal sealed record IncidentResult(
    string Incident,
    string Proxy,
    double LatencyMs,
    int Requests,
    int Ok,
    int ServerErrors,
    int OtherStatus,
    int Errors,
    MethodResult Get,
    MethodResult Post,
    int UpstreamRequests,
    int UpstreamPosts,
    int UpstreamConnections,
    double Seconds)
{
    /// <summary>Response times the clients saw (complete responses, connect included), in milliseconds.</summary>
    public double? P50Ms { get; init; }
    public double? P99Ms { get; init; }

    public int PostsOk => Post.Ok;
}

/// <summary>Every result of a `ferry lab` run, and what was left out.</summary>
internal sealed record LabReport(IReadOnlyList<IncidentResult> Results, string? NginxSkipped)
{
    public string ToJson() => JsonSerializer.Serialize(this, LabJsonContext.Default.LabReport);
}

// Source-generated so that a Native AOT build can write it.
[JsonSourceGenerationOptions(
    PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase,
    WriteIndented = true,
    DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(LabReport))]
internal sealed partial class LabJsonContext : JsonSerializerContext;

/// <summary>Runs an incident: a fresh Lab upstream per proxy (so its counters are that proxy's alone), behind a
/// <see cref="DelayRelay"/> when the latency is above zero, the proxy in front of it, and the load through the proxy.</summary>
internal sealed class IncidentRunner(int maxRequests, TimeSpan duration, TimeProvider time)
{
    public const string FerryWithoutAdaptiveLimit = "ferry, no adaptive";

    public async Task<IncidentResult> RunThroughFerryAsync(Incident incident, TimeSpan latency, CancellationToken ct, bool adaptiveLimit = true)
    {
        await using var upstream = LabUpstream.Start(incident.Upstream with { TimeProvider = time });
        await using var relay = latency > TimeSpan.Zero ? DelayRelay.Start(upstream.EndPoint, latency, time) : null;
        // Ferry as `ferry proxy --to` builds it: every setting at its default but the adaptive limit, shown both ways.
        var settings = FerryConfigLoader.ProxyCommandSettings("127.0.0.1:0", [(relay?.Uri ?? upstream.Uri).ToString()], adminEnabled: false);
        // The access log would interleave a line per request with the table, which carries the counts.
        settings["AccessLog:Enabled"] = "false";
        settings[$"Clusters:{FerryConfigLoader.ProxyCommandName}:AdaptiveLimit:Enabled"] = adaptiveLimit ? "true" : "false";
        var loaded = FerryConfigLoader.Load(new ConfigurationBuilder().AddInMemoryCollection(settings).Build());
        if (!loaded.IsValid)
        {
            throw new InvalidOperationException(string.Join("; ", loaded.Errors));
        }
        // No log providers: Ferry's warnings would interleave with the table; the table carries the counts.
        await using var ferry = await FerryServer.StartAsync(loaded.Config!, new FerryServerOptions
        {
            TimeProvider = time,
            ConfigureLogging = _ => { },
            ShutdownTimeout = TimeSpan.FromSeconds(2),
        }, ct);
        var listener = ferry.ListenerUris[0];
        var result = await RunLoadAsync(incident, adaptiveLimit ? "ferry" : FerryWithoutAdaptiveLimit, latency, new IPEndPoint(IPAddress.Parse(listener.Host), listener.Port), upstream, ct);
        await ferry.StopAsync(ct);
        return result;
    }

    public async Task<IncidentResult> RunThroughNginxAsync(Incident incident, TimeSpan latency, string nginxExecutable, CancellationToken ct)
    {
        await using var upstream = LabUpstream.Start(incident.Upstream with { TimeProvider = time });
        await using var relay = latency > TimeSpan.Zero ? DelayRelay.Start(upstream.EndPoint, latency, time) : null;
        await using var nginx = await NginxProxy.StartAsync(nginxExecutable, relay?.Uri ?? upstream.Uri, ct);
        return await RunLoadAsync(incident, "nginx", latency, nginx.EndPoint, upstream, ct);
    }

    private async Task<IncidentResult> RunLoadAsync(Incident incident, string proxy, TimeSpan latency, IPEndPoint endPoint,
        LabUpstream upstream, CancellationToken ct)
    {
        var load = await new LoadGenerator(endPoint, incident.Load, maxRequests, duration, time).RunAsync(ct);
        return new IncidentResult(incident.Name, proxy, latency.TotalMilliseconds, load.Requests, load.Ok, load.ServerErrors,
            load.OtherStatus, load.Errors, load.Get, load.Post, upstream.RequestsReceived,
            upstream.RequestCount("POST", LoadGenerator.PostPath), upstream.ConnectionsAccepted, Math.Round(load.Elapsed.TotalSeconds, 1))
        {
            P50Ms = load.P50Ms is { } p50 ? Math.Round(p50, 1) : null,
            P99Ms = load.P99Ms is { } p99 ? Math.Round(p99, 1) : null,
        };
    }
}
