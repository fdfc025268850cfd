using System.Buffers;
using System.Globalization;
using System.IO.Pipelines;
using System.Net;
using Ferry.Errors;
using Ferry.Http1;
using Ferry.Model;
using Ferry.Routing;
using Ferry.Upstream;
using Microsoft.AspNetCore.Http.Features;

namespace Ferry.Forwarding;

// One attempt of one request on one upstream connection: steps 4–7 of the request path.
internal sealed class Exchange
{
    private enum Phase { SendingRequest, WaitingForHead, ReadingBody, Tunnel }

    private enum BodyMode { None, ContentLength, Chunked }

    private readonly HttpContext _context;
    private readonly RouteState _route;
    private readonly DestinationState _destination;
    private readonly UpstreamConnection _connection;
    private readonly bool _reused;
    private readonly BufferedBody? _body;
    private readonly string? _traceParent;
    private readonly RequestRecord _record;
    private readonly AttemptRecord _attempt;
    private readonly TimeProvider _time;
    private readonly Configuration.TimeoutsConfig _timeouts;
    private readonly long _start;
    private readonly StatusRetry? _retryOnStatus; // says yes: the forwarder sends the request elsewhere (Retry:Statuses)
    private readonly bool _needsEvidence; // ReplayDecision.NeedsEvidence: bytes_acked is noted before sending
    private Phase _phase;
    private volatile bool _headReceived;
    private volatile bool _clientBodyFailed;
    private volatile bool _bodyTooLarge;
    private volatile bool _sendTimedOut;
    private bool _anyResponseByte;
    private long _bytesAckedBefore = -1;
    private Hosting.ListenerConnectionFeature? _listener; // read once with the request head, used again for the response

    public Exchange(HttpContext context, RouteState route, Lease lease, BufferedBody? body, RequestRecord record, AttemptRecord attempt,
        string? traceParent, TimeProvider time, ReplayDecision replay, StatusRetry? retryOnStatus = null)
    {
        _needsEvidence = replay.NeedsEvidence(lease.Reused);
        _retryOnStatus = retryOnStatus;
        _traceParent = traceParent;
        _context = context;
        _route = route;
        _connection = lease.Connection;
        _destination = lease.Connection.Destination;
        _reused = lease.Reused;
        _body = body;
        _record = record;
        _attempt = attempt;
        _time = time;
        _timeouts = route.Cluster.Config.Timeouts;
        _start = time.GetTimestamp();
    }

