using System.Buffers;
using System.Globalization;
using System.IO.Pipelines;
using System.Text;
using Microsoft.AspNetCore.WebUtilities;

namespace Ferry.Lab;

/// <summary>
/// One request on one connection, as a script sees it: the head, the body (read on demand), and the means to
/// answer, misbehave or end the connection. If the script neither closes nor resets, the connection goes on to
/// its next request once the response is complete (an unread request body is drained first).
/// </summary>
// Over 500 lines on purpose: a script is a lambda over this one object, so every way to read the request (framed,
// chunked, raw) and to answer or misbehave (interim responses, partial heads, stalls, FIN, RST) is a member here.
internal sealed class LabExchange
{
    /// <summary>Bound on <see cref="ReadBodyAsync(CancellationToken)"/>, which buffers; larger bodies are for <see cref="Body"/>.</summary>
    public const int MaxBufferedBody = 64 * 1024 * 1024;

    /// <summary>Bound on a chunk-size line and on the trailer section, as for the head (Kestrel's limits are similar).</summary>
    private const int MaxChunkLine = 4 * 1024;

    private readonly LabConnection _connection;
    private readonly LabRequestHead _head;

    // Request body state.
    private readonly bool _chunkedRequest;
    private readonly bool _expectContinue;       // "Expect: 100-continue" on an HTTP/1.1 request
    private bool _continueSent;                  // the interim 100 went out (or a final response made it moot)
    private bool _bodyDone;                      // every body byte (and for chunked, the trailers) was consumed
    private long _remaining;                     // bytes left in the body (Content-Length) or the current chunk
    private ChunkPhase _chunkPhase;

    // Response state.
    private bool _responseHasBody;               // false for HEAD, 1xx, 204 and 304
    private bool _responseChunked;
    private long? _responseLength;               // declared Content-Length, null when chunked or close-delimited
    private long _responseBytesWritten;

    private enum ChunkPhase { Size, Data, DataEnd, Trailers }

    public LabExchange(LabConnection connection, LabRequestHead head, int connectionRequestIndex)
    {
        _connection = connection;
        _head = head;
        ConnectionRequestIndex = connectionRequestIndex;
        Body = new LabBodyStream(this);

        // Request framing, RFC 9112 §6.3.
        string? transferEncoding = head.Header("Transfer-Encoding");
        string? contentLength = head.Header("Content-Length");
        if (transferEncoding is not null)
        {
            if (contentLength is not null)
            {
                // Allowed to reject by §6.1; a test upstream should make smuggling attempts loud.
                throw new LabBadRequestException(400, "both Transfer-Encoding and Content-Length");
            }
            if (!string.Equals(transferEncoding.Trim(), "chunked", StringComparison.OrdinalIgnoreCase))
            {
                throw new LabBadRequestException(501, "unsupported transfer coding");
            }
            _chunkedRequest = true;
        }
        else if (contentLength is not null)
        {
            if (!long.TryParse(contentLength, NumberStyles.None, CultureInfo.InvariantCulture, out _remaining)
                || head.Headers.Count(h => string.Equals(h.Key, "Content-Length", StringComparison.OrdinalIgnoreCase)) != 1)
            {
                throw new LabBadRequestException(400, "invalid Content-Length");
            }
            ContentLength = _remaining;
            _bodyDone = _remaining == 0;
        }
        else
        {
            _bodyDone = true;
        }
        _expectContinue = head.MinorVersion == 1
            && string.Equals(head.Header("Expect"), "100-continue", StringComparison.OrdinalIgnoreCase);
    }

    public string Method => _head.Method;
    public string Target => _head.Target;
    /// <summary>The target without its query.</summary>
    public string Path => _head.Path;
    /// <summary>0 for HTTP/1.0, 1 for HTTP/1.1.</summary>
    public int MinorVersion => _head.MinorVersion;
    public IReadOnlyList<KeyValuePair<string, string>> Headers => _head.Headers;
    /// <summary>The request head exactly as received.</summary>
    public string RawHead => _head.Raw;
    /// <summary>1 for the first request on this connection.</summary>
    public int ConnectionRequestIndex { get; }
    public LabUpstreamOptions Options => _connection.Options;

