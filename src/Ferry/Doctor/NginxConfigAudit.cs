using System.Globalization;

namespace Ferry.Doctor;

/// <summary>
/// Finds the nginx settings that produce intermittent 502s: connections that are never reused (HTTP/1.0, the
/// Connection header, no keepalive), reused too long (keepalive_timeout at or above the backend's), churned
/// (keepalive too small), and failure accounting that can eject every server.
/// </summary>
internal static class NginxConfigAudit
{
    // nginx's upstream keepalive_timeout default (ngx_http_upstream_keepalive_module).
    private static readonly TimeSpan DefaultKeepAliveTimeout = TimeSpan.FromSeconds(60);

    // nginx's upstream keepalive_requests default since 1.19.10 (100 before).
    private const int DefaultKeepAliveRequests = 1000;

    // The value in the keepalive directive's documentation example, copied into most configurations.
    private const int DocumentationKeepAlive = 32;

    // NGX_LISTEN_BACKLOG on Linux; the kernel caps any value at net.core.somaxconn (4096 since Linux 5.4, 128 before).
    private const int NginxDefaultBacklog = 511;
    private const int ModernSomaxconn = 4096;

    private const string FerryHttp11 = "Ferry always speaks HTTP/1.1 to destinations and never forwards Connection or other hop-by-hop headers.";
    private const string FerryPool = "Ferry pools connections to every destination (KeepAlive:MaxIdle, default 1024 per destination).";

    public static IReadOnlyList<NginxFinding> Audit(IReadOnlyList<NginxDirective> root, string mainFile, NginxAuditConfig config)
    {
        var findings = new List<NginxFinding>();
        foreach (var http in NginxContexts.Http(root, mainFile))
        {
            var upstreams = http.Children("upstream").Where(u => u.Block is not null)
                .GroupBy(u => u.Arg(0), StringComparer.OrdinalIgnoreCase)
                .ToDictionary(g => g.Key, g => g.Last(), StringComparer.OrdinalIgnoreCase);
            foreach (var upstream in upstreams.Values)
            {
                AuditUpstream(upstream, config, findings);
            }

            var httpScope = Scope.Root.Enter(http);
            foreach (var server in http.Children("server").Where(s => s.Block is not null))
            {
                foreach (var listen in server.Children("listen"))
                {
                    AuditListen(listen, findings);
                }

                AuditProxyPasses(server, httpScope.Enter(server), upstreams, findings);
            }
        }

        return findings.OrderBy(f => f.File, StringComparer.Ordinal).ThenBy(f => f.Line).ToList();
    }

    /// <summary>The proxy settings in force at a level, following nginx's inheritance rules.</summary>
    private sealed record Scope(NginxDirective? HttpVersion, IReadOnlyList<NginxDirective> Headers, IReadOnlyList<NginxDirective> Discarded)
    {
        public static Scope Root { get; } = new(null, [], []);

        public Scope Enter(NginxDirective level)
        {
            var version = level.Child("proxy_http_version") ?? HttpVersion;
            var headers = level.Children("proxy_set_header").ToList();
            // proxy_set_header is inherited only when the level has none of its own: one proxy_set_header at a level
            // discards the parent's entire list (ngx_http_proxy_module documentation).
            return headers.Count == 0
                ? this with { HttpVersion = version }
                : new Scope(version, headers, Headers);
        }
    }

    private static void AuditProxyPasses(NginxDirective level, Scope scope, Dictionary<string, NginxDirective> upstreams, List<NginxFinding> findings)
    {
        foreach (var proxyPass in level.Children("proxy_pass"))
        {
            AuditProxyPass(level, proxyPass, scope, upstreams, findings);
        }

        foreach (var child in (level.Block ?? []).Where(d => d.Block is not null && d.Name is "location" or "if" or "limit_except"))
        {
            AuditProxyPasses(child, scope.Enter(child), upstreams, findings);
        }
    }