    // False when the destination answered a status the forwarder retries elsewhere (Retry:Statuses): nothing of that
    // answer reached the client. True when the response was relayed.
    public async Task<bool> RunAsync()
    {
        var connection = _connection;
        var request = _context.Request;
        RetireReason? retire = RetireReason.Error;
        var ct = connection.BeginExchange(_time);
        var clientAborted = _context.RequestAborted.UnsafeRegister(static c => ((UpstreamConnection)c!).CancelExchange(), connection);
        CancellationTokenSource? sendBody = null;
        Task<bool>? bodyTask = null;
        try
        {
            var upgradable = _context.Features.Get<IHttpUpgradeFeature>()?.IsUpgradableRequest == true;
            var upgrade = upgradable ? UpgradeToForward() : null;
            var isUpgrade = upgrade is not null;
            connection.RequestCount++;

            // 4. Write the request head, then the body concurrently with waiting for the response. Before anything
            //    is sent, what the destination acknowledged so far is noted when it can decide a replay: if the
            //    destination closes before answering, it tells whether it can have received this request at all
            //    (docs/replay.md, "The evidence for a POST").
            _phase = Phase.SendingRequest;
            var mode = WriteRequestHead(connection.Output, upgrade, upgradable);
            if (_needsEvidence)
            {
                _bytesAckedBefore = connection.BytesAcked();
            }
            connection.SetDeadline(Limit(_timeouts.SendRequest));
            if (_body is not null)
            {
                _record.BytesIn = _body.Length;
                mode = BodyMode.None;
                var rest = _body.Memory;
                while (rest.Length > MaxUnflushedBody)
                {
                    connection.Output.Write(rest.Span[..MaxUnflushedBody]);
                    await FlushUpstreamAsync(connection.Output, ct);
                    rest = rest[MaxUnflushedBody..];
                }
                connection.Output.Write(rest.Span);
            }
            await FlushUpstreamAsync(connection.Output, ct);
            if (mode != BodyMode.None)
            {
                sendBody = new CancellationTokenSource();
                bodyTask = SendBodyAsync(request.BodyReader, connection.Output, mode == BodyMode.Chunked, sendBody.Token);
            }

            // 5. Read the response head; 1xx interim responses (other than 101) are consumed here.
            _phase = Phase.WaitingForHead;
            connection.SetDeadline(Limit(_timeouts.ResponseHead));
            var head = connection.Head;
            // The loop is here rather than in an async method of its own: that method's state machine would be one more
            // heap object per request, as the read always completes after the request went out.
            while (!ConsumeHead(connection, await connection.ReadAsync(ct)))
            {
            }
            _headReceived = true;
            _attempt.Status = head.StatusCode;
            _attempt.HeadTime = _time.GetElapsedTime(_start);
            if (bodyTask is null && !isUpgrade)
            {
                // The destination's own latency, its accept queue included (the connect): a streamed request body
                // would add the client's upload time.
                _destination.Pool.ObserveResponseHead(_attempt.HeadTime.Value + (_attempt.ConnectTime ?? TimeSpan.Zero));
            }
            var framing = ResponseFraming.Decide(HttpMethods.IsHead(request.Method), isUpgrade, head);
            if (head.KeepAliveTimeoutSeconds >= 0)
            {
                connection.AnnouncedIdleTimeoutSeconds = head.KeepAliveTimeoutSeconds;
            }
            if (head.KeepAliveMax >= 0)
            {
                connection.AnnouncedMaxRequests = KeepAlivePolicy.AnnouncedMaxRequests(connection.RequestCount, head.KeepAliveMax);
            }
            if (_retryOnStatus?.ShouldRetry(head.StatusCode) == true)
            {
                // Nothing has reached the client: the forwarder tries another destination instead.
                retire = bodyTask is null ? await DrainForRetryAsync(connection, framing, ct) : RetireReason.NotReusable;
                return false;
            }

            // 6. Stream the response to the client.
            CopyResponseHead(head, framing);
            if (framing.Kind == BodyKind.Upgrade)
            {
                _phase = Phase.Tunnel;
                connection.SetDeadline(Timeout.InfiniteTimeSpan);
                retire = RetireReason.NotReusable;
                await TunnelAsync(connection);
                return true;
            }
            _phase = Phase.ReadingBody;
            var clean = await CopyBodyAsync(connection, framing, ct);
            _attempt.ResponseTime = _time.GetElapsedTime(_start);

            // 7. Return the connection only when both bodies are complete and nothing forbids reuse.
            var sentAll = true;
            if (bodyTask is not null)
            {
                if (!bodyTask.IsCompleted)
                {
                    if (framing.KeepAlivePermitted)
                    {
                        // The destination answered before reading the whole body and keeps the connection: it will
                        // read the rest (RFC 9112 §9.3). The client has its complete response; finishing the upload
                        // keeps both connections reusable instead of closing them.
                        await _context.Response.CompleteAsync();
                    }
                    else
                    {
                        sendBody!.Cancel();
                    }
                }
                sentAll = await bodyTask;
            }
            retire = !framing.KeepAlivePermitted
                ? (head.ConnectionClose ? RetireReason.AnnouncedLimit : RetireReason.NotReusable)
                : (!clean || !sentAll ? RetireReason.NotReusable : null);
            return true;
        }
        catch (Exception ex) when (ex is not ProxyException)
        {
            throw Classify(ex);
        }
        finally
        {
            if (bodyTask is not null && !bodyTask.IsCompleted)
            {
                sendBody!.Cancel();
                try
                {
                    await bodyTask;
                }
                catch (Exception)
                {
                    // Failures of an abandoned request body do not change the outcome already decided.
                }
            }
            sendBody?.Dispose();
            // Disposing the registration waits for a running callback: nothing can cancel the connection's next exchange.
            clientAborted.Dispose();
            connection.EndExchange();
            _destination.Pool.Release(connection, retire);
        }
    }

    // Largest body of a retried response read to its end to keep the connection: error pages are a few hundred bytes
    // to a few KiB, and reading them from an open connection is cheaper than a new connection's handshake.
    private const long MaxRetryDrain = 16 * 1024;

    // Reads a short, framed body of a response the forwarder retries elsewhere; null when the connection may be reused.
    private async Task<RetireReason?> DrainForRetryAsync(UpstreamConnection connection, BodyFraming framing, CancellationToken ct)
    {
        if (!framing.KeepAlivePermitted || framing.Kind is not (BodyKind.None or BodyKind.ContentLength)
            || framing.ContentLength > MaxRetryDrain)
        {
            return RetireReason.NotReusable;
        }
        var input = connection.Input;
        var remaining = framing.Kind == BodyKind.None ? 0 : framing.ContentLength;
        try
        {
            connection.SetDeadline(Limit(_timeouts.BodyInactivity));
            while (remaining > 0)
            {
                var read = await input.ReadAsync(ct);
                var take = Math.Min(read.Buffer.Length, remaining);
                input.AdvanceTo(read.Buffer.GetPosition(take));
                remaining -= take;
                if (remaining > 0 && read.IsCompleted)
                {
                    return RetireReason.Error;
                }
            }
            return HasBufferedInput(input) ? RetireReason.NotReusable : null;
        }
        catch (Exception ex) when (ex is IOException or OperationCanceledException)
        {
            // The retry does not depend on this connection; a failed drain only costs it.
            return RetireReason.Error;
        }
    }