    public bool HasChunkedBody => _chunkedRequest;
    /// <summary>The declared Content-Length; null for a chunked body or no body.</summary>
    public long? ContentLength { get; }
    /// <summary>The request body as a read-only stream (Content-Length or chunked framing removed).</summary>
    public Stream Body { get; }

    public bool ResponseStarted { get; private set; }
    public bool ResponseCompleted { get; private set; }
    /// <summary>The connection ends after this exchange (decided when the response head is written, or by Close/Reset).</summary>
    public bool ClosesConnection { get; private set; }

    /// <summary>Every byte of the request body was read: closing now leaves nothing unread in the socket.</summary>
    public bool BodyDone => _bodyDone;

    /// <summary>The connection's input, past this request's head: for upgraded connections (after 101) and
    /// scripts that take the wire into their own hands.</summary>
    public PipeReader RawInput => _connection.Input;
    /// <summary>The connection's output, for the same uses as <see cref="RawInput"/>.</summary>
    public PipeWriter RawOutput => _connection.Output;

    public string? Header(string name) => _head.Header(name);
    public bool HasToken(string name, string token) => _head.HasToken(name, token);

    // ---- Request body ----

    /// <summary>Reads up to <paramref name="buffer"/>.Length body bytes; 0 at the end of the body.
    /// Sends "100 Continue" first when the client asked for it.</summary>
    /// <exception cref="IOException">The client closed before the end of the body.</exception>
    public async ValueTask<int> ReadBodyAsync(Memory<byte> buffer, CancellationToken ct)
    {
        if (_bodyDone || buffer.IsEmpty)
        {
            return 0;
        }
        if (_expectContinue && !_continueSent && !ResponseStarted)
        {
            // Sent on first read, as Kestrel does: a handler that answers without reading spares the client the upload.
            await WriteInterimAsync(100, null, ct);
        }
        return _chunkedRequest ? await ReadChunkedAsync(buffer, ct) : await ReadDataAsync(buffer, ct);
    }

