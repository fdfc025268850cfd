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

    /// <summary>Look for connections idle longer than <see cref="IdleTimeout"/> only this often (null: each closes at
    /// its own deadline). Tomcat's NIO poller looks once a second, so its connections close up to a second after their
    /// timeout, at instants shared by all of them.</summary>
    public TimeSpan? IdleSweepInterval { get; init; }

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

    /// <summary>Replaces the built-in routes for every request when set (see <see cref="LabScripts"/>).
    /// A script may fall back to the routes with <see cref="LabRoutes.HandleAsync"/>.</summary>
    public Func<LabExchange, CancellationToken, Task>? Script { get; init; }
}
