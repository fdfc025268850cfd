using System.Diagnostics.Metrics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Ferry.Configuration;
using Ferry.Forwarding;
using Ferry.Loops;
using Ferry.Metrics;
using Ferry.Model;
using Ferry.Upstream;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.AspNetCore.Server.Kestrel.Https;

namespace Ferry.Hosting;

internal sealed record FerryServerOptions
{
    public TimeProvider TimeProvider { get; init; } = TimeProvider.System;
    public Action<ILoggingBuilder>? ConfigureLogging { get; init; }
    public TimeSpan ShutdownTimeout { get; init; } = RestartConfig.Default.ShutdownTimeout;

    /// <summary>How long <see cref="FerryServer.DrainAsync"/> keeps serving keep-alive connections (each response asking the
    /// client to close) before closing the idle ones.</summary>
    public TimeSpan DrainGrace { get; init; } = RestartConfig.Default.DrainGrace;

    /// <summary>Listening sockets taken over from a predecessor or passed by systemd; a listener whose address one
    /// is bound to serves on it instead of binding. Those no listener wants are closed.</summary>
    public IReadOnlyList<Socket> InheritedSockets { get; init; } = [];

    // The effective key/values the configuration was loaded from: its version, and the base a reload compares
    // restart-only sections against.
    public IConfiguration? Configuration { get; init; }

    // Where a reload reads the configuration again (file and overrides); null: the server cannot reload.
    public ConfigSource? Source { get; init; }

    // Whether changes to Source's file are reloaded without being asked (POST /reload and SIGHUP always work).
    public bool WatchFile { get; init; } = true;

    /// <summary>Makes the admin endpoints' handler (the executable's, Admin/AdminEndpoints). Null: no admin listener,
    /// whatever the configuration says.</summary>
    public AdminHandlerFactory? Admin { get; init; }
}

/// <summary>The admin endpoints' request handler over the live state, the proxy's services (metrics, certificates)
/// and the reloader that POST /reload drives.</summary>
internal delegate RequestDelegate AdminHandlerFactory(ProxyStateHolder state, AdminConfig config, IServiceProvider proxyServices, ConfigReloader reloader);

/// <summary>Set once the server begins to stop: the admin /healthz answers 503 and HTTP/1.x responses ask clients
/// to close their connections, so that they reconnect to wherever the listeners are served now.</summary>
internal sealed class DrainState
{
    private volatile bool _draining;

    public bool IsDraining => _draining;

    public void Begin() => _draining = true;
}

// The running proxy: Kestrel listeners for proxied traffic, a separate Kestrel for the admin endpoints (they never
// share a port with proxied traffic), and the live ProxyState both of them read.
internal sealed class FerryServer : IAsyncDisposable
{
    // The first Kestrel instance: it serves the listeners the server started with and holds the services that every
    // instance a reload starts shares (ProxyListeners).
    private readonly WebApplication _proxy;
    private readonly WebApplication? _admin;
    private readonly ProxyListeners _listeners;
    private readonly ListenSockets _adminSockets;
    private readonly DrainState _drain;
    private readonly TimeSpan _drainGrace;
    private readonly EventLoops? _loops;

    static FerryServer() => RefuseBareLineFeeds();

    // Kestrel accepts a bare LF as a line ending in request heads unless this switch is set; a front end and a back
    // end that disagree on where a line ends disagree on where a request ends (request smuggling). Process-wide.
    internal static void RefuseBareLineFeeds() =>
        AppContext.SetSwitch("Microsoft.AspNetCore.Server.Kestrel.DisableHttp1LineFeedTerminators", true);

    private FerryServer(WebApplication proxy, WebApplication? admin, ProxyListeners listeners, ListenSockets adminSockets, DrainState drain,
        TimeSpan drainGrace, ProxyStateHolder state, ConfigReloader reloader, Uri? adminUri, EventLoops? loops)
    {
        _loops = loops;
        _proxy = proxy;
        _admin = admin;
        _listeners = listeners;
        _adminSockets = adminSockets;
        _drain = drain;
        _drainGrace = drainGrace;
        State = state;
        Reloader = reloader;
        AdminUri = adminUri;
    }

    public ProxyStateHolder State { get; }
    public ConfigReloader Reloader { get; }
    /// <summary>The proxied listeners' addresses as they are now (a reload may change them), in the configuration's order.</summary>
    public IReadOnlyList<Uri> ListenerUris => [.. _listeners.Current.Select(l => l.Uri)];

