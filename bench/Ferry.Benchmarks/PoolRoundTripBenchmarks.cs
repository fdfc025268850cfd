using System.Buffers;
using System.Net;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using BenchmarkDotNet.Attributes;
using Ferry.Configuration;
using Ferry.Hosting;
using Ferry.Http1;
using Ferry.Model;
using Ferry.Upstream;
using Microsoft.Extensions.Configuration;

namespace Ferry.Benchmarks;

// One GET through the upstream engine on a reused connection, as Exchange.RunAsync drives it minus Kestrel: lease the
// idle connection from the destination's pool (taking over the idle watch's pending read), write the request head,
// flush, read and parse the response head, read the Content-Length body, and release the connection, which starts
// the next idle watch. The upstream is a loopback socket server on threads of its own that answers every request with
// the same bytes through synchronous socket calls on one buffer: it allocates nothing per request, so the Allocated
// column (all threads of the process) is the engine's alone. Issue 7's target for it is 0 B.
[MemoryDiagnoser]
public class PoolRoundTripBenchmarks
{
    private static readonly byte[] Response = "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nhello\n"u8.ToArray();

    private Socket _listener = null!;
    private Thread _acceptor = null!;
    private readonly List<Socket> _accepted = [];
    private ProxyState _state = null!;
    private DestinationState _destination = null!;
    private TimeoutsConfig _timeouts = null!;

    [GlobalSetup]
    public void Setup()
    {
        _listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        _listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        _listener.Listen(16);
        _acceptor = new Thread(Accept) { IsBackground = true, Name = "upstream accept" };
        _acceptor.Start();

        var port = ((IPEndPoint)_listener.LocalEndPoint!).Port;
        var settings = new Dictionary<string, string?>
        {
            ["Listeners:main:Address"] = "127.0.0.1:0",
            ["Routes:r:ClusterId"] = "c",
            ["Clusters:c:Destinations:a:Address"] = $"http://127.0.0.1:{port}",
        };
        var config = FerryConfigLoader.Load(new ConfigurationBuilder().AddInMemoryCollection(settings).Build()).Config!;
        _state = ProxyState.Build(config, FerryServer.PoolFactory(TimeProvider.System), TimeProvider.System);
        _destination = _state.Clusters["c"].Destinations[0];
        _timeouts = _destination.Cluster.Config.Timeouts;
        // The first request connects; every measured one reuses the connection.
        RoundTripAsync().AsTask().GetAwaiter().GetResult();
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _state.DisposeAsync().AsTask().GetAwaiter().GetResult();
        _listener.Dispose();
        lock (_accepted)
        {
            foreach (var socket in _accepted)
            {
                socket.Dispose();
            }
        }
        _acceptor.Join(TimeSpan.FromSeconds(10));
    }

    [Benchmark]
    public ValueTask<long> PoolRoundTrip() => RoundTripAsync();

    // Pooled like the async methods of System.IO.Pipelines, so that the benchmark's own state machine is not counted.
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private async ValueTask<long> RoundTripAsync()
    {
        var pool = _destination.Pool;
        var lease = await pool.AcquireAsync(Http1Limits.Default, onlySafeIdle: false, forceNew: false, CancellationToken.None);
        var connection = lease.Connection;
        RetireReason? retire = RetireReason.Error;
        var ct = connection.BeginExchange(TimeProvider.System);
        try
        {
            connection.RequestCount++;
            var output = connection.Output;
            RequestHeadWriter.WriteRequestLine(output, "GET", "/");
            RequestHeadWriter.WriteHeader(output, "Host", _destination.Authority);
            RequestHeadWriter.WriteEnd(output);
            connection.SetDeadline(Limit(_timeouts.SendRequest));
            await output.FlushAsync(ct);

            connection.SetDeadline(Limit(_timeouts.ResponseHead));
            var input = connection.Input;
            while (true)
            {
                var read = await connection.ReadAsync(ct);
                var reader = new SequenceReader<byte>(read.Buffer);
                if (connection.Parser.TryParse(ref reader, connection.Head))
                {
                    input.AdvanceTo(reader.Position);
                    break;
                }
                if (read.IsCompleted)
                {
                    throw new IOException("the upstream closed before the response head");
                }
                input.AdvanceTo(read.Buffer.Start, read.Buffer.End);
            }

            var framing = ResponseFraming.Decide(isHeadRequest: false, requestedUpgrade: false, connection.Head);
            var remaining = framing.ContentLength;
            while (remaining > 0)
            {
                connection.SetDeadline(Limit(_timeouts.BodyInactivity));
                var read = await input.ReadAsync(ct);
                var take = Math.Min(read.Buffer.Length, remaining);
                input.AdvanceTo(read.Buffer.GetPosition(take));
                remaining -= take;
                if (remaining > 0 && read.IsCompleted)
                {
                    throw new IOException("the upstream closed mid-body");
                }
            }
            retire = framing.KeepAlivePermitted ? null : RetireReason.NotReusable;
            return framing.ContentLength;
        }
        finally
        {
            connection.EndExchange();
            pool.Release(connection, retire);
        }
    }

    // As in Exchange: a zero timeout in the configuration means no limit.
    private static TimeSpan Limit(TimeSpan timeout) => timeout <= TimeSpan.Zero ? Timeout.InfiniteTimeSpan : timeout;

    private void Accept()
    {
        while (true)
        {
            Socket socket;
            try
            {
                socket = _listener.Accept();
            }
            catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
            {
                return;
            }
            socket.NoDelay = true;
            lock (_accepted)
            {
                _accepted.Add(socket);
            }
            new Thread(() => Serve(socket)) { IsBackground = true, Name = "upstream connection" }.Start();
        }
    }

    // Answers each request head (GET, no body) once its blank line has arrived; keep-alive until the peer closes.
    private static void Serve(Socket socket)
    {
        var buffer = new byte[4096];
        var filled = 0;
        try
        {
            while (true)
            {
                var n = socket.Receive(buffer, filled, buffer.Length - filled, SocketFlags.None);
                if (n == 0)
                {
                    return;
                }
                filled += n;
                int end;
                while ((end = buffer.AsSpan(0, filled).IndexOf("\r\n\r\n"u8)) >= 0)
                {
                    socket.Send(Response);
                    var rest = filled - (end + 4);
                    buffer.AsSpan(end + 4, rest).CopyTo(buffer);
                    filled = rest;
                }
                if (filled == buffer.Length)
                {
                    return; // a head larger than the buffer: not this benchmark's traffic
                }
            }
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
        {
            // The pool retired the connection or the benchmark ended.
        }
        finally
        {
            socket.Dispose();
        }
    }
}
