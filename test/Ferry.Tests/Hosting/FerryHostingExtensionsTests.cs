using Ferry.Configuration;
using Ferry.Forwarding;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Routing;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;

namespace Ferry.Tests.Hosting;

// AddFerry and MapFerry (Ferry inside an ASP.NET Core app): what they read and register, without starting a server.
public sealed class FerryHostingExtensionsTests
{
    private static IConfiguration Configuration(Dictionary<string, string?> settings) =>
        new ConfigurationBuilder().AddInMemoryCollection(settings).Build();

    private static Dictionary<string, string?> Routes() => new()
    {
        ["Routes:all:ClusterId"] = "c",
        ["Routes:all:Match:PathPrefix"] = "/",
        ["Clusters:c:Destinations:one:Address"] = "http://127.0.0.1:9000/",
    };

    [Fact]
    public void LoadForHost_NeedsNoListener()
    {
        var result = FerryConfigLoader.LoadForHost(Configuration(Routes()));

        Assert.True(result.IsValid, string.Join("\n", result.Errors));
        Assert.Equal("all", Assert.Single(result.Config!.Routes).RouteId);
    }

    [Fact]
    public void LoadForHost_RefusesListenersAndAdmin()
    {
        var settings = Routes();
        settings["Listeners:public:Address"] = "127.0.0.1:8080";
        settings["Admin:Address"] = "127.0.0.1:9901";

        var result = FerryConfigLoader.LoadForHost(Configuration(settings));

        Assert.Equal(
            [
                "Listeners: not read when Ferry runs inside an ASP.NET Core app: the app's server takes the connections",
                "Admin: not read when Ferry runs inside an ASP.NET Core app: the app's server takes the connections",
            ],
            result.Errors);
    }

    [Fact]
    public void Load_StillNeedsAListenerForRoutes()
    {
        var result = FerryConfigLoader.Load(Configuration(Routes()));

        Assert.Equal(["Listeners: at least one listener is required when routes are defined"], result.Errors);
    }

    [Fact]
    public void AddFerry_ThrowsWithEachError()
    {
        var settings = Routes();
        settings["Routes:all:ClusterId"] = "missing";
        settings["Listeners:public:Address"] = "127.0.0.1:8080";

        var error = Assert.Throws<InvalidOperationException>(() => new ServiceCollection().AddFerry(Configuration(settings)));

        Assert.StartsWith("Ferry's configuration has 2 error(s): ", error.Message, StringComparison.Ordinal);
        Assert.Contains("Listeners: not read when Ferry runs inside an ASP.NET Core app", error.Message, StringComparison.Ordinal);
        Assert.Contains("Routes:all:ClusterId", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task AddFerry_RegistersTheForwarderOnTheConfiguredRoutes_AndHeaderDecoding()
    {
        var services = new ServiceCollection().AddLogging();
        services.AddFerry(Configuration(Routes()));
        await using var provider = services.BuildServiceProvider();

        Assert.NotNull(provider.GetRequiredService<Forwarder>());
        var state = provider.GetRequiredService<ProxyStateHolder>().Current;
        Assert.Equal(["one"], state.Clusters["c"].Destinations.Select(d => d.Id));
        var kestrel = provider.GetRequiredService<IOptions<KestrelServerOptions>>().Value;
        Assert.Same(RawConnectionHeader.Encoding, kestrel.RequestHeaderEncodingSelector("Connection"));
        Assert.Equal(System.Text.Encoding.Latin1, kestrel.ResponseHeaderEncodingSelector("X-Anything"));
    }

    [Fact]
    public async Task MapFerry_AddsOneCatchAllEndpoint()
    {
        await using var services = new ServiceCollection().AddLogging().AddRouting().AddFerry(Configuration(Routes())).BuildServiceProvider();
        var endpoints = new Endpoints(services);

        endpoints.MapFerry();

        var endpoint = Assert.IsType<RouteEndpoint>(Assert.Single(endpoints.DataSources.SelectMany(d => d.Endpoints)));
        Assert.Equal("/{**ferry}", endpoint.RoutePattern.RawText);
        Assert.Equal("Ferry", endpoint.DisplayName);
    }

    [Fact]
    public async Task MapFerry_WithoutAddFerry_SaysWhatIsMissing()
    {
        await using var services = new ServiceCollection().AddLogging().AddRouting().BuildServiceProvider();

        var error = Assert.Throws<InvalidOperationException>(() => new Endpoints(services).MapFerry());

        Assert.Equal("MapFerry needs services.AddFerry(configuration) first.", error.Message);
    }

    // The app's endpoint list without an app (which would need a server).
    private sealed class Endpoints(IServiceProvider services) : IEndpointRouteBuilder
    {
        public IServiceProvider ServiceProvider => services;
        public ICollection<EndpointDataSource> DataSources { get; } = [];
        public IApplicationBuilder CreateApplicationBuilder() => new ApplicationBuilder(services);
    }
}