    public Uri? ListenerUri(string name) =>
        _listeners.Current.FirstOrDefault(l => l.Config.Name.Equals(name, StringComparison.OrdinalIgnoreCase))?.Uri;
    public Uri? AdminUri { get; }

    /// <summary>The event loops serving the proxied listeners (Engine: Loops), or null with Kestrel's socket transport.</summary>
    internal EventLoops? Loops => _loops;
    public IServiceProvider Services => _proxy.Services;
    public bool IsDraining => _drain.IsDraining;

    /// <summary>Every listening socket, proxied and admin: what a successor takes over.</summary>
    public IReadOnlyList<Socket> ListeningSockets => [.. _listeners.Sockets, .. _adminSockets.Owned];

    /// <summary>The HTTPS listeners' certificates; <see cref="CertificateStore.Reload"/> loads changed files now.</summary>
    public CertificateStore Certificates => _proxy.Services.GetRequiredService<CertificateStore>();

    public static async Task<FerryServer> StartAsync(FerryConfig config, FerryServerOptions? options = null, CancellationToken cancellationToken = default)
    {
        options ??= new FerryServerOptions();
        var time = options.TimeProvider;
        // Every address is bound (or found among the inherited sockets) before anything accepts, so that a start that
        // fails on one listener has taken no connection on another, and a predecessor keeps serving untouched.
        var inherited = new ListenSockets(options.InheritedSockets);
        var opened = new List<ProxyListener>();
        var adminSockets = new ListenSockets();
        ProxyListeners? listeners = null;
        var drain = new DrainState();
        ProxyStateHolder? state = null;
        WebApplication? proxy = null;
        ConfigReloader? reloader = null;
        WebApplication? admin = null;
        EventLoops? loops = null;
        try
        {
            foreach (var listener in config.Listeners)
            {
                opened.Add(ProxyListeners.Open(listener, inherited));
            }
            listeners = new ProxyListeners(opened, time, options.DrainGrace);
            var adminEndPoint = config.Admin.Enabled && options.Admin is not null ? AdoptOrBind(inherited, adminSockets, config.Admin.EndPoint) : null;
            inherited.CloseUnclaimed();

            state = new ProxyStateHolder(ProxyState.Build(config, PoolFactory(time), time));
            var proxyState = state;
            var (started, socketsBecause) = StartLoops(config.Engine);
            loops = started;
            var engine = loops;
            proxy = CreateApp(options, ListenEndPoints(opened), captureConnection: true, engine, services =>
            {
                services.AddSingleton(proxyState);
                services.AddSingleton(time);
                services.AddSingleton(drain);
                services.AddSingleton<Forwarder>();
                services.AddSingleton(sp => new CertificateStore(config.Listeners, time, sp.GetRequiredService<ILogger<CertificateStore>>(), sp.GetService<IMeterFactory>()));
                if (engine is not null)
                {
                    // For the metrics and /status; the server owns and disposes them.
                    services.AddSingleton(engine);
                }
                services.AddFerryObservability(config);
            });
            if (loops is not null)
            {
                var loggers = proxy.Services.GetRequiredService<ILoggerFactory>();
                var loopLogger = loggers.CreateLogger<EventLoop>();
                loops.UseLogger(loopLogger);
                // Says which engine serves the listeners: the one line that tells a benchmark or an operator it is on.
                loopLogger.LogInformation("Proxied listeners served by {Count} event loops", loops.All.Count);
                if (config.Engine.StallThreshold > TimeSpan.Zero)
                {
                    loops.Watch(config.Engine.StallThreshold, loggers.CreateLogger<LoopWatchdog>());
                }
            }
            else if (socketsBecause is not null)
            {
                proxy.Services.GetRequiredService<ILoggerFactory>().CreateLogger<EventLoop>()
                    .LogWarning("Proxied listeners served by Kestrel's sockets (Engine Auto): {Reason}", socketsBecause);
            }
            var forwarder = proxy.Services.GetRequiredService<Forwarder>();
            RequestDelegate handle = context =>
            {
                var connection = context.Features.Get<ListenerConnectionFeature>();
                if (drain.IsDraining || connection is { Drain.IsDraining: true })
                {
                    AskToClose(context);
                }
                return forwarder.InvokeAsync(context, connection);
            };
            proxy.Run(handle);
            var shared = proxy.Services;
            listeners.CanStart(added =>
            {
                var app = CreateApp(options, ListenEndPoints(added), captureConnection: true, engine, services =>
                {
                    // Registered after the builder's own: the new instance logs, measures and reloads certificates
                    // through the first one's services.
                    services.AddSingleton(shared.GetRequiredService<ILoggerFactory>());
                    if (shared.GetService<IMeterFactory>() is { } meters)
                    {
                        services.AddSingleton(meters);
                    }
                    services.AddSingleton(shared.GetRequiredService<CertificateStore>());
                });
                app.Run(handle);
                return app;
            });
            reloader = new ConfigReloader(state, options.Configuration, options.Source, PoolFactory(time), time,
                proxy.Services.GetRequiredService<ILoggerFactory>().CreateLogger<ConfigReloader>(), proxy.Services.GetService<FerryMetrics>(),
                listeners, proxy.Services.GetRequiredService<CertificateStore>());

            await proxy.StartAsync(cancellationToken);
            if (adminEndPoint is not null && options.Admin is { } adminHandler)
            {
                admin = CreateApp(options, [(adminEndPoint, ListenerProtocols.Http1, null)], captureConnection: false, loops: null, services => services.AddSingleton(proxyState));
                admin.Run(adminHandler(state, config.Admin, proxy.Services, reloader));
                await admin.StartAsync(cancellationToken);
            }
            if (options.WatchFile)
            {
                reloader.WatchFile();
            }
        }
        catch
        {
            if (proxy is not null)
            {
                await proxy.DisposeAsync();
            }
            if (admin is not null)
            {
                await admin.DisposeAsync();
            }
            if (reloader is not null)
            {
                await reloader.DisposeAsync();
            }
            if (state is not null)
            {
                await state.Current.DisposeAsync();
            }
            foreach (var listener in opened)
            {
                listener.Sockets.Dispose();
            }
            inherited.Dispose();
            adminSockets.Dispose();
            loops?.Dispose();
            throw;
        }
        return new FerryServer(proxy, admin, listeners, adminSockets, drain, options.DrainGrace, state, reloader,
            admin is null ? null : Addresses(admin)[0], loops);
    }

