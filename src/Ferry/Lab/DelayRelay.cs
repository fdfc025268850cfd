using System.Buffers;
using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Threading.Channels;

namespace Ferry.Lab;

/// <summary>
/// A TCP relay on loopback that adds a one-way delay in both directions, in user space (netem is not available
/// everywhere, and needs root). On loopback a FIN arrives within microseconds, so a proxy watching its idle
/// connections almost never loses the keep-alive race; on a real network the FIN travels 0.1–2 ms, and that window
/// is where the 502s come from. The relay gives the window back.
/// <para>
/// What matters to the race is preserved: bytes arrive in order, each chunk is released <see cref="Delay"/> after it
/// was read; a FIN (read returned 0) is forwarded as a FIN (shutdown of the sending side) after the same delay; a reset
/// (read failed with ECONNRESET, or a send failed because the peer reset) is forwarded as a reset (SO_LINGER 0 close).
/// One upstream connection per accepted connection, made when it is accepted.
/// </para>
/// <para>
/// The wait is <see cref="Task.Delay(TimeSpan, TimeProvider, CancellationToken)"/> while at least a millisecond remains
/// (timers fire late, not early: about 1 ms of granularity), then a yielding spin for the sub-millisecond rest, so a
/// chunk is never released early and usually no more than about a millisecond late.
/// </para>
/// </summary>
internal sealed class DelayRelay : IAsyncDisposable
{
    /// <summary>Largest chunk read at once.</summary>
    private const int ChunkSize = 16 * 1024;

    /// <summary>Chunks waiting per direction: with <see cref="ChunkSize"/>, at most 1 MiB in flight per direction.
    /// A full queue stops the reads, so the sender sees TCP back-pressure as it would on a slow link.</summary>
    private const int QueuedChunks = 64;

    /// <summary>How long <see cref="DisposeAsync"/> waits for connection loops after closing their sockets.</summary>
    private static readonly TimeSpan DisposeWait = TimeSpan.FromSeconds(5);

    private readonly Socket _listener;
    private readonly IPEndPoint _upstream;
    private readonly TimeProvider _time;
    private readonly CancellationTokenSource _stopping = new();
    private readonly ConcurrentDictionary<Task, byte> _connections = new(); // relay connections still running
    private readonly Task _acceptLoop;
    private long _connectionsAccepted;   // client connections accepted since start
    private long _bytesToUpstream;       // bytes released towards upstream sockets
    private long _bytesToClient;         // bytes released towards client sockets
    private long _finsForwarded;         // FINs forwarded, both directions
    private long _resetsForwarded;       // resets forwarded, both directions
    private int _disposed;

