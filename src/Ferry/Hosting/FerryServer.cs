using System.Diagnostics.Metrics;
using System.Net;
using System.Text;
using Ferry.Admin;
using Ferry.Configuration;
using Ferry.Forwarding;
using Ferry.Metrics;
using Ferry.Model;
using Ferry.Upstream;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.AspNetCore.Server.Kestrel.Https;

namespace Ferry.Hosting;

internal sealed record FerryServerOptions
{
    public TimeProvider TimeProvider { get; init; } = TimeProvider.System;
    public Action<ILoggingBuilder>? ConfigureLogging { get; init; }
    public TimeSpan ShutdownTimeout { get; init; } = TimeSpan.FromSeconds(30);

    // The effective key/values the configuration was loaded from: its version, and the base a reload compares
    // restart-only sections against.
    public IConfiguration? Configuration { get; init; }

    // Where a reload reads the configuration again (file and overrides); null: the server cannot reload.
    public ConfigSource? Source { get; init; }

    // Whether changes to Source's file are reloaded without being asked (POST /reload and SIGHUP always work).
    public bool WatchFile { get; init; } = true;
}

// The running proxy: Kestrel listeners for proxied traffic, a separate Kestrel for the admin endpoints (they never
// share a port with proxied traffic), and the live ProxyState both of them read.
internal sealed class FerryServer : IAsyncDisposable
{
    private readonly WebApplication _proxy;
    private readonly WebApplication? _admin;

    static FerryServer()
    {
        // Kestrel accepts a bare LF as a line ending in request heads unless this switch is set; a front end and a
        // back end that disagree on where a line ends disagree on where a request ends (request smuggling).
        AppContext.SetSwitch("Microsoft.AspNetCore.Server.Kestrel.DisableHttp1LineFeedTerminators", true);
    }

    private FerryServer(WebApplication proxy, WebApplication? admin, ProxyStateHolder state, ConfigReloader reloader, IReadOnlyList<Uri> listeners, Uri? adminUri)
    {
        _proxy = proxy;
        _admin = admin;
        State = state;
        Reloader = reloader;
        ListenerUris = listeners;
        AdminUri = adminUri;
    }

    public ProxyStateHolder State { get; }
    public ConfigReloader Reloader { get; }
    public IReadOnlyList<Uri> ListenerUris { get; }
    public Uri? AdminUri { get; }
    public IServiceProvider Services => _proxy.Services;

    /// <summary>The HTTPS listeners' certificates; <see cref="CertificateStore.Reload"/> loads changed files now.</summary>
    public CertificateStore Certificates => _proxy.Services.GetRequiredService<CertificateStore>();

    public static async Task<FerryServer> StartAsync(FerryConfig config, FerryServerOptions? options = null, CancellationToken cancellationToken = default)
    {
        options ??= new FerryServerOptions();
        var time = options.TimeProvider;
        var state = new ProxyStateHolder(ProxyState.Build(config, PoolFactory(time), time));

        var proxy = CreateApp(options, config.Listeners.Select(l => (l.EndPoint, l.Protocols, (ListenerConfig?)l)), captureConnection: true, services =>
        {
            services.AddSingleton(state);
            services.AddSingleton(time);
            services.AddSingleton<Forwarder>();
            services.AddSingleton(sp => new CertificateStore(config.Listeners, time, sp.GetRequiredService<ILogger<CertificateStore>>(), sp.GetService<IMeterFactory>()));
            services.AddFerryObservability(config);
        });
        var forwarder = proxy.Services.GetRequiredService<Forwarder>();
        proxy.Run(forwarder.InvokeAsync);
        var reloader = new ConfigReloader(state, options.Configuration, options.Source, PoolFactory(time), time,
            proxy.Services.GetRequiredService<ILoggerFactory>().CreateLogger<ConfigReloader>(), proxy.Services.GetService<FerryMetrics>());

        WebApplication? admin = null;
        try
        {
            await proxy.StartAsync(cancellationToken);
            if (config.Admin.Enabled)
            {
                admin = CreateApp(options, [(config.Admin.EndPoint, ListenerProtocols.Http1, null)], captureConnection: false, services => services.AddSingleton(state));
                admin.Run(AdminEndpoints.Create(state, config.Admin, proxy.Services, reloader).InvokeAsync);
                await admin.StartAsync(cancellationToken);
            }
            if (options.WatchFile)
            {
                reloader.WatchFile();
            }
        }
        catch
        {
            await proxy.DisposeAsync();
            if (admin is not null)
            {
                await admin.DisposeAsync();
            }
            await reloader.DisposeAsync();
            await state.Current.DisposeAsync();
            throw;
        }
        return new FerryServer(proxy, admin, state, reloader, Addresses(proxy), admin is null ? null : Addresses(admin)[0]);
    }