    // The loops the engine asks for, or null and, with Auto, why the sockets serve instead. An explicit Loops that
    // cannot start fails the start: the operator asked for it. Auto falls back, since a container's seccomp profile
    // can refuse epoll or eventfd where the platform check passes.
    private static (EventLoops? Loops, string? SocketsBecause) StartLoops(EngineConfig engine)
    {
        switch (engine.Kind)
        {
            case EngineKind.Loops:
                return (new EventLoops(engine.EventLoops), null);
            case EngineKind.Auto when !Native.IsSupported:
                return (null, "event loops need Linux on a 64-bit processor");
            case EngineKind.Auto:
                try
                {
                    return (new EventLoops(engine.EventLoops), null);
                }
                catch (IOException ex)
                {
                    return (null, $"the event loops could not start: {ex.Message}");
                }
            default:
                return (null, null);
        }
    }

    private static IEnumerable<(EndPoint, ListenerProtocols, ProxyListener?)> ListenEndPoints(IEnumerable<ProxyListener> listeners) =>
        listeners.Select(l => ((EndPoint)new OwnedListenEndPoint(l.Socket, l.Sockets), l.Config.Protocols, (ProxyListener?)l));

    // The admin socket is inherited like the others but stops accepting separately: it stays up while proxied
    // traffic drains after a stop signal.
    private static OwnedListenEndPoint AdoptOrBind(ListenSockets inherited, ListenSockets admin, IPEndPoint endPoint) =>
        inherited.Release(endPoint) is { } socket ? new(admin.Adopt(socket), admin) : new(admin.Acquire(endPoint), admin);

    // While draining, an HTTP/1.x connection ends after its response (RFC 9112 §9.6): its client opens the next one
    // on whichever process now accepts. Upgrades keep their 101; HTTP/2 gets Kestrel's GOAWAY at stop.
    private static void AskToClose(HttpContext context)
    {
        if (HttpProtocol.IsHttp11(context.Request.Protocol) || HttpProtocol.IsHttp10(context.Request.Protocol))
        {
            context.Response.OnStarting(static state =>
            {
                var response = (HttpResponse)state;
                if (response.StatusCode != StatusCodes.Status101SwitchingProtocols)
                {
                    response.Headers.Connection = "close";
                }
                return Task.CompletedTask;
            }, context.Response);
        }
    }

    // Content-Length through a decoder that fails on anything but digits, so that Kestrel refuses "+5" (StrictContentLengthEncoding).
    private static Encoding StrictLatin1(string name) =>
        name.Equals("Content-Length", StringComparison.OrdinalIgnoreCase) ? StrictContentLengthEncoding.Instance : Encoding.Latin1;

