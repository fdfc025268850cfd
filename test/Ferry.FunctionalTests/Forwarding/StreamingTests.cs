using System.Net;
using Ferry.FunctionalTests.Support;
using Ferry.Lab;
using Xunit.Abstractions;

namespace Ferry.FunctionalTests.Forwarding;

// 200 MB each way through Ferry: bodies stream with backpressure and are never buffered whole, and the bytes pass
// through pooled buffers: what the process allocates does not grow with what it forwards.
[Collection(AllocationMeasuring.Name)]
public sealed class StreamingTests(ITestOutputHelper output)
{
    private const long Size = 200L * 1024 * 1024;

    // Client, Ferry and upstream share this process, and everything they allocate during the transfer counts. A body
    // buffered whole or copied into a fresh array per read costs at least 1024 KiB per MiB; pooled buffers cost only
    // the per-request objects and the background timers, spread over 200 MiB.
    private const double MaxKiBPerMiB = 64;

    [Fact]
    public async Task Download200MB_StreamsWithFlatMemory()
    {
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions { Name = "big" });
        await using var proxy = await ProxyHarness.StartAsync(upstream);
        await WarmUpAsync(proxy);
        using var sampler = new HeapSampler();
        var meter = AllocationMeter.Start();

        using var response = await proxy.Client.GetAsync($"/bytes/{Size}", HttpCompletionOption.ResponseHeadersRead);
        await using var body = await response.Content.ReadAsStreamAsync();
        var buffer = new byte[64 * 1024];
        long total = 0;
        int n;
        while ((n = await body.ReadAsync(buffer)) > 0)
        {
            total += n;
        }

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(Size, total);
        Report("download", meter.KiBPerMiB(total), sampler);
    }

    // Ferry never keeps response bytes back while it waits for the destination: each piece reaches the client before
    // the destination sends the next one (a server-sent event stream depends on it).
    [Fact]
    public async Task SlowBody_EachPieceReachesTheClientBeforeTheNextIsSent()
    {
        var pieces = new[] { "first-", "second-", "third" };
        var received = Enumerable.Range(0, pieces.Length).Select(_ => new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).ToArray();
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions
        {
            Name = "slow",
            Script = async (x, ct) =>
            {
                var length = pieces.Sum(p => p.Length);
                await x.WriteRawAsync(System.Text.Encoding.ASCII.GetBytes($"HTTP/1.1 200 OK\r\nContent-Length: {length}\r\n\r\n"), ct);
                for (var i = 0; i < pieces.Length; i++)
                {
                    await x.WriteRawAsync(System.Text.Encoding.ASCII.GetBytes(pieces[i]), ct);
                    await received[i].Task.WaitAsync(ct);
                }
            },
        });
        await using var proxy = await ProxyHarness.StartAsync(upstream);

        using var response = await proxy.Client.GetAsync("/", HttpCompletionOption.ResponseHeadersRead).WaitAsync(TimeSpan.FromSeconds(30));
        await using var body = await response.Content.ReadAsStreamAsync();
        var text = "";
        for (var i = 0; i < pieces.Length; i++)
        {
            var expected = string.Concat(pieces.Take(i + 1));
            var buffer = new byte[64];
            while (text.Length < expected.Length)
            {
                // The destination sends nothing more until this piece has arrived: a piece kept back would hang here.
                var n = await body.ReadAsync(buffer).AsTask().WaitAsync(TimeSpan.FromSeconds(30));
                Assert.NotEqual(0, n);
                text += System.Text.Encoding.ASCII.GetString(buffer, 0, n);
            }
            Assert.Equal(expected, text);
            received[i].SetResult();
        }
    }

    // With a Content-Length the body streams to the destination as it is; without one (chunked from the client) Ferry
    // frames each piece as a chunk of its own.
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task Upload200MB_StreamsWithFlatMemory(bool knownLength)
    {
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions { Name = "big" });
        var settings = ProxyHarness.Settings((upstream.Name, upstream.Uri));
        settings["Routes:all:MaxRequestBodySize"] = "0"; // 200 MB is over the default limit (100 MiB)
        await using var proxy = await ProxyHarness.StartAsync(settings, null, upstream);
        await WarmUpAsync(proxy);
        using var sampler = new HeapSampler();
        var meter = AllocationMeter.Start();

        using var response = await proxy.Client.PostAsync("/sink", new GeneratedContent(Size, knownLength));
        var text = await response.Content.ReadAsStringAsync();

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal($"received {Size}", text.Trim());
        Report(knownLength ? "upload (Content-Length)" : "upload (chunked)", meter.KiBPerMiB(Size), sampler);
    }

    // One small request first, so that the figure leaves out what the first request of a process allocates once (JIT,
    // the connection pools, Kestrel's and the client's first connection).
    private static async Task WarmUpAsync(ProxyHarness proxy)
    {
        using var response = await proxy.Client.PostAsync("/sink", new ByteArrayContent(new byte[1024]));
        response.EnsureSuccessStatusCode();
    }

    private void Report(string what, double kibPerMiB, HeapSampler sampler)
    {
        // The heap's peak depends on the machine's GC budget (its gen0 size follows the cache size): printed, not asserted.
        output.WriteLine($"{what} 200 MB: allocated {kibPerMiB:0.00} KiB per MiB forwarded (bound {MaxKiBPerMiB}); " +
            $"GC heap growth peak {sampler.PeakGrowth / 1024.0 / 1024.0:0.0} MiB");
        Assert.InRange(kibPerMiB, 0, MaxKiBPerMiB);
    }

    private sealed class GeneratedContent(long size, bool knownLength) : HttpContent
    {
        protected override async Task SerializeToStreamAsync(Stream stream, TransportContext? context)
        {
            var block = new byte[64 * 1024];
            Array.Fill(block, (byte)'u');
            for (long sent = 0; sent < size; sent += block.Length)
            {
                await stream.WriteAsync(block.AsMemory(0, (int)Math.Min(block.Length, size - sent)));
            }
        }

        protected override bool TryComputeLength(out long length)
        {
            length = size;
            return knownLength;
        }
    }

    // Everything the process allocates from Start on, on every thread: client, Ferry and upstream together.
    private readonly struct AllocationMeter
    {
        private readonly long _start;

        private AllocationMeter(long start) => _start = start;

        public static AllocationMeter Start() => new(GC.GetTotalAllocatedBytes(precise: true));

        public double KiBPerMiB(long forwarded) =>
            (GC.GetTotalAllocatedBytes(precise: true) - _start) / 1024.0 / (forwarded / 1024.0 / 1024.0);
    }

    // Samples the GC heap while a transfer runs; the peak above the starting point is what a buffered body would show.
    private sealed class HeapSampler : IDisposable
    {
        private readonly long _baseline;
        private readonly Timer _timer;
        private long _peak;

        public HeapSampler()
        {
            GC.Collect();
            GC.WaitForPendingFinalizers();
            _baseline = GC.GetTotalMemory(forceFullCollection: true);
            _peak = _baseline;
            _timer = new Timer(_ => Sample(), null, TimeSpan.Zero, TimeSpan.FromMilliseconds(20));
        }

        public long PeakGrowth
        {
            get
            {
                Sample();
                return Interlocked.Read(ref _peak) - _baseline;
            }
        }

        private void Sample()
        {
            var now = GC.GetTotalMemory(forceFullCollection: false);
            long seen;
            while (now > (seen = Interlocked.Read(ref _peak)) && Interlocked.CompareExchange(ref _peak, now, seen) != seen)
            {
            }
        }

        public void Dispose() => _timer.Dispose();
    }
}
