using System.Net;
using Ferry.Admin;
using Ferry.Configuration;
using Ferry.Forwarding;
using Ferry.Metrics;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;

namespace Ferry.FunctionalTests.Observability;

// The admin endpoints and telemetry exactly as AddFerryObservability and AdminEndpoints.Create set them up, on their
// own loopback listener over a given proxy state, so that they can be exercised with RequestTelemetry.Complete.
internal sealed class ObservabilityHost : IAsyncDisposable
{
    private readonly WebApplication _app;

    private ObservabilityHost(WebApplication app, Uri uri)
    {
        _app = app;
        Uri = uri;
        Client = new HttpClient { BaseAddress = uri, Timeout = TimeSpan.FromSeconds(30) };
    }

    public Uri Uri { get; }
    public HttpClient Client { get; }
    public RequestTelemetry Telemetry => _app.Services.GetRequiredService<RequestTelemetry>();

    public static async Task<ObservabilityHost> StartAsync(FerryConfig config, ProxyStateHolder state)
    {
        var builder = WebApplication.CreateEmptyBuilder(new WebApplicationOptions());
        builder.WebHost.UseKestrelCore().ConfigureKestrel(k => k.Listen(IPAddress.Loopback, 0));
        builder.Services.AddSingleton(state).AddSingleton(TimeProvider.System).AddFerryObservability(config);
        var app = builder.Build();
        app.Run(AdminEndpoints.Create(state, config.Admin, app.Services).InvokeAsync);
        await app.StartAsync().WaitAsync(TimeSpan.FromSeconds(30));
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.Single();
        return new ObservabilityHost(app, new Uri(address));
    }

    // Stops the host: the access log is drained and closed.
    public async ValueTask DisposeAsync()
    {
        Client.Dispose();
        await _app.DisposeAsync();
    }
}