    // Latin-1 both ways so that header bytes cross the proxy exactly as received (RFC 9110 §5.5: field values are
    // octets; only CR, LF and NUL are forbidden, and Kestrel rejects those). With captureConnection, Connection's
    // decoder also keeps the raw value, which Kestrel may shorten (RawConnectionHeader).
    internal static void UseHeaderEncodings(KestrelServerOptions kestrel, bool captureConnection)
    {
        kestrel.RequestHeaderEncodingSelector = captureConnection
            ? static name => name.Equals("Connection", StringComparison.OrdinalIgnoreCase) ? RawConnectionHeader.Encoding : StrictLatin1(name)
            : StrictLatin1;
        kestrel.ResponseHeaderEncodingSelector = _ => Encoding.Latin1;
    }

    internal static ConnectionPool.Factory PoolFactory(TimeProvider time) =>
        d => new ConnectionPool(d, d.Cluster.Config.KeepAlive, d.Cluster.Config.Timeouts.Connect, time);

    // loops: the event loops that serve the listeners (Engine: Loops); null: Kestrel's socket transport.
    private static WebApplication CreateApp(FerryServerOptions options, IEnumerable<(EndPoint EndPoint, ListenerProtocols Protocols, ProxyListener? Listener)> endPoints,
        bool captureConnection, EventLoops? loops, Action<IServiceCollection> services)
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
            UseHeaderEncodings(kestrel, captureConnection);
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
                        // First the connection's record (a reload that retires the listener closes it), then the PROXY
                        // protocol header, which a load balancer sends in clear before the client's TLS handshake;
                        // then TLS (connection middleware runs in the order it is added).
                        l.Use(next => connection => listener.ServeAsync(connection, next));
                        var logger = l.ApplicationServices.GetRequiredService<ILoggerFactory>().CreateLogger(typeof(ListenerConnection).FullName!);
                        ListenerConnection.Use(l, listener.Config, listener.Drain, options.TimeProvider, logger, l.ApplicationServices.GetService<IMeterFactory>());
                        if ((listener.Certificates ?? l.ApplicationServices.GetRequiredService<CertificateStore>().For(listener.Config.Name)) is { } certificates)
                        {
                            l.UseHttps(new TlsHandshakeCallbackOptions { OnConnection = certificates.OnConnection });
                        }
                    }
                });
            }
        });
        // Registered after Kestrel's socket transport, so Kestrel asks it first (for the endpoints it can bind).
        if (loops is null)
        {
            builder.Services.AddSingleton<IConnectionListenerFactory, OwnedSocketTransportFactory>();
        }
        else
        {
            builder.Services.AddSingleton<IConnectionListenerFactory>(sp => new OwnedLoopTransportFactory(loops, sp));
        }
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

    /// <summary>
    /// Hands the listeners to a successor that already serves on them: stops accepting on every socket, proxied and
    /// admin, without closing any socket (the successor holds them). <see cref="DrainAsync"/> follows.
    /// </summary>
    public async Task StopAcceptingAsync()
    {
        _drain.Begin();
        await _listeners.StopAcceptingAsync();
        await _adminSockets.StopAcceptingAsync();
    }

    /// <summary>
    /// The way out after a stop signal or a handover: stop accepting proxied connections, keep serving the open ones
    /// for the drain grace (each HTTP/1.x response with "Connection: close", so that busy keep-alive clients leave
    /// between two requests rather than find their connection closed under a request), then stop: in-flight requests
    /// finish within the shutdown timeout, idle connections are closed.
    /// </summary>
    public async Task DrainAsync(CancellationToken cancellationToken = default)
    {
        _drain.Begin();
        await _listeners.StopAcceptingAsync();
        if (_drainGrace > TimeSpan.Zero)
        {
            try
            {
                await Task.Delay(_drainGrace, cancellationToken);
            }
            catch (OperationCanceledException)
            {
                // Asked to hurry: stop at once.
            }
        }
        await StopAsync(cancellationToken);
    }

    public async Task StopAsync(CancellationToken cancellationToken = default)
    {
        _drain.Begin();
        // Proxied traffic drains first; the admin endpoints stay up meanwhile so the drain can be watched.
        await Task.WhenAll(_proxy.StopAsync(cancellationToken), _listeners.StopAsync(cancellationToken));
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
        await _listeners.DisposeAsync();
        await State.Current.DisposeAsync();
        _adminSockets.Dispose();
        // Last: every Kestrel instance has closed its connections, so no descriptor is left on a loop.
        _loops?.Dispose();
    }
}