    private DelayRelay(IPEndPoint upstream, TimeSpan delay, TimeProvider time)
    {
        _upstream = upstream;
        Delay = delay;
        _time = time;
        _listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            _listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
            _listener.Listen(512);
        }
        catch
        {
            _listener.Dispose();
            throw;
        }
        EndPoint = (IPEndPoint)_listener.LocalEndPoint!;
        Uri = new Uri($"http://{EndPoint.Address}:{EndPoint.Port}/");
        _acceptLoop = AcceptLoopAsync();
    }

    /// <summary>Listens on 127.0.0.1:0 before returning.</summary>
    public static DelayRelay Start(IPEndPoint upstream, TimeSpan delay, TimeProvider time)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(delay, TimeSpan.Zero);
        return new DelayRelay(upstream, delay, time);
    }

    /// <summary>One-way delay added to every chunk, FIN and reset, in each direction.</summary>
    public TimeSpan Delay { get; }
    public IPEndPoint EndPoint { get; }
    public Uri Uri { get; }
    public long ConnectionsAccepted => Interlocked.Read(ref _connectionsAccepted);
    public long BytesToUpstream => Interlocked.Read(ref _bytesToUpstream);
    public long BytesToClient => Interlocked.Read(ref _bytesToClient);
    public long FinsForwarded => Interlocked.Read(ref _finsForwarded);
    public long ResetsForwarded => Interlocked.Read(ref _resetsForwarded);

    private async Task AcceptLoopAsync()
    {
        var ct = _stopping.Token;
        while (!ct.IsCancellationRequested)
        {
            Socket client;
            try
            {
                client = await _listener.AcceptAsync(ct);
            }
            catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException
                                      || (e is SocketException && ct.IsCancellationRequested))
            {
                return;
            }
            catch (SocketException)
            {
                // Reset while still in the backlog (ECONNABORTED): accept the next one.
                continue;
            }
            Interlocked.Increment(ref _connectionsAccepted);
            var run = Task.Run(() => RelayAsync(client, ct), CancellationToken.None);
            _connections[run] = 0;
            _ = run.ContinueWith(t => _connections.TryRemove(t, out _), CancellationToken.None,
                TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        }
    }

    private async Task RelayAsync(Socket client, CancellationToken ct)
    {
        client.NoDelay = true;
        var upstream = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        // Closing both sockets is what ends every pending read and send when the relay stops.
        using var closeOnStop = ct.Register(() =>
        {
            client.Dispose();
            upstream.Dispose();
        });
        try
        {
            try
            {
                await upstream.ConnectAsync(_upstream, ct);
            }
            catch (SocketException)
            {
                // The client is already connected to the relay; a reset is the nearest thing to the refusal it would have seen.
                Reset(client);
                return;
            }
            await Task.WhenAll(
                PumpAsync(client, upstream, toUpstream: true, ct),
                PumpAsync(upstream, client, toUpstream: false, ct));
        }
        catch (OperationCanceledException)
        {
            // Stopping.
        }
        finally
        {
            client.Dispose();
            upstream.Dispose();
        }
    }

    /// <summary>One direction: a reader that timestamps chunks as they arrive, a writer that releases them when due.</summary>
    private async Task PumpAsync(Socket source, Socket destination, bool toUpstream, CancellationToken ct)
    {
        var queue = Channel.CreateBounded<Segment>(new BoundedChannelOptions(QueuedChunks) { SingleReader = true, SingleWriter = true });
        var reading = ReadAsync(source, queue.Writer, ct);
        await WriteAsync(queue.Reader, source, destination, toUpstream, ct);
        await reading;
    }

    private async Task ReadAsync(Socket source, ChannelWriter<Segment> queue, CancellationToken ct)
    {
        try
        {
            while (true)
            {
                byte[] buffer = ArrayPool<byte>.Shared.Rent(ChunkSize);
                int count;
                try
                {
                    count = await source.ReceiveAsync(buffer.AsMemory(0, ChunkSize), SocketFlags.None, ct);
                }
                catch (SocketException e) when (e.SocketErrorCode is SocketError.ConnectionReset)
                {
                    ArrayPool<byte>.Shared.Return(buffer);
                    await queue.WriteAsync(new Segment(SegmentKind.Reset, null, 0, _time.GetTimestamp()), ct);
                    return;
                }
                catch
                {
                    ArrayPool<byte>.Shared.Return(buffer);
                    throw;
                }
                if (count == 0)
                {
                    ArrayPool<byte>.Shared.Return(buffer);
                    await queue.WriteAsync(new Segment(SegmentKind.Fin, null, 0, _time.GetTimestamp()), ct);
                    return;
                }
                await queue.WriteAsync(new Segment(SegmentKind.Data, buffer, count, _time.GetTimestamp()), ct);
            }
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException or OperationCanceledException or ChannelClosedException)
        {
            // The socket was closed under the read: the relay is stopping, or the other side was reset.
        }
        finally
        {
            queue.TryComplete();
        }
    }

    private async Task WriteAsync(ChannelReader<Segment> queue, Socket source, Socket destination, bool toUpstream, CancellationToken ct)
    {
        try
        {
            await foreach (var segment in queue.ReadAllAsync(ct))
            {
                try
                {
                    await WaitUntilAsync(segment.ArrivedAt, ct);
                    // Counted before they leave: whoever sees them arrive sees them counted.
                    switch (segment.Kind)
                    {
                        case SegmentKind.Data:
                            Interlocked.Add(ref toUpstream ? ref _bytesToUpstream : ref _bytesToClient, segment.Count);
                            await SendAllAsync(destination, segment.Buffer.AsMemory(0, segment.Count), ct);
                            break;
                        case SegmentKind.Fin:
                            Interlocked.Increment(ref _finsForwarded);
                            destination.Shutdown(SocketShutdown.Send);
                            break;
                        case SegmentKind.Reset:
                            Interlocked.Increment(ref _resetsForwarded);
                            Reset(destination);
                            // The source's connection is gone too: nothing more can come from it or go to it.
                            source.Dispose();
                            return;
                    }
                }
                finally
                {
                    if (segment.Buffer is not null)
                    {
                        ArrayPool<byte>.Shared.Return(segment.Buffer);
                    }
                }
            }
        }
        catch (SocketException e) when (e.SocketErrorCode is SocketError.ConnectionReset or SocketError.Shutdown or SocketError.ConnectionAborted)
        {
            // The destination reset the connection while we sent to it (EPIPE or ECONNRESET): the sender learns it one
            // delay later, as a reset, as it would across a network.
            await ResetLaterAsync(source, ct);
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException or OperationCanceledException)
        {
            // The relay is stopping, or the other direction reset both sockets.
        }
        finally
        {
            // Segments still queued are dropped: their buffers go back to the pool.
            while (queue.TryRead(out var left))
            {
                if (left.Buffer is not null)
                {
                    ArrayPool<byte>.Shared.Return(left.Buffer);
                }
            }
        }
    }

    private async Task ResetLaterAsync(Socket socket, CancellationToken ct)
    {
        try
        {
            await WaitUntilAsync(_time.GetTimestamp(), ct);
            Interlocked.Increment(ref _resetsForwarded);
            Reset(socket);
        }
        catch (OperationCanceledException)
        {
            // Stopping: the socket is closed anyway.
        }
    }

    private async Task WaitUntilAsync(long arrivedAt, CancellationToken ct)
    {
        var remaining = Delay - _time.GetElapsedTime(arrivedAt);
        if (remaining >= TimeSpan.FromMilliseconds(1))
        {
            await Task.Delay(remaining, _time, ct);
            remaining = Delay - _time.GetElapsedTime(arrivedAt);
        }
        // The sub-millisecond rest, bounded by that millisecond: below timer granularity.
        while (remaining > TimeSpan.Zero)
        {
            ct.ThrowIfCancellationRequested();
            Thread.Yield();
            remaining = Delay - _time.GetElapsedTime(arrivedAt);
        }
    }

    private static async Task SendAllAsync(Socket socket, ReadOnlyMemory<byte> data, CancellationToken ct)
    {
        while (!data.IsEmpty)
        {
            int sent = await socket.SendAsync(data, SocketFlags.None, ct);
            data = data[sent..];
        }
    }

    /// <summary>SO_LINGER 0 then close: the kernel sends RST instead of FIN.</summary>
    private static void Reset(Socket socket)
    {
        try
        {
            socket.LingerState = new LingerOption(true, 0);
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
            // Already closed or reset.
        }
        socket.Dispose();
    }

    /// <summary>Stops accepting, closes every connection and waits (bounded) for their loops to end.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 1)
        {
            return;
        }
        await _stopping.CancelAsync();
        _listener.Dispose();
        await _acceptLoop;
        try
        {
            // A safety bound in real time, whatever the injected TimeProvider: disposal must end.
            await Task.WhenAll(_connections.Keys).WaitAsync(DisposeWait);
        }
        catch (TimeoutException)
        {
            // Every socket is closed; a loop still running ends on its own.
        }
        _stopping.Dispose();
    }

    private enum SegmentKind
    {
        Data,
        Fin,
        Reset,
    }

    /// <summary>A chunk of bytes (rented buffer), a FIN or a reset, stamped with the time it was read.</summary>
    private readonly record struct Segment(SegmentKind Kind, byte[]? Buffer, int Count, long ArrivedAt);
}
