using System.Buffers;
using System.IO.Pipelines;
using Ferry.Errors;
using Ferry.Http1;
using Ferry.Model;
using Ferry.Routing;
using Ferry.Upstream;
using Microsoft.AspNetCore.Http.Features;

namespace Ferry.Forwarding;

// One attempt of one request on one upstream connection: steps 4–7 of the request path. The phases, their deadlines
// and what a failure in each means are here; RequestHeadBuilder, BodyRelay and Tunnel do the work of a phase that
// needs none of that state.
internal sealed class Exchange
{
    private enum Phase { SendingRequest, WaitingForHead, ReadingBody, Tunnel }

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
    private long _bodySentAt; // when a streamed body's last byte was flushed; read after its task completed
    private readonly Hosting.ListenerConnectionFeature? _listener; // the request's, looked up once by the forwarder: PeerTrusted, Hsts

    // `attempt` holds what the lease said (Reused, ...).
    public Exchange(HttpContext context, Hosting.ListenerConnectionFeature? listener, RouteState route, UpstreamConnection connection, BufferedBody? body,
        RequestRecord record, AttemptRecord attempt, string? traceParent, TimeProvider time, ReplayDecision replay, StatusRetry? retryOnStatus = null)
    {
        _needsEvidence = replay.NeedsEvidence(attempt.Reused);
        _retryOnStatus = retryOnStatus;
        _traceParent = traceParent;
        _context = context;
        _listener = listener;
        _route = route;
        _connection = connection;
        _destination = connection.Destination;
        _reused = attempt.Reused;
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
            var upgrade = upgradable ? RequestHeadBuilder.UpgradeToForward(request, _route.Config) : null;
            var isUpgrade = upgrade is not null;
            connection.RequestCount++;

            // 4. Write the request head, then the body concurrently with waiting for the response. Before anything
            //    is sent, what the destination acknowledged so far is noted when it can decide a replay: if the
            //    destination closes before answering, it tells whether it can have received this request at all
            //    (docs/replay.md, "The evidence for a POST").
            _phase = Phase.SendingRequest;
            var mode = RequestHeadBuilder.Write(connection.Output, _context, _route.Config, _route.Cluster.Config.Forwarding, _destination.Authority,
                _listener?.PeerTrusted == true, _traceParent, upgrade, upgradable);
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
            if (!isUpgrade && DestinationLatency(bodyTask) is { } latency)
            {
                _destination.Pool.ObserveResponseHead(latency + (_attempt.ConnectTime ?? TimeSpan.Zero));
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
                retire = bodyTask is null ? await BodyRelay.DrainForRetryAsync(connection, framing, Limit(_timeouts.BodyInactivity), ct) : RetireReason.NotReusable;
                return false;
            }

            // 6. Stream the response to the client.
            CopyResponseHead(head, framing);
            if (framing.Kind == BodyKind.Upgrade)
            {
                _phase = Phase.Tunnel;
                connection.SetDeadline(Timeout.InfiniteTimeSpan);
                retire = RetireReason.NotReusable;
                await Tunnel.RunAsync(_context, connection, _record, Limit(_timeouts.TunnelIdle), _time);
                return true;
            }
            _phase = Phase.ReadingBody;
            var clean = await BodyRelay.CopyAsync(connection, framing, _context, _record, Limit(_timeouts.BodyInactivity), ct);
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
                        WriteWhole(output, slice);
                        inactivity.CancelAfter(Limit(_timeouts.SendRequest));
                        await output.FlushAsync(ct);
                        buffer = buffer.Slice(slice.End);
                    }
                    WriteWhole(output, buffer);
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
                _bodySentAt = _time.GetTimestamp();
                return true;
            }
        }
    }

    // One read of the request body (at most MaxUnflushedBody) into one buffer of the upstream writer: its flush writes
    // a buffer at a time, and the 4 KiB blocks of Kestrel's input copied one by one went out in a send(2) each.
    private static void WriteWhole(PipeWriter output, in ReadOnlySequence<byte> data)
    {
        var length = (int)data.Length;
        data.CopyTo(output.GetSpan(length));
        output.Advance(length);
    }

    // The destination's own latency to the response head, its accept queue included by the caller (the connect). For
    // a streamed request body, from its last byte: the client's upload speed is not the destination's. Without a
    // sample (a head that came before the body was sent whole) a destination only ever sent uploads kept the limit's
    // Initial 1 for good, and every upload waited in the queue for the one before it.
    private TimeSpan? DestinationLatency(Task<bool>? bodyTask) => bodyTask switch
    {
        null => _attempt.HeadTime,
        { IsCompletedSuccessfully: true, Result: true } => _time.GetElapsedTime(_bodySentAt),
        _ => null,
    };

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
}