    /// <summary>The whole body, for small bodies (at most <see cref="MaxBufferedBody"/>, else 413).</summary>
    public async Task<byte[]> ReadBodyAsync(CancellationToken ct)
    {
        using var collected = new MemoryStream();
        byte[] chunk = ArrayPool<byte>.Shared.Rent(16 * 1024);
        try
        {
            int read;
            while ((read = await ReadBodyAsync(chunk, ct)) > 0)
            {
                if (collected.Length + read > MaxBufferedBody)
                {
                    throw new LabBadRequestException(413, "request body too large to buffer");
                }
                collected.Write(chunk, 0, read);
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(chunk);
        }
        return collected.ToArray();
    }

    /// <summary>Reads and discards the rest of the body; returns how many bytes that was.</summary>
    public async Task<long> DrainBodyAsync(CancellationToken ct)
    {
        if (_bodyDone)
        {
            return 0;
        }
        if (_expectContinue && !_continueSent && !ResponseStarted)
        {
            await WriteInterimAsync(100, null, ct);
        }
        // One loop over the input, without copying: a read through ReadBodyAsync per buffered piece cost an
        // allocation or two each, which a large upload through /sink multiplied by the thousand.
        long total = 0;
        while (!_bodyDone)
        {
            total += SkipBufferedBody(await Input.ReadAsync(ct));
        }
        return total;
    }

    /// <summary>Consumes the body bytes and chunk framing that <paramref name="result"/> holds; returns the body bytes.</summary>
    private long SkipBufferedBody(in ReadResult result)
    {
        var buffer = result.Buffer;
        long skipped = 0;
        while (!_bodyDone)
        {
            if (!_chunkedRequest || _chunkPhase == ChunkPhase.Data)
            {
                long count = Math.Min(buffer.Length, _remaining);
                if (count == 0)
                {
                    break;
                }
                buffer = buffer.Slice(count);
                skipped += count;
                _remaining -= count;
                if (_remaining == 0)
                {
                    _chunkPhase = ChunkPhase.DataEnd;
                    _bodyDone = !_chunkedRequest;
                }
            }
            else if (TryReadChunkFraming(buffer, out var consumed))
            {
                buffer = buffer.Slice(consumed);
            }
            else
            {
                if (buffer.Length > MaxChunkLine)
                {
                    throw new LabBadRequestException(400, "chunk framing line too long");
                }
                break;
            }
        }
        if (_bodyDone)
        {
            // What follows is the next request (pipelining): left unexamined.
            Input.AdvanceTo(buffer.Start);
            return skipped;
        }
        Input.AdvanceTo(buffer.Start, buffer.End);
        if (result.IsCompleted)
        {
            throw new IOException("the client closed the connection inside the request body");
        }
        return skipped;
    }

    private PipeReader Input => _connection.Input;

    private async ValueTask<int> ReadDataAsync(Memory<byte> destination, CancellationToken ct)
    {
        var result = await Input.ReadAsync(ct);
        var buffer = result.Buffer;
        if (buffer.IsEmpty && result.IsCompleted)
        {
            throw new IOException("the client closed the connection inside the request body");
        }
        int count = (int)Math.Min(Math.Min(buffer.Length, destination.Length), _remaining);
        buffer.Slice(0, count).CopyTo(destination.Span);
        Input.AdvanceTo(buffer.GetPosition(count));
        _remaining -= count;
        if (_remaining == 0)
        {
            if (_chunkedRequest)
            {
                _chunkPhase = ChunkPhase.DataEnd;
            }
            else
            {
                _bodyDone = true;
            }
        }
        return count;
    }

    private async ValueTask<int> ReadChunkedAsync(Memory<byte> destination, CancellationToken ct)
    {
        while (!_bodyDone)
        {
            if (_chunkPhase == ChunkPhase.Data)
            {
                return await ReadDataAsync(destination, ct);
            }
            var result = await Input.ReadAsync(ct);
            var buffer = result.Buffer;
            if (TryReadChunkFraming(buffer, out var consumed))
            {
                Input.AdvanceTo(consumed);
                continue;
            }
            Input.AdvanceTo(buffer.Start, buffer.End);
            if (buffer.Length > MaxChunkLine)
            {
                throw new LabBadRequestException(400, "chunk framing line too long");
            }
            if (result.IsCompleted)
            {
                throw new IOException("the client closed the connection inside the chunked request body");
            }
        }
        return 0;
    }

    /// <summary>Consumes one piece of chunked framing (RFC 9112 §7.1): a size line, the CRLF after data, or one trailer line.</summary>
    private bool TryReadChunkFraming(ReadOnlySequence<byte> buffer, out SequencePosition consumed)
    {
        var reader = new SequenceReader<byte>(buffer);
        consumed = buffer.Start;
        if (!reader.TryReadTo(out ReadOnlySequence<byte> line, "\r\n"u8))
        {
            return false;
        }
        consumed = reader.Position;
        if (line.Length > MaxChunkLine)
        {
            throw new LabBadRequestException(400, "chunk framing line too long");
        }
        switch (_chunkPhase)
        {
            case ChunkPhase.Size:
                string text = Encoding.Latin1.GetString(line);
                int extension = text.IndexOf(';');
                string size = (extension < 0 ? text : text[..extension]).TrimEnd(' ', '\t');
                if (size.Length is 0 or > 15
                    || !long.TryParse(size, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out _remaining))
                {
                    throw new LabBadRequestException(400, "invalid chunk size");
                }
                _chunkPhase = _remaining == 0 ? ChunkPhase.Trailers : ChunkPhase.Data;
                break;
            case ChunkPhase.DataEnd:
                if (!line.IsEmpty)
                {
                    throw new LabBadRequestException(400, "chunk data not followed by CRLF");
                }
                _chunkPhase = ChunkPhase.Size;
                break;
            case ChunkPhase.Trailers:
                // Trailer fields are read and dropped; an empty line ends the body.
                _bodyDone = line.IsEmpty;
                break;
        }
        return true;
    }

    // ---- Response ----

    /// <summary>Raw bytes straight to the socket, bypassing every framing rule (for malformed responses).</summary>
    public async Task WriteRawAsync(ReadOnlyMemory<byte> bytes, CancellationToken ct)
    {
        ResponseStarted = true;
        await _connection.Output.WriteAsync(bytes, ct);
    }

    /// <summary>Sends a 1xx interim response (not to HTTP/1.0 clients, RFC 9110 §15.2).</summary>
    public async Task WriteInterimAsync(int status, IEnumerable<KeyValuePair<string, string>>? headers, CancellationToken ct)
    {
        if (status is < 100 or > 199 or 101)
        {
            throw new ArgumentOutOfRangeException(nameof(status), status, "an interim response is 1xx other than 101");
        }
        if (ResponseStarted)
        {
            throw new InvalidOperationException("the final response has started");
        }
        if (status == 100)
        {
            _continueSent = true;
        }
        if (_head.MinorVersion == 0)
        {
            return;
        }
        var head = new StringBuilder();
        AppendStatusLine(head, status);
        AppendHeaders(head, headers);
        head.Append("\r\n");
        await _connection.Output.WriteAsync(Encoding.Latin1.GetBytes(head.ToString()), ct);
    }

    /// <summary>
    /// Writes the final response head. The framing is decided here and only here: <paramref name="contentLength"/>
    /// gives Content-Length, null gives chunked (or a close-delimited body for an HTTP/1.0 client). HEAD, 204 and
    /// 304 responses carry no body (RFC 9110 §6.4.1). 101 hands the connection over to the caller, and it closes
    /// when the exchange ends. Connection and Keep-Alive follow the options.
    /// </summary>
    public async Task WriteHeadAsync(int status, IEnumerable<KeyValuePair<string, string>>? headers, long? contentLength, CancellationToken ct)
    {
        if (status is < 101 or > 999 || (status < 200 && status != 101))
        {
            throw new ArgumentOutOfRangeException(nameof(status), status, "a final response status is 101 or 200-999");
        }
        if (ResponseStarted)
        {
            throw new InvalidOperationException("the response has already started");
        }
        var extra = headers?.ToList() ?? [];
        if (extra.Any(h => h.Key.Equals("Content-Length", StringComparison.OrdinalIgnoreCase)
                           || h.Key.Equals("Transfer-Encoding", StringComparison.OrdinalIgnoreCase)))
        {
            throw new ArgumentException("framing comes from contentLength; use WriteRawAsync for custom framing", nameof(headers));
        }
        ResponseStarted = true;

        var head = new StringBuilder(256);
        AppendStatusLine(head, status);
        head.Append("Date: ").Append(Options.TimeProvider.GetUtcNow().ToString("R", CultureInfo.InvariantCulture)).Append("\r\n");
        AppendHeaders(head, extra);
        head.Append("X-Upstream: ").Append(Options.Name).Append("\r\n");
        head.Append("X-Connection-Request: ").Append(ConnectionRequestIndex).Append("\r\n");

        if (status == 101)
        {
            ClosesConnection = true;
            ResponseCompleted = true;
            head.Append("\r\n");
            await _connection.Output.WriteAsync(Encoding.Latin1.GetBytes(head.ToString()), ct);
            return;
        }

        bool bodyAllowed = status is not (204 or 304);
        _responseHasBody = bodyAllowed && !Method.Equals("HEAD", StringComparison.Ordinal);
        bool closeDelimited = false;
        if (bodyAllowed)
        {
            if (contentLength is { } length)
            {
                ArgumentOutOfRangeException.ThrowIfNegative(length, nameof(contentLength));
                _responseLength = length;
                head.Append("Content-Length: ").Append(length).Append("\r\n");
            }
            else if (_head.MinorVersion == 1)
            {
                _responseChunked = true;
                head.Append("Transfer-Encoding: chunked\r\n");
            }
            else
            {
                // HTTP/1.0 has no chunked coding: the end of the connection ends the body (RFC 9112 §6.3).
                closeDelimited = true;
            }
        }

        bool last = Options.MaxRequestsPerConnection is { } max && ConnectionRequestIndex >= max;
        // A client that sent "Expect: 100-continue" and got no 100 may or may not send its body: the connection
        // cannot be reused safely (RFC 9110 §10.1.1), so close it.
        bool unsentBody = _expectContinue && !_continueSent && !_bodyDone;
        bool mustClose = !Options.KeepAlive || !_head.WantsKeepAlive || closeDelimited || unsentBody
                         || extra.Any(h => h.Key.Equals("Connection", StringComparison.OrdinalIgnoreCase)
                                           && h.Value.Contains("close", StringComparison.OrdinalIgnoreCase));
        ClosesConnection = mustClose || last;
        bool announceClose = mustClose || (last && Options.AnnounceLastRequest);
        if (announceClose)
        {
            head.Append("Connection: close\r\n");
        }
        else
        {
            if (_head.MinorVersion == 0)
            {
                head.Append("Connection: keep-alive\r\n");
            }
            if (Options.AnnounceKeepAlive)
            {
                AppendKeepAlive(head, last);
            }
        }
        head.Append("\r\n");
        await _connection.Output.WriteAsync(Encoding.Latin1.GetBytes(head.ToString()), ct);
        if (!_responseHasBody)
        {
            ResponseCompleted = true;
        }
    }

    private void AppendKeepAlive(StringBuilder head, bool silentLast)
    {
        var parameters = new List<string>(2);
        if ((Options.AnnouncedIdleTimeout ?? Options.IdleTimeout) is { } idle)
        {
            // Whole seconds, rounded down: the connection is closed no earlier than announced.
            parameters.Add(FormattableString.Invariant($"timeout={(long)idle.TotalSeconds}"));
        }
        if (Options.MaxRequestsPerConnection is { } max && !silentLast)
        {
            parameters.Add(FormattableString.Invariant($"max={max - ConnectionRequestIndex}"));
        }
        if (parameters.Count > 0)
        {
            head.Append("Keep-Alive: ").AppendJoin(", ", parameters).Append("\r\n");
        }
    }

    /// <summary>Writes body bytes of a response started with <see cref="WriteHeadAsync"/> (as one chunk when chunked).</summary>
    public async Task WriteBodyAsync(ReadOnlyMemory<byte> bytes, CancellationToken ct)
    {
        if (!ResponseStarted || (ResponseCompleted && _responseHasBody))
        {
            throw new InvalidOperationException("no response body is open");
        }
        if (!_responseHasBody || bytes.IsEmpty)
        {
            return;
        }
        _responseBytesWritten += bytes.Length;
        if (_responseBytesWritten > _responseLength)
        {
            throw new InvalidOperationException("more body bytes than the declared Content-Length");
        }
        var output = _connection.Output;
        if (_responseChunked)
        {
            Encoding.Latin1.GetBytes(FormattableString.Invariant($"{bytes.Length:x}\r\n"), output);
            output.Write(bytes.Span);
            output.Write("\r\n"u8);
            await output.FlushAsync(ct);
        }
        else
        {
            await output.WriteAsync(bytes, ct);
        }
    }

    /// <summary>Ends the response body (the last chunk when chunked).</summary>
    public async Task CompleteResponseAsync(CancellationToken ct)
    {
        if (!ResponseStarted)
        {
            throw new InvalidOperationException("no response has started");
        }
        if (ResponseCompleted)
        {
            return;
        }
        if (_responseLength is { } length && _responseBytesWritten != length)
        {
            throw new InvalidOperationException("fewer body bytes than the declared Content-Length");
        }
        if (_responseChunked)
        {
            await _connection.Output.WriteAsync("0\r\n\r\n"u8.ToArray(), ct);
        }
        ResponseCompleted = true;
    }

    /// <summary>A complete response with Content-Length and the keep-alive behaviour of the options.</summary>
    public async Task WriteResponseAsync(int status, string body, IEnumerable<KeyValuePair<string, string>>? headers = null, CancellationToken ct = default)
    {
        byte[] bytes = Encoding.UTF8.GetBytes(body);
        await WriteHeadAsync(status, headers ?? [new("Content-Type", "text/plain; charset=utf-8")], bytes.Length, ct);
        await WriteBodyAsync(bytes, ct);
        await CompleteResponseAsync(ct);
    }

    // ---- Connection ----

    /// <summary>FIN: no more requests on this connection. Bytes the client still sends are read and dropped
    /// for a while, so the close stays a FIN rather than an RST.</summary>
    public void Close()
    {
        ClosesConnection = true;
        _connection.Close();
    }

    /// <summary>A plain close() once the response is out: FIN, and RST for anything that arrives afterwards.</summary>
    public void CloseNow()
    {
        ClosesConnection = true;
        _connection.CloseNow();
    }

    /// <summary>RST: SO_LINGER(0) then close.</summary>
    public void Reset()
    {
        ClosesConnection = true;
        _connection.Reset();
    }

    /// <summary>Never answers: completes by throwing <see cref="OperationCanceledException"/> when
    /// <paramref name="ct"/> is cancelled or the upstream is disposed, which then closes the connection.</summary>
    public async Task StallAsync(CancellationToken ct)
    {
        using var stallOrStopping = CancellationTokenSource.CreateLinkedTokenSource(ct, _connection.Stopping);
        await Task.Delay(Timeout.InfiniteTimeSpan, Options.TimeProvider, stallOrStopping.Token);
    }

    internal static byte[] FormatRejection(int status, string reason, string upstreamName)
    {
        byte[] body = Encoding.UTF8.GetBytes(reason + "\n");
        var head = new StringBuilder();
        AppendStatusLine(head, status);
        head.Append("Content-Type: text/plain; charset=utf-8\r\n");
        head.Append("Content-Length: ").Append(body.Length).Append("\r\n");
        head.Append("X-Upstream: ").Append(upstreamName).Append("\r\n");
        head.Append("Connection: close\r\n\r\n");
        return [.. Encoding.Latin1.GetBytes(head.ToString()), .. body];
    }

    private static void AppendStatusLine(StringBuilder head, int status)
    {
        string reason = ReasonPhrases.GetReasonPhrase(status);
        head.Append("HTTP/1.1 ").Append(status).Append(' ').Append(reason.Length == 0 ? "Unknown" : reason).Append("\r\n");
    }

    private static void AppendHeaders(StringBuilder head, IEnumerable<KeyValuePair<string, string>>? headers)
    {
        foreach (var (name, value) in headers ?? [])
        {
            head.Append(name).Append(": ").Append(value).Append("\r\n");
        }
    }

    /// <summary>The request body as a forward-only, read-only stream (asynchronous reads only).</summary>
    private sealed class LabBodyStream(LabExchange exchange) : Stream
    {
        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

        public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) =>
            exchange.ReadBodyAsync(buffer, cancellationToken);

        public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
            exchange.ReadBodyAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

        public override int Read(byte[] buffer, int offset, int count) =>
            throw new NotSupportedException("the request body is read asynchronously");

        public override void Flush() => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }
}