    // A zero timeout in the configuration means no limit.
    private static TimeSpan Limit(TimeSpan timeout) => timeout <= TimeSpan.Zero ? Timeout.InfiniteTimeSpan : timeout;

    private ProxyException Classify(Exception ex)
    {
        if (_bodyTooLarge)
        {
            return new ProxyException(ProxyError.RequestBodyTooLarge,
                $"the request body grew past the route's MaxRequestBodySize ({_route.Config.MaxRequestBodySize} bytes) while it was forwarded", ex);
        }
        if (_clientBodyFailed)
        {
            return new ProxyException(ProxyError.ClientRequestBodyError, "the client's request body could not be read", ex);
        }
        if (_context.RequestAborted.IsCancellationRequested)
        {
            return new ProxyException(ProxyError.ClientAborted, $"client went away while {Describe(_phase)}", ex);
        }
        if (ex is ArgumentException && _phase == Phase.SendingRequest)
        {
            // The head writer refused a piece of the request (RequestCheck lets none through): nothing was sent, and
            // it is no fault of the destination's.
            return new ProxyException(ProxyError.RequestNotExpressible, $"the request cannot be written as HTTP/1.1: {ex.Message}", ex);
        }
        if (ex is Http1Exception h1)
        {
            var error = h1.IsHeaderSectionSize ? ProxyError.ResponseHeaderSectionSize
                : h1.Error == Http1Error.TrailerSectionTooLarge ? ProxyError.ResponseTrailerSectionSize
                : ProxyError.ProtocolError;
            return new ProxyException(error,
                $"invalid response from the destination: {h1.Error}", ex);
        }
        if (ex is OperationCanceledException)
        {
            if (_sendTimedOut)
            {
                return new ProxyException(ProxyError.RequestSendTimeout,
                    $"the destination did not read the request body within {_timeouts.SendRequest.TotalSeconds:0.###} s", ex);
            }
            return _phase switch
            {
                Phase.SendingRequest => new ProxyException(ProxyError.RequestSendTimeout,
                    $"the destination did not take the request head within {_timeouts.SendRequest.TotalSeconds:0.###} s", ex),
                Phase.WaitingForHead => new ProxyException(ProxyError.ResponseTimeout,
                    $"no response head within {_timeouts.ResponseHead.TotalSeconds:0.###} s", ex),
                _ => new ProxyException(ProxyError.BodyInactivityTimeout,
                    $"the response body stalled for {_timeouts.BodyInactivity.TotalSeconds:0.###} s", ex),
            };
        }
        if (_phase == Phase.ReadingBody || _phase == Phase.Tunnel)
        {
            return new ProxyException(ProxyError.ResponseIncomplete, $"the destination {HowClosed(ex)} the connection mid-body", ex);
        }
        return Terminated(ex);
    }

    // A reset after the destination's FIN surfaces as EPIPE ("Shutdown"): the FIN came first, as with a plain EOF.
    private static bool FinSeen(Exception? ex) =>
        ex is null or IOException { InnerException: System.Net.Sockets.SocketException { SocketErrorCode: System.Net.Sockets.SocketError.Shutdown } };

    private static string HowClosed(Exception? ex) => FinSeen(ex) ? "closed" : "reset";

    // The destination closed or reset before the whole response head arrived. `inner` null: a clean EOF.
    private ProxyException Terminated(Exception? inner)
    {
        var beforeResponse = !_anyResponseByte;
        // Its FIN arrived and its TCP stack acknowledged no byte of this request: it closed before the request reached
        // it, so it cannot have processed it, whatever the method. A reset alone proves nothing.
        var proven = beforeResponse && _reused && FinSeen(inner) && _bytesAckedBefore >= 0
            && _connection.BytesAcked() == _bytesAckedBefore;
        var where = beforeResponse ? "before any response byte" : "during the response head";
        var connection = _reused
            ? $"reused connection (request {_connection.RequestCount} on it, idle {_attempt.IdleTime.TotalMilliseconds:0} ms before)"
            : "new connection";
        if (_connection.TlsFailure(inner) is { } alert)
        {
            // Not a close: the destination's TLS layer refused the session (a TLS 1.3 server rejects a missing or
            // unacceptable client certificate only after the client's handshake has completed).
            return new ProxyException(ProxyError.TlsProtocolError, $"TLS error on the {connection} {where}: {alert}", inner)
            {
                BeforeResponse = beforeResponse,
            };
        }
        var evidence = proven ? "; it never received the request" : "";
        return new ProxyException(ProxyError.ConnectionTerminated, $"the destination {HowClosed(inner)} the {connection} {where}{evidence}", inner)
        {
            BeforeResponse = beforeResponse,
            ProvenUnprocessed = proven,
        };
    }

