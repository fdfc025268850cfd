using System.Net;
using Microsoft.Extensions.Configuration;

namespace Ferry.Configuration;

/// <summary>The whole validated configuration. Routes are in the order they must be tried.</summary>
internal sealed record FerryConfig(
    IReadOnlyList<ListenerConfig> Listeners,
    AdminConfig Admin,
    ProxyStatusConfig ProxyStatus,
    IReadOnlyList<RouteConfig> Routes,
    IReadOnlyDictionary<string, ClusterConfig> Clusters)
{
    public RequestLimitsConfig Limits { get; init; } = RequestLimitsConfig.Default;
    public IReadOnlyDictionary<string, RateLimiterPolicyConfig> RateLimiterPolicies { get; init; } =
        new Dictionary<string, RateLimiterPolicyConfig>(StringComparer.OrdinalIgnoreCase);
    public AccessLogConfig AccessLog { get; init; } = AccessLogConfig.Default;
    public MetricsConfig Metrics { get; init; } = MetricsConfig.Default;
    public TracingConfig Tracing { get; init; } = TracingConfig.Default;
    public RestartConfig Restart { get; init; } = RestartConfig.Default;
    public EngineConfig Engine { get; init; } = EngineConfig.Default;
}

/// <summary>A client-facing endpoint. "*:port" binds <see cref="IPAddress.Any"/>.</summary>
internal sealed record ListenerConfig(string Name, IPEndPoint EndPoint, ListenerProtocols Protocols = ListenerProtocols.Http1)
{
    // Nobody by default: forwarding headers and PROXY protocol headers say whatever their sender wants.
    public IReadOnlyList<IPNetwork> TrustedProxies { get; init; } = [];

    public bool ProxyProtocol { get; init; }

    public AmbiguousPaths AmbiguousPaths { get; init; } = AmbiguousPaths.Reject;

    // Null: plain HTTP.
    public ListenerTlsConfig? Tls { get; init; }

    // Null: no Strict-Transport-Security header from Ferry.
    public HstsConfig? Hsts { get; init; }

    // Set: the listener answers every request with a redirect to https and forwards nothing.
    public RedirectToHttpsConfig? RedirectToHttps { get; init; }

    public bool Trusts(IPAddress? peer)
    {
        if (peer is null)
        {
            return false;
        }
        if (peer.IsIPv4MappedToIPv6)
        {
            peer = peer.MapToIPv4();
        }
        foreach (var network in TrustedProxies)
        {
            if (network.Contains(peer))
            {
                return true;
            }
        }
        return false;
    }
}

/// <summary>What a listener does with a request path that servers interpret differently (docs/decisions/2026-12-02-path-normalization.md).</summary>
internal enum AmbiguousPaths
{
    Reject,
    Normalize,
}

/// <summary>What clients may speak to a listener. Without TLS there is no ALPN, so HTTP/2 means prior knowledge (h2c)
/// and excludes HTTP/1.x on the same listener; with TLS, ALPN offers h2, http/1.1 or both (Http1AndHttp2).</summary>
internal enum ListenerProtocols
{
    Http1,
    Http2,
    Http1AndHttp2,
}

/// <summary>
/// An HTTPS listener: the certificate for clients that send no server name or one not in <see cref="Sni"/> (none: the
/// handshake fails for them), certificates per server name ("api.example.com", "*.example.com"), and the TLS versions
/// offered.
/// </summary>
internal sealed record ListenerTlsConfig(CertificateSource? Default, IReadOnlyList<SniCertificate> Sni, System.Security.Authentication.SslProtocols SslProtocols)
{
    public const System.Security.Authentication.SslProtocols DefaultSslProtocols =
        System.Security.Authentication.SslProtocols.Tls12 | System.Security.Authentication.SslProtocols.Tls13;

    public IEnumerable<CertificateSource> Certificates =>
        Default is null ? Sni.Select(s => s.Certificate) : Sni.Select(s => s.Certificate).Prepend(Default);
}

