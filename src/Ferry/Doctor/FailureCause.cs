namespace Ferry.Doctor;

/// <summary>Why nginx failed to proxy a request, as far as its error log line tells.</summary>
internal enum FailureCause
{
    KeepAliveRace,
    PortExhaustion,
    BackendOverload,
    BackendDown,
    AllServersEjected,
    Timeout,
    ProtocolError,
    Other,
}

/// <summary>What a cause means and how to fix it, in nginx and in Ferry. <see cref="Name"/> is the stable JSON name.</summary>
internal sealed record FailureCauseInfo(FailureCause Cause, string Name, string Title, string Explanation, IReadOnlyList<string> NginxFix, string FerryFix)
{
    public static readonly IReadOnlyList<FailureCauseInfo> All =
    [
        new(FailureCause.KeepAliveRace, "keepalive_race", "keep-alive race",
            "nginx wrote a request on a kept-alive connection just as the backend closed it (its idle timeout expired first). " +
            "The backend most likely never processed the request; nginx answers 502 unless it may retry on another connection.",
            [
                "upstream block: `keepalive_timeout` below the backend's idle timeout (nginx's default is 60s; gunicorn closes after 2s, Node.js after 5s)",
                "location: `proxy_http_version 1.1;` and `proxy_set_header Connection \"\";` so connections are really reused by design, not by accident",
                "`proxy_next_upstream error timeout;` (the default) retries idempotent requests only; POSTs hit by the race still fail",
            ],
            "Ferry closes idle connections before the backend does (announced or learned idle timeout, KeepAlive:IdleTimeout=auto), " +
            "watches idle connections for FIN/RST and replays a request that failed on a reused connection before any response byte."),
        new(FailureCause.PortExhaustion, "port_exhaustion", "local port exhaustion",
            "connect() returned EADDRNOTAVAIL: nginx's host has no free ephemeral port towards this backend, usually because " +
            "connections are opened and closed per request and pile up in TIME_WAIT.",
            [
                "reuse connections: `keepalive N;` in the upstream block, `proxy_http_version 1.1;` and `proxy_set_header Connection \"\";`",
                "raise `keepalive` above twice the peak concurrency per worker so bursts do not close and reopen connections",
                "as a stopgap: widen `net.ipv4.ip_local_port_range`",
            ],
            "Ferry keeps as many idle connections per destination as the recent peak of concurrent requests needs (at least KeepAlive:MaxIdle, 1024), so bursts reuse connections, and reports this as " +
            "proxy_internal_error (its own problem) without counting it against the backend's health."),
        new(FailureCause.BackendOverload, "backend_overload", "backend overload (listen backlog full)",
            "The connection attempt timed out or the backend's accept queue was full: SYNs are dropped when the listen backlog overflows.",
            [
                "raise the backend's listen backlog and `net.core.somaxconn`",
                "`max_conns=N` on the `server` lines to cap concurrent connections per backend",
                "`proxy_connect_timeout` a few seconds (Linux retransmits a lost SYN after 1, 3 and 7 s), not the 60s default",
            ],
            "Ferry's Timeouts:Connect defaults to 10s and the failure is a 504 connection_timeout naming the destination; a per-destination " +
            "connection limit with a bounded wait queue (docs/health.md, connection limit and queue) is how Ferry keeps a burst from overflowing the backlog."),
        new(FailureCause.BackendDown, "backend_down", "backend down",
            "The backend refused the connection: nothing listens on that address (crashed, restarting, deployed elsewhere).",
            [
                "check the backend process and its port",
                "add another `server` (or a `backup`) to the upstream and keep `proxy_next_upstream error` so requests move on",
            ],
            "Ferry reports 502 connection_refused with the destination's address and marks the destination unavailable so the next requests go elsewhere."),
        new(FailureCause.AllServersEjected, "all_servers_ejected", "all servers ejected (max_fails)",
            "\"no live upstreams\": every server of the upstream was marked failed (max_fails failures within fail_timeout), " +
            "so nginx answered 502 without trying any of them, often after a burst of harmless keep-alive races.",
            [
                "`max_fails=0` on the `server` lines (or a higher max_fails with a short fail_timeout) so transient errors cannot eject every server",
                "a `backup` server",
                "fix the keep-alive races first: they count as failures against max_fails",
            ],
            "Ferry never ejects every destination by accident: when all are marked down it routes to them anyway (panic), and keep-alive races never count against health."),
        new(FailureCause.Timeout, "timeout", "response timeout",
            "The backend accepted the request but sent no response head within proxy_read_timeout (504).",
            [
                "find the slow endpoint (the request field of these lines); raise `proxy_read_timeout` only for it, in its own location",
            ],
            "Ferry's Timeouts:ResponseHead (504 http_response_timeout); per-route clusters can have their own."),
        new(FailureCause.ProtocolError, "protocol_error", "protocol error",
            "The backend sent a malformed or oversized response head, broken chunked framing, or closed in the middle of the body.",
            [
                "oversized heads: `proxy_buffer_size 16k;` (the head must fit in one buffer)",
                "invalid chunked / mid-body closes: the backend crashed or was killed while streaming; check its logs",
                "backends that answer an HTTP/1.0 request with a chunked body: `proxy_http_version 1.1;`",
            ],
            "Ferry reports 502 http_protocol_error or http_response_header_section_size (Limits:MaxResponseHeaderBytes), and aborts the client " +
            "connection when a body is cut, never passing a truncated response off as complete."),
        new(FailureCause.Other, "other", "other",
            "Error lines that are not about proxying to an upstream, or messages not recognised.",
            [],
            ""),
    ];

    public static FailureCauseInfo Of(FailureCause cause) => All[(int)cause];
}