    private static string Describe(Phase phase) => phase switch
    {
        Phase.SendingRequest => "sending the request",
        Phase.WaitingForHead => "waiting for the response head",
        Phase.ReadingBody => "streaming the response body",
        _ => "tunnelling",
    };

    // The client's Upgrade offers whose protocol the route tunnels (Routes:<id>:Upgrades); null when none is left.
    private string? UpgradeToForward()
    {
        var allowed = _route.Config.Upgrades;
        if (allowed.Count == 0)
        {
            return null;
        }
        string? kept = null;
        foreach (var value in _context.Request.Headers.Upgrade)
        {
            if (value is null)
            {
                continue;
            }
            foreach (var range in value.AsSpan().Split(','))
            {
                var offer = value.AsSpan()[range].Trim();
                var slash = offer.IndexOf('/');
                var protocol = slash < 0 ? offer : offer[..slash];
                foreach (var name in allowed)
                {
                    if (protocol.Equals(name, StringComparison.OrdinalIgnoreCase))
                    {
                        kept = kept is null ? offer.ToString() : $"{kept}, {offer}";
                        break;
                    }
                }
            }
        }
        return kept;
    }

    private BodyMode WriteRequestHead(PipeWriter output, string? upgrade, bool upgradable)
    {
        var request = _context.Request;
        var cluster = _route.Cluster.Config;
        RequestHeadWriter.WriteRequestLine(output, request.Method, RequestTarget());
        var rules = _route.Config.Transforms;
        var host = (rules.OriginalHost ?? cluster.Forwarding.PreserveHost) && request.Host.HasValue ? request.Host.Value! : _destination.Authority;
        RequestHeadWriter.WriteHeader(output, "Host", host);
        var dropsHeaders = rules.DroppedRequestHeaders.Length > 0;

        var headers = request.Headers;
        var connectionTokens = HopByHop.ConnectionTokens(headers.Connection);
        var xForwarded = cluster.Forwarding.XForwarded;
        // Forwarding headers from a client are what it wants the destination to believe: dropped, unless the peer is
        // a trusted proxy whose chain Ferry extends (docs/configuration.md, TrustedProxies).
        _listener = _context.Features.Get<Hosting.ListenerConnectionFeature>();
        var peerTrusted = _listener?.PeerTrusted == true;
        foreach (var header in headers)
        {
            var name = header.Key;
            if (name.Length == 0 || name[0] == ':' || HopByHop.IsHopByHopOrManaged(name)
                || (connectionTokens is not null && HopByHop.IsNamedBy(connectionTokens, name))
                || (peerTrusted ? xForwarded && name.Equals("X-Forwarded-For", StringComparison.OrdinalIgnoreCase) : IsForwarding(name))
                || (_traceParent is not null && name.Equals("traceparent", StringComparison.OrdinalIgnoreCase))
                || (dropsHeaders && rules.DropsRequestHeader(name)))
            {
                continue;
            }
            RequestHeadWriter.WriteHeader(output, name, header.Value);
        }
        foreach (var rule in rules.AddedRequestHeaders)
        {
            RequestHeadWriter.WriteHeader(output, rule.Name, rule.Value);
        }
        if (_traceParent is not null)
        {
            // W3C Trace Context: the destination's parent is this attempt's span; tracestate passes through as is.
            RequestHeadWriter.WriteHeader(output, "traceparent", _traceParent);
        }
        if (xForwarded)
        {
            var remote = _context.Connection.RemoteIpAddress;
            if (remote is { IsIPv4MappedToIPv6: true })
            {
                remote = remote.MapToIPv4();
            }
            if (peerTrusted)
            {
                // The trusted proxy saw the client's request: its Proto and Host describe it better than Ferry can.
                WriteAppended(output, "X-Forwarded-For", headers["X-Forwarded-For"], remote?.ToString());
                WriteIfAbsent(output, "X-Forwarded-Proto", headers, request.Scheme);
                WriteIfAbsent(output, "X-Forwarded-Host", headers, request.Host.Value);
            }
            else
            {
                WriteIfAbsent(output, "X-Forwarded-For", null, remote?.ToString());
                WriteIfAbsent(output, "X-Forwarded-Proto", null, request.Scheme);
                WriteIfAbsent(output, "X-Forwarded-Host", null, request.Host.Value);
            }
        }
        if (upgrade is not null)
        {
            RequestHeadWriter.WriteHeader(output, "Connection", "Upgrade");
            RequestHeadWriter.WriteHeader(output, "Upgrade", upgrade);
        }

        BodyMode mode;
        if (request.ContentLength is long length)
        {
            RequestHeadWriter.WriteHeader(output, "Content-Length", length.ToString(CultureInfo.InvariantCulture));
            mode = length > 0 ? BodyMode.ContentLength : BodyMode.None;
        }
        else if (!upgradable && _context.Features.Get<IHttpRequestBodyDetectionFeature>()?.CanHaveBody == true)
        {
            // Length unknown (chunked HTTP/1.1, or HTTP/2 without content-length): re-frame as chunked.
            RequestHeadWriter.WriteHeader(output, "Transfer-Encoding", "chunked");
            mode = BodyMode.Chunked;
        }
        else
        {
            mode = BodyMode.None;
        }
        RequestHeadWriter.WriteEnd(output);
        return mode;
    }

