using System.Buffers;
using System.Net;
using System.Net.Sockets;
using Ferry.Http1;

namespace Ferry.Incidents;

/// <summary>
/// One keep-alive client connection of the load: sends a request with an optional small body (the probe's connection
/// only sends bodiless requests) and reads the response with Ferry's own parser and framing.
/// </summary>
internal sealed class LoadConnection : IDisposable
{
    private readonly Socket _socket;
    private readonly ResponseHeadParser _parser = new(Http1Limits.Default);
    private readonly ResponseHead _head = new();
    private readonly ChunkedDecoder _chunked = new(Http1Limits.Default);
    private byte[] _buffer = new byte[8 * 1024];
    private int _start;     // first unconsumed byte
    private int _end;       // one past the last received byte
    private bool _closed;   // the peer closed (FIN)

    private LoadConnection(Socket socket) => _socket = socket;

    public static async Task<LoadConnection> ConnectAsync(IPEndPoint endPoint, CancellationToken ct)
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
        return new LoadConnection(socket);
    }

    /// <summary>Head and body in one send, as a browser or an HTTP client library sends a small form.</summary>
    public async Task SendAsync(string method, string target, string authority, ReadOnlyMemory<byte> body, CancellationToken ct)
    {
        var writer = new ArrayBufferWriter<byte>(256 + body.Length);
        RequestHeadWriter.WriteRequestLine(writer, method, target);
        RequestHeadWriter.WriteHeader(writer, "Host", authority);
        RequestHeadWriter.WriteHeader(writer, "User-Agent", "ferry-lab");
        if (method != "GET" || !body.IsEmpty)
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
    /// Reads one final response and its whole body; returns its status and whether the connection may be reused.
    /// Null when the connection ended before any byte of a response.
    /// </summary>
    /// <exception cref="Http1Exception">The bytes are not an HTTP/1.x response.</exception>
    /// <exception cref="IOException">The connection ended inside the response.</exception>
    /// <exception cref="SocketException">The connection was reset.</exception>
    public async Task<(int Status, bool KeepAlive)?> ReadResponseAsync(CancellationToken ct)
    {
        bool any = _end > _start;
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
            if (!await ReceiveAsync(ct))
            {
                return any ? throw new IOException("the connection ended inside a response head") : null;
            }
            any = true;
        }
        var framing = ResponseFraming.Decide(isHeadRequest: false, requestedUpgrade: false, _head);
        switch (framing.Kind)
        {
            case BodyKind.ContentLength:
                for (long remaining = framing.ContentLength; remaining > 0;)
                {
                    int take = (int)Math.Min(remaining, _end - _start);
                    _start += take;
                    remaining -= take;
                    if (remaining > 0 && !await ReceiveAsync(ct))
                    {
                        throw new IOException("the connection ended inside a response body");
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
                    if (status == ChunkedStatus.NeedMoreData && !await ReceiveAsync(ct))
                    {
                        throw new IOException("the connection ended inside a chunked response body");
                    }
                }
                break;
            case BodyKind.CloseDelimited:
                do
                {
                    _start = _end;
                }
                while (await ReceiveAsync(ct));
                return (_head.StatusCode, false);
        }
        return (_head.StatusCode, framing.KeepAlivePermitted);
    }

    public void Dispose() => _socket.Dispose();

    /// <summary>False once the peer closed. Consumed bytes are dropped so the buffer only grows for a large head,
    /// which the parser bounds (it throws past its limit).</summary>
    private async Task<bool> ReceiveAsync(CancellationToken ct)
    {
        if (_closed)
        {
            return false;
        }
        if (_start == _end)
        {
            _start = _end = 0;
        }
        if (_buffer.Length - _end < 1024)
        {
            int live = _end - _start;
            var target = live + 1024 > _buffer.Length ? new byte[_buffer.Length * 2] : _buffer;
            Buffer.BlockCopy(_buffer, _start, target, 0, live);
            _buffer = target;
            _start = 0;
            _end = live;
        }
        int count = await _socket.ReceiveAsync(_buffer.AsMemory(_end), SocketFlags.None, ct);
        if (count == 0)
        {
            _closed = true;
            return false;
        }
        _end += count;
        return true;
    }
}
