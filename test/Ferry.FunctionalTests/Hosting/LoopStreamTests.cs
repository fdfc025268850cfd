using System.Net;
using System.Net.Sockets;
using Ferry.FunctionalTests.Support;
using Ferry.Loops;

namespace Ferry.FunctionalTests.Hosting;

// The upstream side's stream on an event loop, over real loopback sockets: connect (and its failures), reads and
// writes that wait for the loop, from the loop and from other threads, cancellation, and closing while a read waits.
// Each test ends with the loop holding no registration.
public sealed class LoopStreamTests : IDisposable
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);

    private readonly EventLoops _loops = new(2);
    private readonly Socket _listener = new(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);

    public LoopStreamTests()
    {
        _listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        _listener.Listen();
    }

    private EventLoop Loop => _loops.All[0];

    public void Dispose()
    {
        _listener.Dispose();
        _loops.Dispose();
    }

    private static Socket NewSocket() => new(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);

    // Connects from the loop's thread, as an exchange whose client the loop serves does.
    private async Task<(LoopStream Stream, Socket Peer)> ConnectAsync()
    {
        var accept = _listener.AcceptAsync();
        var connect = new TaskCompletionSource<LoopStream>(TaskCreationOptions.RunContinuationsAsynchronously);
        Loop.Post(async _ =>
        {
            try
            {
                connect.SetResult(await LoopStream.ConnectAsync(Loop, NewSocket(), _listener.LocalEndPoint!, CancellationToken.None));
            }
            catch (Exception ex)
            {
                connect.SetException(ex);
            }
        }, null);
        return (await connect.Task.WaitAsync(Bound), await accept.WaitAsync(Bound));
    }

    private async Task AssertNothingRegisteredAsync() => await Wait.Until(() => _loops.All.All(l => l.Registered == 0), Bound);

    private static async Task<int> ThreadOf(EventLoop loop)
    {
        var thread = new TaskCompletionSource<int>();
        loop.Post(_ => thread.SetResult(Environment.CurrentManagedThreadId), null);
        return await thread.Task.WaitAsync(Bound);
    }

    [Fact]
    public async Task ReadsAndWrites_BothWays()
    {
        var (stream, peer) = await ConnectAsync();
        using (peer)
        {
            await stream.WriteAsync("ping"u8.ToArray());
            var buffer = new byte[16];
            Assert.Equal(4, await peer.ReceiveAsync(buffer));
            Assert.Equal("ping"u8.ToArray(), buffer[..4]);

            var read = stream.ReadAsync(buffer).AsTask();
            Assert.False(read.IsCompleted); // nothing sent yet: the read waits for the loop
            await peer.SendAsync("pong"u8.ToArray());
            Assert.Equal(4, await read.WaitAsync(Bound));
            Assert.Equal("pong"u8.ToArray(), buffer[..4]);

            peer.Shutdown(SocketShutdown.Send);
            Assert.Equal(0, await stream.ReadAsync(buffer).AsTask().WaitAsync(Bound));
        }
        await stream.DisposeAsync();
        await AssertNothingRegisteredAsync();
    }

    [Fact]
    public async Task AWaitingRead_StartedOffTheLoop_ContinuesOnTheLoop()
    {
        var (stream, peer) = await ConnectAsync();
        using (peer)
        {
            var expected = await ThreadOf(Loop);

            var read = Task.Run(async () =>
            {
                Assert.False(Loop.IsOnLoop);
                Assert.Equal(1, await stream.ReadAsync(new byte[8]));
                return Environment.CurrentManagedThreadId;
            });
            await Task.Delay(50);
            await peer.SendAsync("x"u8.ToArray());
            Assert.Equal(expected, await read.WaitAsync(Bound));
        }
        await stream.DisposeAsync();
        await AssertNothingRegisteredAsync();
    }

    [Fact]
    public async Task AMovedStream_IsServedByItsNewLoop_AndItsWaitingReadGoesWithIt()
    {
        var (stream, peer) = await ConnectAsync();
        using (peer)
        {
            var other = _loops.All[1];
            var expected = await ThreadOf(other);
            var wait = Task.Run(async () =>
            {
                Assert.Equal(0, await stream.ReadAsync(Memory<byte>.Empty));
                return Environment.CurrentManagedThreadId;
            });
            await Task.Delay(50);
            Assert.False(wait.IsCompleted);
            await stream.MoveToAsync(other).WaitAsync(Bound);
            Assert.Same(other, stream.Loop);
            Assert.Equal(0, Loop.Registered);
            Assert.Equal(1, other.Registered);
            await peer.SendAsync("z"u8.ToArray());
            Assert.Equal(expected, await wait.WaitAsync(Bound)); // completed by the new loop
            var buffer = new byte[8];
            Assert.Equal(1, await stream.ReadAsync(buffer).AsTask().WaitAsync(Bound));

            // Data that arrives while nobody reads is found after a move too.
            await peer.SendAsync("w"u8.ToArray());
            await Task.Delay(50);
            await stream.MoveToAsync(Loop).WaitAsync(Bound);
            Assert.Equal(1, await stream.ReadAsync(buffer).AsTask().WaitAsync(Bound));
        }
        await stream.DisposeAsync();
        await AssertNothingRegisteredAsync();
    }

    [Fact]
    public async Task AWriteLargerThanTheSocketBuffers_WaitsForTheReader()
    {
        var (stream, peer) = await ConnectAsync();
        using (peer)
        {
            var data = new byte[8 * 1024 * 1024];
            Random.Shared.NextBytes(data);
            var write = stream.WriteAsync(data).AsTask();
            Assert.False(write.IsCompleted); // the kernel's buffers hold far less than 8 MiB: the rest waits
            var received = new byte[data.Length];
            var total = 0;
            while (total < received.Length)
            {
                var n = await peer.ReceiveAsync(received.AsMemory(total)).AsTask().WaitAsync(Bound);
                Assert.NotEqual(0, n);
                total += n;
            }
            await write.WaitAsync(Bound);
            Assert.Equal(data, received);
        }
        await stream.DisposeAsync();
        await AssertNothingRegisteredAsync();
    }

    [Fact]
    public async Task AZeroByteRead_WaitsForData_AndConsumesNothing()
    {
        var (stream, peer) = await ConnectAsync();
        using (peer)
        {
            var wait = stream.ReadAsync(Memory<byte>.Empty).AsTask();
            await Task.Delay(50);
            Assert.False(wait.IsCompleted);
            await peer.SendAsync("abc"u8.ToArray());
            Assert.Equal(0, await wait.WaitAsync(Bound));
            var buffer = new byte[8];
            Assert.Equal(3, await stream.ReadAsync(buffer).AsTask().WaitAsync(Bound));
        }
        await stream.DisposeAsync();
        await AssertNothingRegisteredAsync();
    }

    [Fact]
    public async Task AWaitingRead_IsCancelledByItsToken()
    {
        var (stream, peer) = await ConnectAsync();
        using (peer)
        {
            using var cancel = new CancellationTokenSource();
            var read = stream.ReadAsync(new byte[8], cancel.Token).AsTask();
            cancel.Cancel();
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => read.WaitAsync(Bound));
            // The stream still works after a cancelled read.
            await peer.SendAsync("y"u8.ToArray());
            Assert.Equal(1, await stream.ReadAsync(new byte[8]).AsTask().WaitAsync(Bound));
        }
        await stream.DisposeAsync();
        await AssertNothingRegisteredAsync();
    }

    [Fact]
    public async Task Disposing_EndsAWaitingRead_AndClosesTheSocket()
    {
        var (stream, peer) = await ConnectAsync();
        using (peer)
        {
            var read = stream.ReadAsync(new byte[8]).AsTask();
            await stream.DisposeAsync();
            var error = await Assert.ThrowsAsync<IOException>(() => read.WaitAsync(Bound));
            Assert.Equal(SocketError.OperationAborted, Assert.IsType<SocketException>(error.InnerException).SocketErrorCode);
            await AssertNothingRegisteredAsync();
            Assert.Equal(0, await peer.ReceiveAsync(new byte[8]).WaitAsync(Bound)); // the peer sees the close
        }
    }

    [Fact]
    public async Task AReset_IsAReadError_InNetworkStreamsShape()
    {
        var (stream, peer) = await ConnectAsync();
        var read = stream.ReadAsync(new byte[8]).AsTask();
        peer.LingerState = new LingerOption(true, 0);
        peer.Dispose(); // RST
        var error = await Assert.ThrowsAsync<IOException>(() => read.WaitAsync(Bound));
        Assert.Equal(SocketError.ConnectionReset, Assert.IsType<SocketException>(error.InnerException).SocketErrorCode);
        await stream.DisposeAsync();
        await AssertNothingRegisteredAsync();
    }

    [Fact]
    public async Task ARefusedConnect_ThrowsConnectionRefused_AndLeavesNothingRegistered()
    {
        using var refusing = Loopback.RefusingPort();
        var error = await Assert.ThrowsAsync<SocketException>(async () =>
            await LoopStream.ConnectAsync(Loop, NewSocket(), new IPEndPoint(IPAddress.Loopback, refusing.Port), CancellationToken.None).AsTask().WaitAsync(Bound));
        Assert.Equal(SocketError.ConnectionRefused, error.SocketErrorCode);
        await AssertNothingRegisteredAsync();
    }

    [Fact]
    public async Task AConnectThatNeverCompletes_IsCancelled()
    {
        // A listener whose backlog is full keeps further SYNs unanswered, so the connect waits until cancelled.
        using var full = NewSocket();
        full.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        full.Listen(0);
        var fillers = new List<LoopStream>();
        try
        {
            using var cancel = new CancellationTokenSource();
            Task<LoopStream>? pending = null;
            for (var i = 0; i < 8 && pending is null; i++)
            {
                var attempt = LoopStream.ConnectAsync(Loop, NewSocket(), full.LocalEndPoint!, cancel.Token).AsTask();
                if (await Task.WhenAny(attempt, Task.Delay(300)) == attempt)
                {
                    fillers.Add(await attempt);
                    continue;
                }
                pending = attempt;
            }
            Assert.NotNull(pending);
            cancel.Cancel();
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => pending.WaitAsync(Bound));
        }
        finally
        {
            foreach (var stream in fillers)
            {
                await stream.DisposeAsync();
            }
        }
        await AssertNothingRegisteredAsync();
    }
}