    // Every header a proxy uses to tell the destination about the client: X-Forwarded-For/-Proto/-Host/-Port/-Prefix,
    // Forwarded (RFC 7239) and nginx's X-Real-IP.
    private static bool IsForwarding(string name) =>
        name.StartsWith("X-Forwarded-", StringComparison.OrdinalIgnoreCase)
            && (name.Length == 15 && name.EndsWith("For", StringComparison.OrdinalIgnoreCase)
                || name.Length == 16 && (name.EndsWith("Host", StringComparison.OrdinalIgnoreCase) || name.EndsWith("Port", StringComparison.OrdinalIgnoreCase))
                || name.Length == 17 && name.EndsWith("Proto", StringComparison.OrdinalIgnoreCase)
                || name.Length == 18 && name.EndsWith("Prefix", StringComparison.OrdinalIgnoreCase))
        || name.Equals("Forwarded", StringComparison.OrdinalIgnoreCase)
        || name.Equals("X-Real-IP", StringComparison.OrdinalIgnoreCase);

    private static void WriteIfAbsent(PipeWriter output, string name, IHeaderDictionary? headers, string? value)
    {
        if (!string.IsNullOrEmpty(value) && (headers is null || !headers.ContainsKey(name)))
        {
            RequestHeadWriter.WriteHeader(output, name, value);
        }
    }

    private static void WriteAppended(PipeWriter output, string name, Microsoft.Extensions.Primitives.StringValues existing, string? value)
    {
        if (string.IsNullOrEmpty(value))
        {
            if (existing.Count > 0)
            {
                RequestHeadWriter.WriteHeader(output, name, existing);
            }
            return;
        }
        RequestHeadWriter.WriteHeader(output, name, existing.Count == 0 ? value : $"{string.Join(", ", existing.ToArray())}, {value}");
    }

    // The target as the client sent it, so that percent-encoding survives untouched; the route's path and query rules
    // (Transforms) start from that raw form too.
    private string RequestTarget()
    {
        var request = _context.Request;
        var raw = _context.Features.Get<IHttpRequestFeature>()?.RawTarget ?? "";
        var rules = _route.Config.Transforms;
        var usable = raw.Length > 0 && (raw[0] == '/' || raw == "*");
        if (!rules.RewritesTarget || raw == "*")
        {
            return usable ? raw : request.Path.ToUriComponent() + request.QueryString.ToUriComponent();
        }
        var question = raw.IndexOf('?');
        var (rawPath, rawQuery) = usable && raw[0] == '/'
            ? (question < 0 ? (raw, "") : (raw[..question], raw[question..]))
            : (request.Path.ToUriComponent(), request.QueryString.ToUriComponent());
        return Transforms.Target(rawPath, rawQuery, request.Path.Value ?? "/", rules, _route.Config.Match.Template);
    }

    private async Task FlushUpstreamAsync(PipeWriter output, CancellationToken ct)
    {
        try
        {
            await output.FlushAsync(ct);
        }
        catch (IOException ex)
        {
            throw Terminated(ex);
        }
    }

    // Most request body bytes the upstream writer holds before they are flushed. Its buffers are 4 KiB arrays from the
    // shared array pool, held until the flush; one read of Kestrel's request body can bring up to its whole request
    // buffer (1 MiB), and copied at once that took 256 arrays, more than the pool keeps: each read then left most of
    // them as garbage, 0.75 MiB per MiB uploaded. 64 KiB is 16 arrays, which the pool takes back.
    private const int MaxUnflushedBody = 64 * 1024;

