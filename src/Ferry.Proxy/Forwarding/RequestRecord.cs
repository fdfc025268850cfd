using Ferry.Errors;
using Ferry.Model;

namespace Ferry.Forwarding;

// What happened to one client request, filled along the request path and handed to the access log, the metrics and
// the status page when the request ends. One attempt per upstream connection used.
internal sealed class RequestRecord
{
    public DateTimeOffset StartTime { get; init; }
    public long StartTimestamp { get; init; }           // TimeProvider timestamp
    public required string Method { get; init; }
    public required string Target { get; init; }        // as the client sent it
    public required string Protocol { get; init; }      // HTTP/1.0, HTTP/1.1, HTTP/2
    public string? ClientAddress { get; init; }
    public string? Host { get; init; }
    public string? ClientTls { get; init; }             // the client connection's TLS version on an HTTPS listener ("TLSv1.3")
    public string? RouteId { get; set; }
    public string? ClusterId { get; set; }
    public string? RateLimiterPolicy { get; set; }      // the policy that refused the request (RateLimited); null otherwise
    public int Status { get; set; }                     // sent to the client; 499 when the client went away first
    public long BytesIn { get; set; }                   // request body bytes read from the client
    public long BytesOut { get; set; }                  // response body bytes written to the client
    public TimeSpan Duration { get; set; }
    public ProxyError Error { get; set; }               // None when the response came from a destination
    public string? ErrorDetails { get; set; }
    public string? TunnelEnd { get; set; }              // how an upgraded connection ended (TunnelEnds); null: no tunnel
    public AttemptList Attempts => new(this);

    // Nearly every request makes one attempt: it is kept in the record itself, where a list of one cost a List and
    // its array (88 B) per request. Further attempts (replays, retries) go to the list.
    internal AttemptRecord? FirstAttempt;
    internal List<AttemptRecord>? LaterAttempts;
}

// The attempts of one request, in order.
internal readonly struct AttemptList(RequestRecord record)
{
    public int Count => record.FirstAttempt is null ? 0 : 1 + (record.LaterAttempts?.Count ?? 0);

    public AttemptRecord this[int index] =>
        index == 0 && record.FirstAttempt is { } first ? first
        : index > 0 && record.LaterAttempts is { } later && index - 1 < later.Count ? later[index - 1]
        : throw new ArgumentOutOfRangeException(nameof(index));

    public void Add(AttemptRecord attempt)
    {
        if (record.FirstAttempt is null)
        {
            record.FirstAttempt = attempt;
        }
        else
        {
            (record.LaterAttempts ??= []).Add(attempt);
        }
    }

    public bool Exists(Func<AttemptRecord, bool> match)
    {
        foreach (var attempt in this)
        {
            if (match(attempt))
            {
                return true;
            }
        }
        return false;
    }

    public AttemptRecord? LastOrDefault(Func<AttemptRecord, bool> match)
    {
        for (var i = Count - 1; i >= 0; i--)
        {
            if (match(this[i]))
            {
                return this[i];
            }
        }
        return null;
    }

    public Enumerator GetEnumerator() => new(this);

    public struct Enumerator(AttemptList list)
    {
        private int _index = -1;

        public readonly AttemptRecord Current => list[_index];

        public bool MoveNext() => ++_index < list.Count;
    }
}

internal static class TunnelEnds
{
    public const string ClientClosed = "client_closed";
    public const string ClientReset = "client_reset";
    public const string DestinationClosed = "destination_closed";
    public const string DestinationReset = "destination_reset";
    public const string IdleTimeout = "idle_timeout";
}

internal sealed class AttemptRecord
{
    public required DestinationState Destination { get; init; }
    public int Status { get; set; }                     // response status from the destination; 0 when none arrived
    public TimeSpan? ConnectTime { get; set; }          // null when a pooled connection was reused
    public string? TlsProtocol { get; set; }            // a new TLS connection's protocol ("TLSv1.3"); null otherwise
    public TimeSpan? TlsHandshakeTime { get; set; }     // a new TLS connection's handshake, after ConnectTime
    public TimeSpan? HeadTime { get; set; }             // attempt start to complete response head
    public TimeSpan? ResponseTime { get; set; }         // attempt start to end of the response body
    public bool Reused { get; set; }
    public TimeSpan ConnectionAge { get; set; }         // at the start of the attempt
    public TimeSpan IdleTime { get; set; }              // how long the connection was idle before this attempt
    public int ConnectionRequests { get; set; }         // requests the connection had served before this one
    public bool Replay { get; set; }                    // a replay after a reused connection failed (keep-alive race)
    public ProxyError Error { get; set; }
    public string? ErrorDetails { get; set; }
}
