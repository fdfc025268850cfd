using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Ferry.FunctionalTests.Restart;

// Client loops over raw sockets, so that every refusal, reset and early close is seen as it happens (HttpClient
// retries some of them silently). Loops either open a connection per request or keep one alive as long as the server
// does; each stops at `stop`, and every socket operation is bounded.
internal sealed class LoadClients
{
    private static readonly TimeSpan OperationTimeout = TimeSpan.FromSeconds(15);

    private readonly IPEndPoint _target;
    private int _answered;
    private int _refused;
    private int _reset;
    private int _closedEarly;
    private int _otherFailures;
    private int _closedByServer;
    private readonly List<string> _failures = [];

    public LoadClients(IPEndPoint target) => _target = target;

    public int Answered => Volatile.Read(ref _answered);
    public int Refused => Volatile.Read(ref _refused);
    public int Reset => Volatile.Read(ref _reset);
    public int ClosedEarly => Volatile.Read(ref _closedEarly);
    public int OtherFailures => Volatile.Read(ref _otherFailures);
    public int KeepAliveEndedByServer => Volatile.Read(ref _closedByServer);

    public IReadOnlyList<string> Failures
    {
        get
        {
            lock (_failures)
            {
                return [.. _failures];
            }
        }
    }

    public Task RunAsync(int newConnectionLoops, int keepAliveLoops, CancellationToken stop) =>
        Task.WhenAll(
            Enumerable.Range(0, newConnectionLoops).Select(i => Task.Run(() => LoopAsync($"n{i}", keepAlive: false, stop)))
                .Concat(Enumerable.Range(0, keepAliveLoops).Select(i => Task.Run(() => LoopAsync($"k{i}", keepAlive: true, stop)))));

    private async Task LoopAsync(string name, bool keepAlive, CancellationToken stop)
    {
        var sequence = 0;
        while (!stop.IsCancellationRequested)
        {
            using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            using (var connect = new CancellationTokenSource(OperationTimeout))
            {
                try
                {
                    await socket.ConnectAsync(_target, connect.Token);
                }
                catch (Exception ex)
                {
                    Record(ex, $"{name} connect");
                    await Task.Delay(10, CancellationToken.None);
                    continue;
                }
            }
            // One request on a fresh connection, or as many as the server keeps the connection for.
            var buffer = new byte[16 * 1024];
            var pending = new ArraySegment<byte>(buffer, 0, 0);
            while (!stop.IsCancellationRequested)
            {
                var request = $"GET /?c={name}&n={sequence++} HTTP/1.1\r\nHost: restart.test\r\n{(keepAlive ? "" : "Connection: close\r\n")}\r\n";
                using var timeout = new CancellationTokenSource(OperationTimeout);
                (bool Ok, bool ServerCloses) result;
                try
                {
                    await socket.SendAsync(Encoding.ASCII.GetBytes(request), SocketFlags.None, timeout.Token);
                    result = await ReadResponseAsync(socket, buffer, timeout.Token);
                }
                catch (Exception ex)
                {
                    Record(ex, $"{name} request {sequence - 1}");
                    break;
                }
                if (!result.Ok)
                {
                    break;
                }
                Interlocked.Increment(ref _answered);
                if (!keepAlive)
                {
                    break;
                }
                if (result.ServerCloses)
                {
                    Interlocked.Increment(ref _closedByServer);
                    break;
                }
            }
        }
    }

    // Reads one response with a Content-Length body. Ok is false (and the reason recorded) for anything else.
    private async Task<(bool Ok, bool ServerCloses)> ReadResponseAsync(Socket socket, byte[] buffer, CancellationToken cancel)
    {
        var filled = 0;
        int headEnd;
        while ((headEnd = buffer.AsSpan(0, filled).IndexOf("\r\n\r\n"u8)) < 0)
        {
            var read = await socket.ReceiveAsync(buffer.AsMemory(filled), SocketFlags.None, cancel);
            if (read == 0)
            {
                Interlocked.Increment(ref _closedEarly);
                Note($"connection closed before a complete response head ({filled} bytes)");
                return (false, false);
            }
            filled += read;
        }
        var head = Encoding.ASCII.GetString(buffer, 0, headEnd);
        var lines = head.Split("\r\n");
        if (!lines[0].StartsWith("HTTP/1.1 200 ", StringComparison.Ordinal))
        {
            Interlocked.Increment(ref _otherFailures);
            Note($"status line '{lines[0]}'");
            return (false, false);
        }
        var length = -1;
        var closes = false;
        foreach (var line in lines.Skip(1))
        {
            var colon = line.IndexOf(':');
            var field = line[..colon].Trim();
            var value = line[(colon + 1)..].Trim();
            if (field.Equals("Content-Length", StringComparison.OrdinalIgnoreCase))
            {
                length = int.Parse(value);
            }
            else if (field.Equals("Connection", StringComparison.OrdinalIgnoreCase) && value.Contains("close", StringComparison.OrdinalIgnoreCase))
            {
                closes = true;
            }
        }
        if (length < 0)
        {
            Interlocked.Increment(ref _otherFailures);
            Note($"no Content-Length in '{head}'");
            return (false, false);
        }
        var body = filled - (headEnd + 4);
        while (body < length)
        {
            var read = await socket.ReceiveAsync(buffer, SocketFlags.None, cancel);
            if (read == 0)
            {
                Interlocked.Increment(ref _closedEarly);
                Note($"connection closed after {body} of {length} body bytes");
                return (false, false);
            }
            body += read;
        }
        return (true, closes);
    }

    private void Record(Exception ex, string where)
    {
        var error = ex as SocketException ?? ex.InnerException as SocketException;
        switch (error?.SocketErrorCode)
        {
            case SocketError.ConnectionRefused:
                Interlocked.Increment(ref _refused);
                break;
            case SocketError.ConnectionReset:
                Interlocked.Increment(ref _reset);
                break;
            default:
                Interlocked.Increment(ref _otherFailures);
                break;
        }
        Note($"{where}: {ex.GetType().Name}: {ex.Message}");
    }

    private void Note(string failure)
    {
        lock (_failures)
        {
            if (_failures.Count < 20)
            {
                _failures.Add(failure);
            }
        }
    }

    public string Summary() =>
        $"answered {Answered}, refused {Refused}, reset {Reset}, closed early {ClosedEarly}, other failures {OtherFailures}, " +
        $"keep-alive connections ended by the server after a response {KeepAliveEndedByServer}" +
        (Failures.Count > 0 ? "\n  " + string.Join("\n  ", Failures) : "");
}
