using System.Buffers;
using System.Net;
using System.Net.Sockets;
using Ferry.Http1;
using Ferry.Upstream;

namespace Ferry.Probe;

/// <summary>How a connection ended, as the client saw it.</summary>
internal enum CloseKind
{
    /// <summary>Still open, or it ended by our own hand.</summary>
    None,

    /// <summary>The peer closed with a FIN: the read returned 0 bytes.</summary>
    Fin,

    /// <summary>The peer reset the connection: the read failed with ECONNRESET.</summary>
    Reset,
}

/// <summary>What a probe needs to know about one response.</summary>
internal sealed record ProbeResponse(
    int StatusCode,
    int MinorVersion,
    bool KeepAlivePermitted,
    bool ConnectionClose,
    string? Connection,
    string? KeepAlive,
    int KeepAliveTimeoutSeconds,
    int KeepAliveMax,
    string? Server,
    long CompletedAt);

/// <summary>
/// One client connection speaking HTTP/1.x with Ferry's own wire code over a raw socket: unlike HttpClient it shows
/// every connection, when it closes and how (FIN or RST). A receive can stay pending while the connection is idle,
/// so a close is seen the moment it happens, and a request may be sent while that receive is still pending: the
/// response is read from it.
/// </summary>
internal sealed class ProbeConnection : IDisposable
{
    private readonly Socket _socket;
    private readonly TimeProvider _time;
    private readonly ResponseHeadParser _parser = new(Http1Limits.Default);
    private readonly ResponseHead _head = new();
    private readonly ChunkedDecoder _chunked = new(Http1Limits.Default);
    private byte[] _buffer = new byte[16 * 1024];
    private int _start;                 // first unconsumed byte
    private int _end;                   // one past the last received byte
    private Task<int>? _receive;        // the pending receive into _buffer[_end..], if any
    private long _received;             // bytes received since the connection opened

    private ProbeConnection(Socket socket, TimeProvider time)
    {
        _socket = socket;
        _time = time;
    }

    /// <summary>How the peer ended the connection; None while it is open.</summary>
    public CloseKind Closed { get; private set; }

    /// <summary>TimeProvider timestamp of the peer's FIN or RST, once <see cref="WaitForCloseAsync"/> has seen it.</summary>
    public long ClosedAt { get; private set; }

    /// <summary>Bytes that arrived and were not consumed as a response: a partial head, or stray bytes while idle.</summary>
    public bool HasUnconsumedBytes => _end > _start;

