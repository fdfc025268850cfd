namespace Ferry.Doctor;

/// <summary>
/// Maps an nginx error message to a <see cref="FailureCause"/>. The messages and the "while ..." actions are those of
/// nginx's src/http/ngx_http_upstream.c, ngx_http_proxy_module.c and src/event/ngx_event_connect.c; errno texts are
/// matched by number ("(104: ") because strerror's wording depends on the libc.
/// </summary>
internal static class ErrorLogClassifier
{
    private const string WhileConnecting = "while connecting to upstream";
    private const string WhileReadingHeader = "while reading response header from upstream";
    private const string WhileSendingRequest = "while sending request to upstream";
    private const string WhileReadingBody = "while reading upstream";

    public static FailureCause Classify(string message)
    {
        if (Has(message, "no live upstreams"))
        {
            return FailureCause.AllServersEjected;
        }

        // EADDRNOTAVAIL from connect() (nginx logs it at [crit]): no local port left for this destination.
        if (Errno(message, 99, "Cannot assign requested address"))
        {
            return FailureCause.PortExhaustion;
        }

        if (Has(message, WhileConnecting))
        {
            if (Errno(message, 111, "Connection refused") || Errno(message, 113, "No route to host")
                || Errno(message, 101, "Network is unreachable") || Errno(message, 104, "Connection reset by peer"))
            {
                return FailureCause.BackendDown;
            }

            // A timed-out connect means SYNs went unanswered: a full listen backlog drops them. Linux returns EAGAIN
            // instead of ECONNREFUSED on a unix socket whose listen queue is full (comment in ngx_event_connect.c).
            if (Errno(message, 110, "Connection timed out") || Has(message, "upstream timed out")
                || Errno(message, 11, "Resource temporarily unavailable"))
            {
                return FailureCause.BackendOverload;
            }

            return FailureCause.Other;
        }

        if (Has(message, "upstream timed out"))
        {
            return FailureCause.Timeout;
        }

        if (Has(message, "upstream sent "))
        {
            return FailureCause.ProtocolError;
        }

        // Closed or reset before any response byte: on a kept-alive connection this is the backend's idle close racing
        // the request.
        if (Has(message, WhileReadingHeader) || Has(message, WhileSendingRequest))
        {
            if (Has(message, "upstream prematurely closed connection") || Errno(message, 104, "Connection reset by peer")
                || Errno(message, 32, "Broken pipe"))
            {
                return FailureCause.KeepAliveRace;
            }
        }

        // The response had started: the backend died in the middle of the body.
        if (Has(message, WhileReadingBody)
            && (Has(message, "upstream prematurely closed connection") || Errno(message, 104, "Connection reset by peer")))
        {
            return FailureCause.ProtocolError;
        }

        return FailureCause.Other;
    }

    private static bool Has(string message, string text) => message.Contains(text, StringComparison.Ordinal);

    private static bool Errno(string message, int errno, string text) =>
        message.Contains($"({errno}: ", StringComparison.Ordinal) || message.Contains(text, StringComparison.Ordinal);
}