    private static void AuditProxyPass(NginxDirective level, NginxDirective proxyPass, Scope scope,
        Dictionary<string, NginxDirective> upstreams, List<NginxFinding> findings)
    {
        var target = ProxyPassTarget.Parse(proxyPass.Arg(0));
        NginxDirective? upstream = null;
        if (target is not null && !target.HasVariables && target.Port is null)
        {
            upstreams.TryGetValue(target.Name, out upstream);
        }

        var keepAlive = upstream?.Child("keepalive") is not null;
        var lost = keepAlive ? $" The keepalive in upstream \"{upstream!.Arg(0)}\" ({upstream.Location}) is wasted." : "";

        if (scope.HttpVersion is not { } version || version.Arg(0) != "1.1")
        {
            var why = scope.HttpVersion is null ? "no proxy_http_version in scope" : $"proxy_http_version {scope.HttpVersion.Arg(0)} at {scope.HttpVersion.Location}";
            findings.Add(new NginxFinding("http10-upstream", keepAlive ? FindingSeverity.Error : FindingSeverity.Warning,
                proxyPass.File, proxyPass.Line,
                $"\"{proxyPass}\" speaks HTTP/1.0 to the upstream ({why}; 1.0 is nginx's default). An HTTP/1.0 connection is closed after every " +
                $"request, so every request pays a connect and leaves a TIME_WAIT socket behind.{lost}",
                "proxy_http_version 1.1;  (in this location, or once in the server or http block)", FerryHttp11));
        }

        var connection = scope.Headers.LastOrDefault(h => h.Arg(0).Equals("Connection", StringComparison.OrdinalIgnoreCase));
        if (connection is null)
        {
            var parent = scope.Discarded.LastOrDefault(h => h.Arg(0).Equals("Connection", StringComparison.OrdinalIgnoreCase));
            var inheritance = parent is null
                ? ""
                : $" The proxy_set_header Connection at {parent.Location} does not apply here: this level has its own proxy_set_header " +
                  $"({scope.Headers[0].Location}), and one proxy_set_header at a level discards the parent's entire list.";
            findings.Add(new NginxFinding("connection-header", keepAlive ? FindingSeverity.Error : FindingSeverity.Warning,
                proxyPass.File, proxyPass.Line,
                $"\"{proxyPass}\" sends \"Connection: close\" to the upstream: nginx adds it unless proxy_set_header Connection is in " +
                $"scope, so the upstream closes the connection after each response.{inheritance}{lost}",
                "proxy_set_header Connection \"\";  (next to the other proxy_set_header lines of this level)", FerryHttp11));
        }
        else if (connection.Arg(1).Contains('$'))
        {
            findings.Add(new NginxFinding("connection-header", FindingSeverity.Info, connection.File, connection.Line,
                $"\"{connection}\" sets Connection from a variable: the usual WebSocket map ('' close) closes every ordinary request's connection.",
                "map $http_upgrade $connection_upgrade { default upgrade; '' \"\"; }  so ordinary requests send no Connection header", FerryHttp11));
        }
        else if (connection.Arg(1).Length > 0)
        {
            findings.Add(new NginxFinding("connection-header", keepAlive ? FindingSeverity.Error : FindingSeverity.Warning,
                connection.File, connection.Line,
                $"\"{connection}\" tells the upstream to close the connection after each response.{lost}",
                "proxy_set_header Connection \"\";", FerryHttp11));
        }

        if (target is { HasVariables: false } && upstream is null && !target.Name.StartsWith("unix:", StringComparison.Ordinal))
        {
            findings.Add(new NginxFinding("literal-proxy-pass", FindingSeverity.Warning, proxyPass.File, proxyPass.Line,
                $"\"{proxyPass}\" names an address, not an upstream block: keepalive can only be set in an upstream block, so nginx " +
                "opens a new connection for every request (TIME_WAIT sockets pile up until connect() fails with EADDRNOTAVAIL).",
                $"upstream {target.Name} {{ server {target.Name}:{target.Port ?? (target.Scheme == "https" ? 443 : 80)}; keepalive 64; }}  and proxy_pass {target.Scheme}://{target.Name}{target.Uri};",
                FerryPool));
        }
    }