    // Content-Length through a decoder that fails on anything but digits, so that Kestrel refuses "+5" (StrictContentLengthEncoding).
    private static Encoding StrictLatin1(string name) =>
        name.Equals("Content-Length", StringComparison.OrdinalIgnoreCase) ? StrictContentLengthEncoding.Instance : Encoding.Latin1;

    internal static ConnectionPool.Factory PoolFactory(TimeProvider time) =>
        d => new ConnectionPool(d, d.Cluster.Config.KeepAlive, d.Cluster.Config.Timeouts.Connect, time);

    private static WebApplication CreateApp(FerryServerOptions options, IEnumerable<(IPEndPoint EndPoint, ListenerProtocols Protocols, ListenerConfig? Listener)> endPoints,
        bool captureConnection, Action<IServiceCollection> services)
    {
        var builder = WebApplication.CreateEmptyBuilder(new WebApplicationOptions());
        if (options.ConfigureLogging is { } configureLogging)
        {
            configureLogging(builder.Logging);
        }
        else
        {
            DefaultLogging(builder.Logging);
        }
        builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = options.ShutdownTimeout);
        builder.WebHost.UseKestrelCore().ConfigureKestrel(kestrel =>
        {
            kestrel.AddServerHeader = false;
            // No server-wide limit: the forwarder sets each request's limit to its route's MaxRequestBodySize.
            kestrel.Limits.MaxRequestBodySize = null;
            // Latin-1 both ways so that header bytes cross the proxy exactly as received (RFC 9110 §5.5: field
            // values are octets; only CR, LF and NUL are forbidden, and Kestrel rejects those).
            // Connection's decoder also keeps the raw value, which Kestrel may shorten (RawConnectionHeader).
            kestrel.RequestHeaderEncodingSelector = captureConnection
                ? static name => name.Equals("Connection", StringComparison.OrdinalIgnoreCase) ? RawConnectionHeader.Encoding : StrictLatin1(name)
                : StrictLatin1;
            kestrel.ResponseHeaderEncodingSelector = _ => Encoding.Latin1;
            foreach (var (endPoint, protocols, listener) in endPoints)
            {
                kestrel.Listen(endPoint, l =>
                {
                    l.Protocols = protocols switch
                    {
                        ListenerProtocols.Http2 => HttpProtocols.Http2,
                        ListenerProtocols.Http1AndHttp2 => HttpProtocols.Http1AndHttp2,
                        _ => HttpProtocols.Http1,
                    };
                    if (listener is not null)
                    {
                        // First the PROXY protocol header, which a load balancer sends in clear before the client's
                        // TLS handshake; then TLS (connection middleware runs in the order it is added).
                        var logger = l.ApplicationServices.GetRequiredService<ILoggerFactory>().CreateLogger(typeof(ListenerConnection).FullName!);
                        ListenerConnection.Use(l, listener, options.TimeProvider, logger, l.ApplicationServices.GetService<IMeterFactory>());
                        if (l.ApplicationServices.GetRequiredService<CertificateStore>().For(listener.Name) is { } certificates)
                        {
                            l.UseHttps(new TlsHandshakeCallbackOptions { OnConnection = certificates.OnConnection });
                        }
                    }
                });
            }
        });
        services(builder.Services);
        return builder.Build();
    }

    public static void DefaultLogging(ILoggingBuilder logging)
    {
        logging.AddSimpleConsole(o =>
        {
            o.SingleLine = true;
            o.TimestampFormat = "yyyy-MM-ddTHH:mm:ss.fffZ ";
            o.UseUtcTimestamp = true;
        });
        logging.SetMinimumLevel(LogLevel.Information);
        logging.AddFilter("Microsoft", LogLevel.Warning);
        // ASP.NET Core's hosting diagnostics log nothing above Information, yet while that category is enabled at any
        // level, hosting starts an Activity and a logging scope for every request to give those lines a trace id.
        // Ferry's access log covers what they would say, and its own spans are created when tracing is on.
        logging.AddFilter("Microsoft.AspNetCore.Hosting.Diagnostics", LogLevel.None);
    }

    private static IReadOnlyList<Uri> Addresses(WebApplication app) =>
        app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses
            .Select(a => new Uri(a.Replace("://[::]", "://[::1]", StringComparison.Ordinal).Replace("://0.0.0.0", "://127.0.0.1", StringComparison.Ordinal)))
            .ToArray();

    public async Task StopAsync(CancellationToken cancellationToken = default)
    {
        // Proxied traffic drains first; the admin endpoints stay up meanwhile so the drain can be watched.
        await _proxy.StopAsync(cancellationToken);
        if (_admin is not null)
        {
            await _admin.StopAsync(cancellationToken);
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _proxy.DisposeAsync();
        if (_admin is not null)
        {
            await _admin.DisposeAsync();
        }
        // Draining pools of removed destinations are disposed here; a reload can no longer start.
        await Reloader.DisposeAsync();
        await State.Current.DisposeAsync();
    }
}