    // Client body → destination. Returns whether the whole body reached the destination's socket. A failure on the
    // destination side is not fatal here: the destination may still answer (a 413 before reading everything).
    private async Task<bool> SendBodyAsync(PipeReader source, PipeWriter output, bool chunked, CancellationToken abandon)
    {
        using var inactivity = new CancellationTokenSource(Timeout.InfiniteTimeSpan, _time);
        using var link = CancellationTokenSource.CreateLinkedTokenSource(inactivity.Token, abandon, _context.RequestAborted);
        var ct = link.Token;
        while (true)
        {
            ReadResult read;
            try
            {
                // Abandoning ends the read with CancelPendingRead rather than a token: a read of Kestrel's request body
                // that ends by cancellation leaves the reader mid-read, and Kestrel can then neither drain the rest of
                // the body nor keep the client's connection.
                using (abandon.UnsafeRegister(static s => ((PipeReader)s!).CancelPendingRead(), source))
                {
                    read = await source.ReadAsync(_context.RequestAborted);
                }
            }
            catch (Exception ex) when (ex is not OperationCanceledException)
            {
                // Malformed chunked framing, a body over a limit, or a client that stopped sending. Kestrel enforces
                // the route's MaxRequestBodySize (set per request by the forwarder) on a body of unknown length.
                _bodyTooLarge = ex is BadHttpRequestException { StatusCode: StatusCodes.Status413PayloadTooLarge };
                _clientBodyFailed = true;
                _connection.CancelExchange();
                return false;
            }
            catch (OperationCanceledException)
            {
                return false;
            }
            if (read.IsCanceled)
            {
                source.AdvanceTo(read.Buffer.Start);
                return false;
            }
            var buffer = read.Buffer;
            try
            {
                if (!buffer.IsEmpty)
                {
                    _record.BytesIn += buffer.Length;
                    if (chunked)
                    {
                        ChunkedEncoder.WriteChunkHeader(output, buffer.Length);
                    }
                    while (buffer.Length > MaxUnflushedBody)
                    {
                        var slice = buffer.Slice(0, MaxUnflushedBody);
                        Write(output, slice);
                        inactivity.CancelAfter(Limit(_timeouts.SendRequest));
                        await output.FlushAsync(ct);
                        buffer = buffer.Slice(slice.End);
                    }
                    Write(output, buffer);
                    if (chunked)
                    {
                        ChunkedEncoder.WriteChunkEnd(output);
                    }
                }
                source.AdvanceTo(read.Buffer.End);
                if (read.IsCompleted && chunked)
                {
                    ChunkedEncoder.WriteLastChunk(output);
                }
                inactivity.CancelAfter(Limit(_timeouts.SendRequest));
                await output.FlushAsync(ct);
                inactivity.CancelAfter(Timeout.InfiniteTimeSpan);
            }
            catch (Exception ex) when (ex is IOException or OperationCanceledException)
            {
                if (inactivity.IsCancellationRequested && !_headReceived)
                {
                    _sendTimedOut = true;
                    _connection.CancelExchange();
                }
                return false;
            }
            if (read.IsCompleted)
            {
                return true;
            }
        }
    }

    // Parses what a read brought; true once a final (or 101) response head is complete. 100 Continue answers an Expect
    // Ferry does not forward, and other 1xx (103) have no Kestrel API: both are consumed and the next head awaited.
    private bool ConsumeHead(UpstreamConnection connection, ReadResult read)
    {
        var input = connection.Input;
        var buffer = read.Buffer;
        if (!buffer.IsEmpty)
        {
            _anyResponseByte = true;
        }
        if (TryParseHead(connection, buffer, out var consumed))
        {
            input.AdvanceTo(consumed);
            var head = connection.Head;
            return !head.IsInformational || head.StatusCode == StatusCodes.Status101SwitchingProtocols;
        }
        if (!StartsLikeResponse(buffer))
        {
            // A TLS or SSH server on the port, or garbage: not a response cut short by a close, whatever comes next.
            // Said at once rather than after the response timeout, and never taken for a keep-alive race.
            throw new ProxyException(ProxyError.ProtocolError, "the destination sent bytes that do not start an HTTP/1.x response");
        }
        if (read.IsCompleted)
        {
            throw Terminated(null);
        }
        input.AdvanceTo(buffer.Start, buffer.End);
        return false;
    }

    // Whether the bytes so far can be the start of "HTTP/1.x ".
    private static bool StartsLikeResponse(in ReadOnlySequence<byte> buffer)
    {
        var prefix = "HTTP/1."u8;
        Span<byte> start = stackalloc byte[7];
        var length = (int)Math.Min(buffer.Length, prefix.Length);
        buffer.Slice(0, length).CopyTo(start);
        return start[..length].SequenceEqual(prefix[..length]);
    }

