using System.Net;

namespace Ferry.Lab;

/// <summary>How one Lab upstream behaves: its address, keep-alive manners and load shape.</summary>
internal sealed record LabUpstreamOptions
{
    /// <summary>Body of "/" is "hello from {Name}\n"; every response carries <c>X-Upstream: {Name}</c>.</summary>
    public string Name { get; init; } = "upstream";

    public IPEndPoint EndPoint { get; init; } = new(IPAddress.Loopback, 0);

    /// <summary>Listen backlog. Linux clamps it to net.core.somaxconn and queues backlog + 1 connections,
    /// so tiny values reproduce SYN drops once the accept loop stops accepting (see <see cref="MaxConcurrentRequests"/>).</summary>
    public int Backlog { get; init; } = 512;

    /// <summary>Drives the idle timeout, <see cref="HandlerDelay"/>, <c>/delay/{ms}</c> and the Date header.</summary>
    public TimeProvider TimeProvider { get; init; } = TimeProvider.System;

    /// <summary>Close a connection that waited this long for the first byte of its next request (null: never).
    /// Measured like nginx's keepalive_timeout: from the end of the previous response.</summary>
    public TimeSpan? IdleTimeout { get; init; }

    /// <summary>Idle connections are closed by a periodic check instead of a timer per connection: every this long, the
    /// connections idle for <see cref="IdleTimeout"/> or longer are closed, so a close lands up to one interval after
    /// the timeout, at instants shared by all connections. Tomcat's NIO poller checks once a second. Null: each
    /// connection closes exactly at its own timeout.</summary>
    public TimeSpan? IdleCheckInterval { get; init; }

    /// <summary>With <see cref="IdleCheckInterval"/>: every accept and request also runs the check and restarts the
    /// interval, as gunicorn's gthread event loop does (it wakes on any event, otherwise after select(1.0)). Its 2 s
    /// keep-alive then closes at 2.0 s when quiet and anywhere up to 3 s under traffic.</summary>
    public bool IdleCheckOnTraffic { get; init; }

    /// <summary>The timeout announced in <c>Keep-Alive: timeout=N</c> when it differs from the one enforced, as Node's
    /// http server announces its keepAliveTimeout (5 s) and closes a second later. Null: announce <see cref="IdleTimeout"/>.</summary>
    public TimeSpan? AnnouncedIdleTimeout { get; init; }

    /// <summary>Close idle connections with RST (SO_LINGER 0) instead of FIN, as a crashed or firewalled peer would.</summary>
    public bool ResetOnIdleTimeout { get; init; }

    /// <summary>Send <c>Keep-Alive: timeout=N[, max=M]</c> (RFC 2068 §19.7.1, as Apache httpd does).</summary>
    public bool AnnounceKeepAlive { get; init; }

    /// <summary>Close after this many responses on one connection (nginx keepalive_requests, Apache MaxKeepAliveRequests).</summary>
    public int? MaxRequestsPerConnection { get; init; }

    /// <summary>Send "Connection: close" on the last allowed response; false closes silently with a FIN after it.</summary>
    public bool AnnounceLastRequest { get; init; } = true;

    /// <summary>False: every response is "Connection: close" and the connection closes after it.</summary>
    public bool KeepAlive { get; init; } = true;

    /// <summary>Requests handled at the same time; the others wait. While every slot is busy the accept loop
    /// stops accepting too, like a single-threaded worker (gunicorn sync), so new connections pile up in the
    /// listen backlog.</summary>
    public int MaxConcurrentRequests { get; init; } = int.MaxValue;

    /// <summary>Added before each request is handled (built-in routes and scripts alike).</summary>
    public TimeSpan HandlerDelay { get; init; }

    /// <summary>Serve HTTPS: each accepted connection is wrapped in TLS (1.2 or 1.3) with this certificate, and every
    /// close sends a close_notify before the FIN, as nginx does. Null: plain HTTP.</summary>
    public System.Security.Cryptography.X509Certificates.X509Certificate2? ServerCertificate { get; init; }

    /// <summary>With <see cref="ServerCertificate"/>: ask for a client certificate and accept only one this returns
    /// true for; a connection without one fails its handshake. Null: no client certificate is asked for.</summary>
    public Func<System.Security.Cryptography.X509Certificates.X509Certificate2, bool>? ClientCertificateCheck { get; init; }

    /// <summary>Replaces the built-in routes for every request when set (see <see cref="LabScripts"/>).
    /// A script may fall back to the routes with <see cref="LabRoutes.HandleAsync"/>.</summary>
    public Func<LabExchange, CancellationToken, Task>? Script { get; init; }
}