/// <summary>A certificate for one server name; <see cref="Host"/> is lower case, "*.example.com" for a wildcard.</summary>
internal sealed record SniCertificate(string Host, CertificateSource Certificate);

/// <summary>Strict-Transport-Security (RFC 6797) sent on every response of an HTTPS listener.</summary>
internal sealed record HstsConfig(TimeSpan MaxAge, bool IncludeSubDomains, bool Preload)
{
    // One year: what the HSTS preload list asks for, and long enough to cover the time between visits.
    public static readonly TimeSpan DefaultMaxAge = TimeSpan.FromDays(365);

    public string HeaderValue { get; } = $"max-age={(long)MaxAge.TotalSeconds}{(IncludeSubDomains ? "; includeSubDomains" : "")}{(Preload ? "; preload" : "")}";
}

/// <summary>A plain-HTTP listener that redirects every request to https://host[:Port] with the same path and query.</summary>
internal sealed record RedirectToHttpsConfig(int Port)
{
    public const int DefaultPort = 443;
}

internal sealed record AdminConfig(bool Enabled, IPEndPoint EndPoint)
{
    // Loopback only by default: the admin endpoint exposes internal addresses and must not be reachable from outside
    // unless someone decides so. 9901 is Envoy's admin port, familiar to operators.
    public static AdminConfig Default { get; } = new(Enabled: true, new IPEndPoint(IPAddress.Loopback, 9901));

    // When set, every admin endpoint but /healthz requires "Authorization: Bearer <token>".
    public string? Token { get; init; }

    // Host names the admin listener answers to besides localhost and IP literals ("*": any). Without this check, a
    // web page whose name is rebound to 127.0.0.1 (DNS rebinding) could read /status from the operator's browser.
    public IReadOnlyList<string> AllowedHosts { get; init; } = [];
}

internal sealed record ProxyStatusConfig(bool IncludeDetails)
{
    // Next-hop addresses and connection details are internal; by default clients only see the error type
    // (RFC 9209 §2 lets a proxy omit any parameter) and the details go to the access log.
    public static ProxyStatusConfig Default { get; } = new(IncludeDetails: false);

    public static ProxyStatusConfig Read(ConfigReader reader, IConfiguration root)
    {
        var section = reader.Section(root, "ProxyStatus");
        using var keys = reader.CheckKeys(section);
        return new ProxyStatusConfig(reader.Bool(section, "IncludeDetails", Default.IncludeDetails));
    }
}

/// <summary>The root Limits section: Limits:MaxRequestBodySize is the default of every route's MaxRequestBodySize.</summary>
internal sealed record RequestLimitsConfig(long MaxRequestBodySize)
{
    // 100 MiB: nginx's 1 MiB breaks ordinary uploads behind a proxy that knows nothing of the application, and
    // Kestrel's 30 MB still stops video and archive uploads. Ferry streams bodies, so the limit protects destinations
    // from runaway or hostile uploads rather than Ferry's memory; 100 MiB is also the request size common CDN plans
    // accept, which applications on the internet are already built around.
    public const long DefaultMaxRequestBodySize = 100L * 1024 * 1024;

    public static RequestLimitsConfig Default { get; } = new(DefaultMaxRequestBodySize);

    public static RequestLimitsConfig Read(ConfigReader reader, IConfiguration root)
    {
        var section = reader.Section(root, "Limits");
        using var keys = reader.CheckKeys(section);
        return new RequestLimitsConfig(reader.Size(section, "MaxRequestBodySize", DefaultMaxRequestBodySize));
    }
}

/// <summary>How a process stops and hands its listeners to a successor (docs/operations.md).</summary>
internal sealed record RestartConfig(string? ControlSocket, TimeSpan ShutdownTimeout, TimeSpan DrainGrace)
{
    // 30 s: ASP.NET Core's own shutdown timeout; requests running longer are cut. A second of grace lets busy
    // keep-alive clients leave on a "Connection: close" rather than meet a closed connection.
    public static RestartConfig Default { get; } = new(null, TimeSpan.FromSeconds(30), TimeSpan.FromSeconds(1));

