using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Ferry.FunctionalTests.Support;

/// <summary>How a connection ended, as the client sees it.</summary>
public enum ConnectionEnd { Fin, Reset }

internal sealed record RawHttpResponse(int Status, IReadOnlyList<KeyValuePair<string, string>> Headers, byte[] Body, int ChunkCount)
{
    public string BodyText => Encoding.UTF8.GetString(Body);

    public string? Header(string name) =>
        Headers.FirstOrDefault(h => string.Equals(h.Key, name, StringComparison.OrdinalIgnoreCase)).Value;
}

/// <summary>A client socket that speaks HTTP/1.1 byte by byte, so tests see exactly what the Lab sends.</summary>
internal sealed class RawHttpConnection : IAsyncDisposable
{
    public static readonly TimeSpan Timeout = TimeSpan.FromSeconds(10);

    private readonly Socket _socket;
    private byte[] _buffer = new byte[64 * 1024];
    private int _start;
    private int _end;

    private RawHttpConnection(Socket socket) => _socket = socket;

    public Socket Socket => _socket;

    public static async Task<RawHttpConnection> ConnectAsync(IPEndPoint endPoint)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        try
        {
            await socket.ConnectAsync(endPoint).WaitAsync(Timeout);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
        return new RawHttpConnection(socket);
    }

    public Task SendAsync(string text) => SendAsync(Encoding.Latin1.GetBytes(text));

    public async Task SendAsync(byte[] bytes)
    {
        int sent = 0;
        while (sent < bytes.Length)
        {
            sent += await _socket.SendAsync(bytes.AsMemory(sent)).AsTask().WaitAsync(Timeout);
        }
    }

    /// <summary>Sends a GET (or another bodiless method) and reads its response.</summary>
    public async Task<RawHttpResponse> GetAsync(string target, string method = "GET")
    {
        await SendAsync($"{method} {target} HTTP/1.1\r\nHost: lab\r\n\r\n");
        return await ReadResponseAsync(headRequest: method == "HEAD");
    }

    /// <summary>Reads one response (a 1xx counts as one); the body is decoded per its framing.</summary>
    public async Task<RawHttpResponse> ReadResponseAsync(bool headRequest = false)
    {
        string head = Encoding.Latin1.GetString(await ReadUntilAsync("\r\n\r\n"u8.ToArray()));
        string[] lines = head[..^4].Split("\r\n");
        string[] statusLine = lines[0].Split(' ', 3);
        Assert.Equal("HTTP/1.1", statusLine[0]);
        int status = int.Parse(statusLine[1], CultureInfo.InvariantCulture);
        var headers = lines.Skip(1)
            .Select(l => new KeyValuePair<string, string>(l[..l.IndexOf(':')], l[(l.IndexOf(':') + 1)..].Trim()))
            .ToList();
        var response = new RawHttpResponse(status, headers, [], 0);
        if (headRequest || status is < 200 or 204 or 304)
        {
            return response;
        }
        if (response.Header("Transfer-Encoding") == "chunked")
        {
            var body = new MemoryStream();
            int chunks = 0;
            while (true)
            {
                string sizeLine = Encoding.Latin1.GetString(await ReadUntilAsync("\r\n"u8.ToArray()))[..^2];
                int size = int.Parse(sizeLine, NumberStyles.HexNumber, CultureInfo.InvariantCulture);
                if (size == 0)
                {
                    Assert.Equal("\r\n", Encoding.Latin1.GetString(await ReadExactlyAsync(2)));
                    return response with { Body = body.ToArray(), ChunkCount = chunks };
                }
                chunks++;
                body.Write(await ReadExactlyAsync(size));
                Assert.Equal("\r\n", Encoding.Latin1.GetString(await ReadExactlyAsync(2)));
            }
        }
        if (response.Header("Content-Length") is { } length)
        {
            return response with { Body = await ReadExactlyAsync(int.Parse(length, CultureInfo.InvariantCulture)) };
        }
        var (rest, _) = await ReadToEndAsync();
        return response with { Body = rest };
    }

    /// <summary>Reads until the peer ends the connection; returns what arrived before and how it ended.</summary>
    public async Task<(byte[] Bytes, ConnectionEnd End)> ReadToEndAsync()
    {
        var collected = new MemoryStream();
        collected.Write(_buffer, _start, _end - _start);
        _start = _end = 0;
        var chunk = new byte[16 * 1024];
        while (true)
        {
            int read;
            try
            {
                read = await _socket.ReceiveAsync(chunk.AsMemory()).AsTask().WaitAsync(Timeout);
            }
            catch (SocketException e) when (e.SocketErrorCode == SocketError.ConnectionReset)
            {
                return (collected.ToArray(), ConnectionEnd.Reset);
            }
            if (read == 0)
            {
                return (collected.ToArray(), ConnectionEnd.Fin);
            }
            collected.Write(chunk, 0, read);
        }
    }

    /// <summary>Asserts that nothing arrives and the connection ends as expected.</summary>
    public async Task AssertEndsWithoutBytesAsync(ConnectionEnd expected)
    {
        var (bytes, end) = await ReadToEndAsync();
        Assert.Equal("", Encoding.Latin1.GetString(bytes));
        Assert.Equal(expected, end);
    }

    public async Task<byte[]> ReadExactlyAsync(int count)
    {
        while (_end - _start < count)
        {
            await FillAsync();
        }
        byte[] result = _buffer.AsSpan(_start, count).ToArray();
        _start += count;
        return result;
    }

    private async Task<byte[]> ReadUntilAsync(byte[] delimiter)
    {
        while (true)
        {
            int found = _buffer.AsSpan(_start, _end - _start).IndexOf(delimiter);
            if (found >= 0)
            {
                return await ReadExactlyAsync(found + delimiter.Length);
            }
            await FillAsync();
        }
    }

    private async Task FillAsync()
    {
        if (_start > 0)
        {
            Buffer.BlockCopy(_buffer, _start, _buffer, 0, _end - _start);
            _end -= _start;
            _start = 0;
        }
        if (_end == _buffer.Length)
        {
            Array.Resize(ref _buffer, _buffer.Length * 2);
        }
        int read = await _socket.ReceiveAsync(_buffer.AsMemory(_end)).AsTask().WaitAsync(Timeout);
        if (read == 0)
        {
            throw new EndOfStreamException("the Lab closed the connection");
        }
        _end += read;
    }

    public ValueTask DisposeAsync()
    {
        _socket.Dispose();
        return ValueTask.CompletedTask;
    }
}