    private static bool TryParseHead(UpstreamConnection connection, in ReadOnlySequence<byte> buffer, out SequencePosition consumed)
    {
        var reader = new SequenceReader<byte>(buffer);
        var done = connection.Parser.TryParse(ref reader, connection.Head);
        consumed = reader.Position;
        return done;
    }

    private void CopyResponseHead(ResponseHead head, BodyFraming framing)
    {
        var response = _context.Response;
        response.StatusCode = head.StatusCode;
        if (head.ReasonPhrase.Length > 0 && _context.Features.Get<IHttpResponseFeature>() is { } feature)
        {
            feature.ReasonPhrase = head.ReasonPhrase;
        }
        var headers = response.Headers;
        var tokens = head.ConnectionTokens;
        var upgrade = framing.Kind == BodyKind.Upgrade;
        foreach (var (name, value) in head.Headers)
        {
            if ((HopByHop.IsHopByHopOrManaged(name) && !(upgrade && name.Equals("Upgrade", StringComparison.OrdinalIgnoreCase)))
                || (tokens.Count > 0 && HopByHop.IsNamedBy(tokens, name)))
            {
                continue;
            }
            headers.Append(name, value);
        }
        if (_listener?.Listener.Hsts is { } hsts)
        {
            // The listener's policy replaces the destination's; a route's response header rule, applied next, can still change it.
            headers.StrictTransportSecurity = hsts.HeaderValue;
        }
        if (head.ContentLength >= 0 && head.StatusCode != StatusCodes.Status204NoContent && !head.IsInformational)
        {
            response.ContentLength = head.ContentLength;
        }
        if (_route.Config.Transforms.ResponseHeaders is { Length: > 0 } rules)
        {
            Transforms.ApplyResponse(headers, rules, head.StatusCode);
        }
    }

    // Returns true when the connection's input holds nothing beyond this response (a reuse precondition).
    private async Task<bool> CopyBodyAsync(UpstreamConnection connection, BodyFraming framing, CancellationToken ct)
    {
        var input = connection.Input;
        var output = _context.Response.BodyWriter;
        switch (framing.Kind)
        {
            case BodyKind.None:
                return !HasBufferedInput(input);
            case BodyKind.ContentLength:
            {
                var remaining = framing.ContentLength;
                var clean = true;
                while (remaining > 0)
                {
                    connection.SetDeadline(Limit(_timeouts.BodyInactivity));
                    var read = await input.ReadAsync(ct);
                    var buffer = read.Buffer;
                    var take = buffer.Length <= remaining ? buffer : buffer.Slice(0, remaining);
                    Write(output, take);
                    _record.BytesOut += take.Length;
                    remaining -= take.Length;
                    clean = take.Length == buffer.Length;
                    input.AdvanceTo(take.End);
                    if (remaining > 0 && read.IsCompleted)
                    {
                        throw new ProxyException(ProxyError.ResponseIncomplete,
                            $"the destination closed the connection {remaining} bytes before the end of the body");
                    }
                    ClientFlushed(await output.FlushAsync(_context.RequestAborted));
                }
                return clean;
            }
            case BodyKind.Chunked:
            {
                var decoder = connection.Chunked;
                decoder.Reset();
                while (true)
                {
                    connection.SetDeadline(Limit(_timeouts.BodyInactivity));
                    var read = await input.ReadAsync(ct);
                    var (complete, consumed, leftover, written) = DecodeChunks(decoder, read.Buffer, output);
                    _record.BytesOut += written;
                    input.AdvanceTo(consumed, complete ? consumed : read.Buffer.End);
                    if (complete)
                    {
                        if (decoder.Trailers.Count > 0 && _context.Response.SupportsTrailers())
                        {
                            var tokens = connection.Head.ConnectionTokens;
                            foreach (var (name, value) in decoder.Trailers)
                            {
                                if (HopByHop.IsAllowedTrailer(name, tokens))
                                {
                                    _context.Response.AppendTrailer(name, value);
                                }
                            }
                        }
                        ClientFlushed(await output.FlushAsync(_context.RequestAborted));
                        return !leftover;
                    }
                    if (read.IsCompleted)
                    {
                        throw new ProxyException(ProxyError.ResponseIncomplete, "the destination closed the connection before the last chunk");
                    }
                    if (written > 0)
                    {
                        // Only content is worth sending the head early for: while nothing but chunk framing or trailers
                        // came, a failure (a trailer section over the limit) can still be answered with a status.
                        ClientFlushed(await output.FlushAsync(_context.RequestAborted));
                    }
                }
            }
            default: // CloseDelimited: the body ends when the destination closes.
                while (true)
                {
                    connection.SetDeadline(Limit(_timeouts.BodyInactivity));
                    var read = await input.ReadAsync(ct);
                    Write(output, read.Buffer);
                    _record.BytesOut += read.Buffer.Length;
                    input.AdvanceTo(read.Buffer.End);
                    ClientFlushed(await output.FlushAsync(_context.RequestAborted));
                    if (read.IsCompleted)
                    {
                        return false;
                    }
                }
        }
    }