    private static void AuditUpstream(NginxDirective upstream, NginxAuditConfig config, List<NginxFinding> findings)
    {
        var name = upstream.Arg(0);
        var servers = upstream.Children("server").Select(NginxUpstreamServer.Parse).ToList();
        var keepAlive = upstream.Child("keepalive");
        if (keepAlive is null)
        {
            findings.Add(new NginxFinding("no-upstream-keepalive", FindingSeverity.Warning, upstream.File, upstream.Line,
                $"upstream \"{name}\" has no keepalive: nginx closes every connection to it after one request, whatever " +
                "proxy_http_version says, and connection churn ends in port exhaustion under load.",
                "keepalive 64;  (at least twice the peak concurrent requests per worker) plus proxy_http_version 1.1 and proxy_set_header Connection \"\" where it is used",
                FerryPool));
        }
        else if (int.TryParse(keepAlive.Arg(0), NumberStyles.None, CultureInfo.InvariantCulture, out var idle))
        {
            var threshold = config.Concurrency is { } c ? 2 * c : DocumentationKeepAlive + 1;
            if (idle < threshold)
            {
                var concurrency = config.Concurrency is { } known
                    ? $"below twice the expected concurrency ({known})"
                    : $"{idle} is the documentation example's value (32) or less";
                findings.Add(new NginxFinding("keepalive-small", FindingSeverity.Warning, keepAlive.File, keepAlive.Line,
                    $"keepalive {idle} in upstream \"{name}\": {concurrency}. keepalive is the number of idle connections each worker " +
                    $"caches; when more than {idle} requests are in flight, the extra connections are closed as they finish and reopened at " +
                    "the next burst: churn, TIME_WAIT sockets, and eventually EADDRNOTAVAIL.",
                    $"keepalive {(config.Concurrency is { } peak ? 2 * peak : 2 * DocumentationKeepAlive)};  (2× the peak concurrent requests per worker to this upstream)",
                    FerryPool));
            }
        }

        if (keepAlive is not null)
        {
            AuditKeepAliveTimeout(upstream, config, findings);
            AuditKeepAliveRequests(upstream, config, findings);
        }

        var primaries = servers.Where(s => !s.Backup && !s.Down).ToList();
        // A single-server upstream is never marked failed (ngx_http_upstream_round_robin.c skips max_fails when
        // peers->single), so ejection needs two servers or more.
        if (primaries.Count >= 2 && !servers.Any(s => s.Backup) && primaries.All(s => s.MaxFails > 0))
        {
            var rule = primaries.All(s => s.MaxFails == 1 && s.FailTimeout == TimeSpan.FromSeconds(10))
                ? "the defaults max_fails=1 fail_timeout=10s"
                : string.Join(", ", primaries.Select(s => $"{s.Address} max_fails={s.MaxFails} fail_timeout={NginxTime.Format(s.FailTimeout)}"));
            findings.Add(new NginxFinding("max-fails-eject-all", FindingSeverity.Warning, upstream.File, upstream.Line,
                $"upstream \"{name}\": every server can be ejected ({rule}) and there is no backup. A burst of errors (a deploy, " +
                "a wave of keep-alive races, one slow dependency) marks all servers unavailable, and nginx then answers 502 " +
                "\"no live upstreams\" without trying any of them until fail_timeout expires.",
                "max_fails=0 on the server lines (proxy_next_upstream still moves a failed request to the next server), or add a backup server",
                "Ferry never refuses everyone: when every destination is marked down it tries them anyway (panic), and keep-alive races never count against a destination."));
        }

        if (upstream.Child("queue") is null)
        {
            foreach (var server in servers.Where(s => s.MaxConns is not null))
            {
                findings.Add(new NginxFinding("max-conns-no-queue", FindingSeverity.Warning, server.Directive.File, server.Directive.Line,
                    $"server {server.Address} in upstream \"{name}\" has max_conns={server.MaxConns} and the upstream has no queue: a request " +
                    "arriving when every server is at its limit fails at once with 502 \"no live upstreams\". queue exists only in the " +
                    "commercial NGINX Plus.",
                    "NGINX Plus: queue 100 timeout=10s;  open source nginx: raise max_conns or remove it",
                    "A per-destination connection limit with a bounded wait queue (docs/health.md, connection limit and queue) makes a burst wait in Ferry instead of failing."));
            }
        }
    }

