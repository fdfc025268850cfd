using System.IO.Pipelines;
using System.Net;
using System.Net.Sockets;
using BenchmarkDotNet.Attributes;

namespace Ferry.Benchmarks;

// One response arriving on an idle upstream connection whose read is already pending, as with the pool's idle watch
// before it waited with a zero-byte receive (docs/decisions/2026-11-22-hot-path-3.md): the peer sends a small response, the reader wakes up and consumes it. Compares what UpstreamConnection uses today
// (StreamPipeReader over NetworkStream, reads pulled by the consumer) with a receive loop that pushes into a Pipe
// (Kestrel's SocketConnection design). Loopback only; the Allocated column is the figure of interest, since the
// timings include the kernel's loopback delivery and the machine's noise.
[MemoryDiagnoser]
public class UpstreamReadBenchmarks
{
    private static readonly byte[] Response = new byte[160];

    private Socket _listener = null!;
    private Socket _peer = null!;
    private Socket _streamSide = null!;
    private Socket _loopSide = null!;
    private Socket _peerOfLoop = null!;
    private PipeReader _streamReader = null!;
    private Pipe _pipe = null!;
    private Task _loop = null!;

    [GlobalSetup]
    public void Setup()
    {
        _listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        _listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        _listener.Listen(4);
        (_streamSide, _peer) = Connect();
        (_loopSide, _peerOfLoop) = Connect();
        _streamReader = PipeReader.Create(new NetworkStream(_streamSide, ownsSocket: false),
            new StreamPipeReaderOptions(bufferSize: 16 * 1024, minimumReadSize: 4 * 1024, leaveOpen: true));
        _pipe = new Pipe(new PipeOptions(readerScheduler: PipeScheduler.Inline, writerScheduler: PipeScheduler.Inline,
            pauseWriterThreshold: 64 * 1024, resumeWriterThreshold: 32 * 1024, useSynchronizationContext: false));
        _loop = ReceiveLoopAsync(_loopSide, _pipe.Writer);
    }

    private (Socket Local, Socket Peer) Connect()
    {
        var local = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        local.Connect(_listener.LocalEndPoint!);
        var peer = _listener.Accept();
        peer.NoDelay = true;
        return (local, peer);
    }

    private static async Task ReceiveLoopAsync(Socket socket, PipeWriter writer)
    {
        try
        {
            while (true)
            {
                var n = await socket.ReceiveAsync(writer.GetMemory(4 * 1024), SocketFlags.None);
                if (n == 0)
                {
                    break;
                }
                writer.Advance(n);
                if ((await writer.FlushAsync()).IsCompleted)
                {
                    break;
                }
            }
            await writer.CompleteAsync();
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
        {
            await writer.CompleteAsync(new IOException(ex.Message, ex));
        }
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        foreach (var socket in new[] { _streamSide, _peer, _loopSide, _peerOfLoop, _listener })
        {
            socket.Dispose();
        }
        _loop.Wait(TimeSpan.FromSeconds(10));
    }

    [Benchmark(Baseline = true)]
    public Task<long> StreamPipeReader() => RoundTripAsync(_streamReader, _peer);

    [Benchmark]
    public Task<long> ReceiveLoopPipe() => RoundTripAsync(_pipe.Reader, _peerOfLoop);

    private static async Task<long> RoundTripAsync(PipeReader reader, Socket peer)
    {
        var pending = reader.ReadAsync();
        peer.Send(Response);
        long total = 0;
        while (true)
        {
            var read = await pending;
            total += read.Buffer.Length;
            reader.AdvanceTo(read.Buffer.End);
            if (total >= Response.Length)
            {
                return total;
            }
            pending = reader.ReadAsync();
        }
    }
}