    public static async Task<ProbeConnection> ConnectAsync(IPEndPoint endPoint, TimeProvider time, CancellationToken ct)
    {
        var socket = new Socket(endPoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        try
        {
            await socket.ConnectAsync(endPoint, ct);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
        return new ProbeConnection(socket, time);
    }

    /// <summary>Sends a request, head and body (a small form, when given) in one send, as an HTTP client library
    /// does. HTTP/1.0 requests ask for keep-alive explicitly (RFC 9112 §C.2.2), otherwise the server would close
    /// after answering and nothing would be learned.</summary>
    public async Task SendAsync(string method, string target, string authority, int minorVersion, CancellationToken ct,
        ReadOnlyMemory<byte> body = default)
    {
        var writer = new ArrayBufferWriter<byte>(256 + body.Length);
        if (minorVersion == 1)
        {
            RequestHeadWriter.WriteRequestLine(writer, method, target);
        }
        else
        {
            // RequestHeadWriter only writes HTTP/1.1, as Ferry only speaks 1.1 upstream; the same checks apply.
            HeadWriting.ValidateToken(method, nameof(method));
            HeadWriting.ValidateTarget(target, nameof(target));
            writer.Write(System.Text.Encoding.Latin1.GetBytes($"{method} {target} HTTP/1.0\r\n"));
            RequestHeadWriter.WriteHeader(writer, "Connection", "keep-alive");
        }
        RequestHeadWriter.WriteHeader(writer, "Host", authority);
        RequestHeadWriter.WriteHeader(writer, "User-Agent", "ferry-probe");
        RequestHeadWriter.WriteHeader(writer, "Accept", "*/*");
        if (!body.IsEmpty)
        {
            RequestHeadWriter.WriteHeader(writer, "Content-Length", body.Length.ToString(System.Globalization.CultureInfo.InvariantCulture));
            RequestHeadWriter.WriteHeader(writer, "Content-Type", "application/x-www-form-urlencoded");
        }
        RequestHeadWriter.WriteEnd(writer);
        writer.Write(body.Span);
        var memory = writer.WrittenMemory;
        while (!memory.IsEmpty)
        {
            int sent = await _socket.SendAsync(memory, SocketFlags.None, ct);
            memory = memory[sent..];
        }
    }

    /// <summary>
    /// Reads one final response (1xx are skipped) and its whole body. Null when the connection was closed or reset
    /// before the first byte of a response: what a client sees when it loses a keep-alive race.
    /// </summary>
    /// <exception cref="Http1Exception">The bytes are not an HTTP/1.x response.</exception>
    /// <exception cref="IOException">The connection ended inside the response.</exception>
    public async Task<ProbeResponse?> ReadResponseAsync(bool headRequest, CancellationToken ct)
    {
        long before = _received - (_end - _start);
        while (true)
        {
            var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(_buffer, _start, _end - _start));
            if (_parser.TryParse(ref reader, _head))
            {
                _start += (int)reader.Consumed;
                if (_head.IsInformational)
                {
                    continue;
                }
                break;
            }
            if (Closed != CloseKind.None)
            {
                if (_received == before)
                {
                    return null;
                }
                throw new IOException($"the connection ended ({Closed}) inside a response head");
            }
            await ReceiveAsync(ct);
        }

        var framing = ResponseFraming.Decide(headRequest, requestedUpgrade: false, _head);
        var response = new ProbeResponse(
            _head.StatusCode,
            _head.MinorVersion,
            framing.KeepAlivePermitted,
            _head.ConnectionClose,
            Header("Connection"),
            Header("Keep-Alive"),
            _head.KeepAliveTimeoutSeconds,
            _head.KeepAliveMax,
            Header("Server"),
            CompletedAt: 0);
        await SkipBodyAsync(framing, ct);
        return response with { CompletedAt = ArrivedAt(data: true) };
    }

    /// <summary>Waits for the peer to end an idle connection. Returns Fin or Reset when it did; None when bytes
    /// arrived instead (they stay buffered). Cancelling leaves the receive pending for the next read.</summary>
    public async Task<CloseKind> WaitForCloseAsync(CancellationToken ct)
    {
        while (Closed == CloseKind.None && !HasUnconsumedBytes)
        {
            await ReceiveAsync(ct);
        }
        // An RST leaves no trace in TCP_INFO's times: it is dated when seen.
        ClosedAt = Closed == CloseKind.Fin ? ArrivedAt(data: false) : _time.GetTimestamp();
        return Closed;
    }

    // When the last data segment (or the last ACK-bearing one, such as a FIN) arrived, by the kernel's clock: the
    // moment a continuation runs can be tens of milliseconds later on a busy machine, which would shift an idle time
    // measured between two such moments. The kernel's ages are real time, so only the system clock is corrected.
    private long ArrivedAt(bool data)
    {
        long now = _time.GetTimestamp();
        if (!ReferenceEquals(_time, TimeProvider.System) || !TcpInfo.TryGetReceiveAges(_socket, out var sinceData, out var sinceAck))
        {
            return now;
        }
        var age = data ? sinceData : sinceAck;
        return now - (long)(age.TotalSeconds * _time.TimestampFrequency);
    }

    public void Dispose() => _socket.Dispose();

    private string? Header(string name)
    {
        string? value = null;
        foreach (var field in _head.Headers)
        {
            if (field.Key.Equals(name, StringComparison.OrdinalIgnoreCase))
            {
                value = value is null ? field.Value : value + ", " + field.Value;
            }
        }
        return value;
    }

    private async Task SkipBodyAsync(BodyFraming framing, CancellationToken ct)
    {
        switch (framing.Kind)
        {
            case BodyKind.ContentLength:
                long remaining = framing.ContentLength;
                while (remaining > 0)
                {
                    int take = (int)Math.Min(remaining, _end - _start);
                    _start += take;
                    remaining -= take;
                    if (remaining > 0)
                    {
                        await ReceiveOrThrowAsync(ct);
                    }
                }
                break;
            case BodyKind.Chunked:
                _chunked.Reset();
                while (true)
                {
                    var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(_buffer, _start, _end - _start));
                    var status = _chunked.Read(ref reader, out _);
                    _start += (int)reader.Consumed;
                    if (status == ChunkedStatus.Complete)
                    {
                        break;
                    }
                    if (status == ChunkedStatus.NeedMoreData)
                    {
                        await ReceiveOrThrowAsync(ct);
                    }
                }
                break;
            case BodyKind.CloseDelimited:
                while (Closed == CloseKind.None)
                {
                    _start = _end;
                    await ReceiveAsync(ct);
                }
                _start = _end;
                break;
        }
    }

    private async Task ReceiveOrThrowAsync(CancellationToken ct)
    {
        if (Closed != CloseKind.None)
        {
            throw new IOException($"the connection ended ({Closed}) inside a response body");
        }
        await ReceiveAsync(ct);
    }

    // One receive at a time, into the free space after _end. Cancellation abandons the wait, not the receive:
    // the next call awaits the same pending receive.
    private async Task ReceiveAsync(CancellationToken ct)
    {
        if (_receive is null)
        {
            if (Closed != CloseKind.None)
            {
                return;
            }
            MakeRoom();
            _receive = _socket.ReceiveAsync(_buffer.AsMemory(_end), SocketFlags.None).AsTask();
        }
        int count;
        try
        {
            count = await _receive.WaitAsync(ct);
        }
        catch (SocketException e) when (e.SocketErrorCode is SocketError.ConnectionReset or SocketError.ConnectionAborted)
        {
            _receive = null;
            Closed = CloseKind.Reset;
            return;
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            // The receive stays pending (its bytes, or the close, belong to the next call).
            throw;
        }
        catch
        {
            _receive = null;
            throw;
        }
        _receive = null;
        if (count == 0)
        {
            Closed = CloseKind.Fin;
            return;
        }
        _end += count;
        _received += count;
    }

    private void MakeRoom()
    {
        if (_start == _end)
        {
            _start = _end = 0;
        }
        if (_buffer.Length - _end >= 4096)
        {
            return;
        }
        int live = _end - _start;
        // Growth is bounded: the parser throws once MaxResponseHeaderBytes hold no complete head, and bodies are discarded.
        var target = live + 4096 > _buffer.Length ? new byte[Math.Max(_buffer.Length * 2, live + 4096)] : _buffer;
        Buffer.BlockCopy(_buffer, _start, target, 0, live);
        _buffer = target;
        _start = 0;
        _end = live;
    }
}