    private static void AuditKeepAliveTimeout(NginxDirective upstream, NginxAuditConfig config, List<NginxFinding> findings)
    {
        var name = upstream.Arg(0);
        var directive = upstream.Child("keepalive_timeout");
        var timeout = directive is not null && NginxTime.TryParse(directive.Arg(0), out var t) ? t : DefaultKeepAliveTimeout;
        var (file, line) = directive is null ? (upstream.File, upstream.Line) : (directive.File, directive.Line);
        var described = directive is null ? $"the default keepalive_timeout ({NginxTime.Format(timeout)})" : $"keepalive_timeout {directive.Arg(0)}";
        const string ferry = "Ferry retires idle connections before the destination would: KeepAlive:IdleTimeout=auto uses the announced " +
                             "Keep-Alive timeout or learns it from observed idle closes, with a safety margin.";
        if (config.BackendIdleTimeout is { } backend)
        {
            if (timeout >= backend)
            {
                findings.Add(new NginxFinding("keepalive-timeout", FindingSeverity.Error, file, line,
                    $"upstream \"{name}\": {described} is not below the backend's idle timeout ({NginxTime.Format(backend)}). The backend " +
                    "closes idle connections first; a request nginx writes on one at that moment fails (\"upstream prematurely closed " +
                    "connection\", \"recv() failed (104: Connection reset by peer)\") and becomes a 502: the keep-alive race.",
                    $"keepalive_timeout {NginxTime.Format(SafeTimeout(backend))};  (in upstream \"{name}\")", ferry));
            }
        }
        else
        {
            findings.Add(new NginxFinding("keepalive-timeout", FindingSeverity.Info, file, line,
                $"upstream \"{name}\": {described}. Many backends close idle connections sooner and never say so (gunicorn 2s, " +
                "Node.js 5s, Apache 5s); if this backend's timeout is shorter, every idle close is a potential 502. " +
                "Give --backend-timeout or --probe to check.",
                "keepalive_timeout below the backend's idle timeout, e.g. 1s for gunicorn, 4s for Node.js", ferry));
        }
    }

    private static void AuditKeepAliveRequests(NginxDirective upstream, NginxAuditConfig config, List<NginxFinding> findings)
    {
        if (config.BackendMaxRequests is not { } backendMax)
        {
            return;
        }

        var directive = upstream.Child("keepalive_requests");
        var requests = directive is not null && int.TryParse(directive.Arg(0), NumberStyles.None, CultureInfo.InvariantCulture, out var r)
            ? r
            : DefaultKeepAliveRequests;
        if (requests > backendMax)
        {
            var (file, line) = directive is null ? (upstream.File, upstream.Line) : (directive.File, directive.Line);
            findings.Add(new NginxFinding("keepalive-requests", FindingSeverity.Warning, file, line,
                $"upstream \"{upstream.Arg(0)}\": keepalive_requests {requests}{(directive is null ? " (default)" : "")} is above the " +
                $"backend's limit of {backendMax} requests per connection: the backend closes the connection after request {backendMax}, " +
                "racing the next request nginx writes on it.",
                $"keepalive_requests {backendMax};",
                "Ferry honours Keep-Alive: max=N and Connection: close from the destination; KeepAlive:MaxRequests sets a limit."));
        }
    }

    private static void AuditListen(NginxDirective listen, List<NginxFinding> findings)
    {
        foreach (var parameter in listen.Args.Skip(1))
        {
            if (!parameter.StartsWith("backlog=", StringComparison.Ordinal)
                || !int.TryParse(parameter.AsSpan("backlog=".Length), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var backlog)
                || backlog >= ModernSomaxconn)
            {
                continue;
            }

            var severity = backlog < NginxDefaultBacklog ? FindingSeverity.Warning : FindingSeverity.Info;
            findings.Add(new NginxFinding("listen-backlog", severity, listen.File, listen.Line,
                $"\"{listen}\": a backlog of {backlog}{(backlog < NginxDefaultBacklog ? $", below nginx's own default ({NginxDefaultBacklog})" : "")}. " +
                "When a burst fills the accept queue, the kernel drops SYNs and clients wait for retransmissions (1s, 3s, 7s) or time out. " +
                $"The kernel caps the value at net.core.somaxconn ({ModernSomaxconn} since Linux 5.4, 128 before).",
                $"listen ... backlog={ModernSomaxconn};  and sysctl net.core.somaxconn={ModernSomaxconn} (or more)",
                "Ferry listens through Kestrel, whose backlog defaults to 512; keep net.core.somaxconn at 4096 or more for bursts."));
        }
    }

    /// <summary>A keepalive_timeout comfortably below the backend's: 80%, whole seconds when it is at least a second.</summary>
    private static TimeSpan SafeTimeout(TimeSpan backend)
    {
        var safe = backend * 0.8;
        return safe >= TimeSpan.FromSeconds(1)
            ? TimeSpan.FromSeconds(Math.Floor(safe.TotalSeconds))
            : TimeSpan.FromMilliseconds(Math.Max(1, Math.Floor(safe.TotalMilliseconds)));
    }
}