    private static (bool Complete, SequencePosition Consumed, bool Leftover, long Written) DecodeChunks(ChunkedDecoder decoder, in ReadOnlySequence<byte> buffer, PipeWriter output)
    {
        var reader = new SequenceReader<byte>(buffer);
        long written = 0;
        while (true)
        {
            switch (decoder.Read(ref reader, out var data))
            {
                case ChunkedStatus.Data:
                    Write(output, data);
                    written += data.Length;
                    break;
                case ChunkedStatus.Complete:
                    return (true, reader.Position, !reader.End, written);
                default:
                    return (false, reader.Position, false, written);
            }
        }
    }

    private static void Write(PipeWriter output, in ReadOnlySequence<byte> data)
    {
        foreach (var segment in data)
        {
            output.Write(segment.Span);
        }
    }

    // Awaited in the copy loops themselves: an async helper cost an allocation per flush that did not complete at once,
    // which a streamed body has for most of its reads.
    private static void ClientFlushed(FlushResult result)
    {
        if (result.IsCanceled || result.IsCompleted)
        {
            throw new ProxyException(ProxyError.ClientAborted, "client went away while streaming the response body");
        }
    }

    private static bool HasBufferedInput(PipeReader input) =>
        input.TryRead(out var read) && ConsumeNothing(input, read);

    private static bool ConsumeNothing(PipeReader input, ReadResult read)
    {
        var any = !read.Buffer.IsEmpty;
        input.AdvanceTo(read.Buffer.Start);
        return any || read.IsCompleted;
    }

    // Both directions are copied until either side ends or both are silent for Timeouts:TunnelIdle; the other is
    // then shut down so both finish. The access log line is written when the tunnel ends: bytes each way, the
    // duration and how it ended.
    private async Task TunnelAsync(UpstreamConnection connection)
    {
        var upgrade = _context.Features.Get<IHttpUpgradeFeature>()!;
        var client = await upgrade.UpgradeAsync();
        var idle = Limit(_timeouts.TunnelIdle);
        using var silence = new CancellationTokenSource(idle, _time);
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(silence.Token, _context.RequestAborted);
        await using (client)
        {
            var toClient = PumpToClientAsync(connection.Input, client, silence, idle, stop.Token);
            var toUpstream = PumpToUpstreamAsync(client, connection, silence, idle, stop.Token);
            var first = await Task.WhenAny(toClient, toUpstream);
            _record.TunnelEnd = silence.IsCancellationRequested ? TunnelEnds.IdleTimeout
                : first == toClient ? (first.IsCompletedSuccessfully ? TunnelEnds.DestinationClosed : TunnelEnds.DestinationReset)
                : first.IsCompletedSuccessfully && !_context.RequestAborted.IsCancellationRequested ? TunnelEnds.ClientClosed
                : TunnelEnds.ClientReset;
            if (first == toClient || !first.IsCompletedSuccessfully)
            {
                await client.DisposeAsync();
                stop.Cancel();
            }
            try
            {
                await Task.WhenAll(toClient, toUpstream);
            }
            catch (Exception ex) when (ex is IOException or OperationCanceledException or ObjectDisposedException)
            {
                // One side closed abruptly or the tunnel fell silent; it is over either way.
            }
        }
    }

    private async Task PumpToClientAsync(PipeReader input, Stream client, CancellationTokenSource silence, TimeSpan idle, CancellationToken ct)
    {
        while (true)
        {
            var read = await input.ReadAsync(ct);
            foreach (var segment in read.Buffer)
            {
                await client.WriteAsync(segment, ct);
            }
            await client.FlushAsync(ct);
            _record.BytesOut += read.Buffer.Length;
            input.AdvanceTo(read.Buffer.End);
            if (read.IsCompleted)
            {
                return;
            }
            silence.CancelAfter(idle);
        }
    }

    private async Task PumpToUpstreamAsync(Stream client, UpstreamConnection connection, CancellationTokenSource silence, TimeSpan idle, CancellationToken ct)
    {
        var buffer = ArrayPool<byte>.Shared.Rent(16 * 1024);
        try
        {
            int n;
            while ((n = await client.ReadAsync(buffer, ct)) > 0)
            {
                await connection.Output.WriteAsync(buffer.AsMemory(0, n), ct);
                _record.BytesIn += n;
                silence.CancelAfter(idle);
            }
            await connection.ShutdownSendAsync();
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }
}