    public static RestartConfig Read(ConfigReader reader, IConfiguration root)
    {
        var section = reader.Section(root, "Restart");
        using var keys = reader.CheckKeys(section);
        var controlSocket = reader.String(section, "ControlSocket");
        if (controlSocket is not null && !System.IO.Path.IsPathFullyQualified(controlSocket))
        {
            // The successor finds it by the same name whatever its working directory.
            reader.Error(section.GetSection("ControlSocket").Path, $"'{controlSocket}' must be an absolute path");
            controlSocket = null;
        }
        return new RestartConfig(
            controlSocket,
            reader.Duration(section, "ShutdownTimeout", Default.ShutdownTimeout),
            reader.Duration(section, "DrainGrace", Default.DrainGrace));
    }
}

/// <summary>What serves the client connections of the proxied listeners (docs/decisions/2026-12-03-event-loops.md).</summary>
internal enum EngineKind
{
    // Kestrel's own socket transport: portable; what Auto falls back to.
    Sockets,

    // Ferry's event loops, one thread and one epoll instance each, with Kestrel's request processing run on the loop
    // that read the bytes. Linux only.
    Loops,

    // Loops where they can run (Linux on 64-bit, epoll and eventfd allowed), else Sockets: chosen when the server
    // starts, and said in its log and in /status. The default (docs/decisions/2026-12-03-loops-by-default.md).
    Auto,
}

/// <summary>The top-level Engine, EventLoops and EventLoopStallThreshold settings: restart-only, the transport is chosen once at start.</summary>
internal sealed record EngineConfig(EngineKind Kind, int EventLoops)
{
    public static EngineConfig Default { get; } = new(EngineKind.Auto, 0);

    // A loop is a thread; far more than the machine's processors only adds context switches.
    public const int MaxEventLoops = 1024;

    // Serving one small request on a loop takes tens of microseconds: a batch of work 10 ms long is hundreds of
    // requests' worth, or something that blocked.
    public static readonly TimeSpan DefaultStallThreshold = TimeSpan.FromMilliseconds(10);

    /// <summary>How long a loop may stay in one batch of work before the watchdog reports it; zero: no watchdog.</summary>
    public TimeSpan StallThreshold { get; init; } = DefaultStallThreshold;

    public static EngineConfig Read(ConfigReader reader, IConfiguration root)
    {
        var kind = reader.Choice(root, "Engine", Default.Kind, "an engine", ("Sockets", EngineKind.Sockets), ("Loops", EngineKind.Loops),
            ("Auto", EngineKind.Auto));
        var loops = reader.Int(root, "EventLoops", Default.EventLoops, min: 0, max: MaxEventLoops);
        var threshold = reader.Duration(root, "EventLoopStallThreshold", DefaultStallThreshold);
        if (threshold > TimeSpan.Zero && threshold < TimeSpan.FromMilliseconds(1))
        {
            // The watchdog checks every half threshold and cannot sleep for less than about a millisecond.
            reader.Error("EventLoopStallThreshold", $"'{root["EventLoopStallThreshold"]}' must be 0 (no watchdog) or at least 1ms");
            threshold = DefaultStallThreshold;
        }
        if (kind == EngineKind.Loops && !Ferry.Loops.Native.IsSupported)
        {
            reader.Error("Engine", "'Loops' needs Linux on a 64-bit processor; use 'Sockets' here");
        }
        if (kind == EngineKind.Sockets)
        {
            foreach (var key in new[] { "EventLoops", "EventLoopStallThreshold" })
            {
                if (root.GetSection(key).Value is { Length: > 0 })
                {
                    reader.Warning(key, "only read with Engine 'Loops' or 'Auto'");
                }
            }
        }
        return new EngineConfig(kind, loops) { StallThreshold = threshold };
    }
}
