using Ferry.Configuration;
using Ferry.Forwarding;
using Ferry.Hosting;
using Ferry.Metrics;
using Ferry.Model;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection.Extensions;

namespace Ferry;

/// <summary>
/// Ferry's forwarder inside an ASP.NET Core app, the way YARP's AddReverseProxy and MapReverseProxy are used: the
/// app's server takes the connections, and Ferry forwards what reaches <see cref="MapFerry"/> by its own Routes and
/// Clusters, with its pools, health checks, retries, access log and metrics.
/// </summary>
public static class FerryHostingExtensions
{
    /// <summary>
    /// Reads Ferry's configuration from <paramref name="configuration"/> (Routes, Clusters, RateLimiterPolicies,
    /// ProxyStatus, RequestLimits, AccessLog, Metrics, Tracing: docs/configuration.md) and registers the forwarder.
    /// Listeners and Admin belong to the ferry executable and are errors here. The configuration is read once:
    /// changes to it are not reloaded.
    /// </summary>
    /// <exception cref="InvalidOperationException">The configuration has errors; the message lists each one.</exception>
    public static IServiceCollection AddFerry(this IServiceCollection services, IConfiguration configuration)
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentNullException.ThrowIfNull(configuration);
        var result = FerryConfigLoader.LoadForHost(configuration);
        if (!result.IsValid)
        {
            throw new InvalidOperationException(
                $"Ferry's configuration has {result.Errors.Count} error(s): {string.Join("; ", result.Errors)}");
        }
        var config = result.Config!;
        FerryServer.RefuseBareLineFeeds();
        services.TryAddSingleton(TimeProvider.System);
        services.AddSingleton(sp =>
        {
            var logger = sp.GetRequiredService<ILoggerFactory>().CreateLogger(typeof(FerryHostingExtensions).FullName!);
            foreach (var warning in result.Warnings)
            {
                logger.LogWarning("configuration: {Warning}", warning);
            }
            var time = sp.GetRequiredService<TimeProvider>();
            return new HostedProxyState(new ProxyStateHolder(ProxyState.Build(config, FerryServer.PoolFactory(time), time)));
        });
        services.AddSingleton(sp => sp.GetRequiredService<HostedProxyState>().Holder);
        services.AddSingleton<Forwarder>();
        services.AddFerryObservability(config);
        // The header decoding of Ferry's own listeners, so that header bytes cross as received and the fields a
        // client's Connection header names are dropped. It applies to the app's other endpoints too.
        services.Configure<KestrelServerOptions>(kestrel => FerryServer.UseHeaderEncodings(kestrel, captureConnection: true));
        return services;
    }

    /// <summary>
    /// Sends every request that no other endpoint of the app matches to Ferry's router (a catch-all route, which has
    /// the lowest precedence). A request that none of Ferry's Routes matches is answered 404 by Ferry.
    /// </summary>
    public static IEndpointConventionBuilder MapFerry(this IEndpointRouteBuilder endpoints)
    {
        ArgumentNullException.ThrowIfNull(endpoints);
        var forwarder = endpoints.ServiceProvider.GetService<Forwarder>()
            ?? throw new InvalidOperationException("MapFerry needs services.AddFerry(configuration) first.");
        return endpoints.Map("/{**ferry}", new RequestDelegate(forwarder.InvokeAsync)).WithDisplayName("Ferry");
    }

    // Owns the state for the app's container, which disposes it (pools, health checks) after the server has stopped.
    private sealed class HostedProxyState(ProxyStateHolder holder) : IAsyncDisposable
    {
        public ProxyStateHolder Holder => holder;

        public ValueTask DisposeAsync() => holder.Current.DisposeAsync();
    }
}
