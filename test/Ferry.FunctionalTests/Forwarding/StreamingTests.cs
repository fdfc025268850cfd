using System.Net;
using Ferry.FunctionalTests.Support;
using Ferry.Lab;
using Xunit.Abstractions;

namespace Ferry.FunctionalTests.Forwarding;

// 200 MB each way through Ferry: bodies stream with backpressure and are never buffered whole.
public sealed class StreamingTests(ITestOutputHelper output)
{
    private const long Size = 200L * 1024 * 1024;

    // Generous: client, Ferry and upstream share this process; buffering one body would alone exceed it.
    private const long MaxHeapGrowth = 64L * 1024 * 1024;

    [Fact]
    public async Task Download200MB_StreamsWithFlatMemory()
    {
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions { Name = "big" });
        await using var proxy = await ProxyHarness.StartAsync(upstream);
        using var sampler = new HeapSampler();

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
        output.WriteLine($"download 200 MB: GC heap growth peak {sampler.PeakGrowth / 1024.0 / 1024.0:0.0} MiB");
        Assert.InRange(sampler.PeakGrowth, long.MinValue, MaxHeapGrowth);
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

    [Fact]
    public async Task Upload200MB_StreamsWithFlatMemory()
    {
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions { Name = "big" });
        await using var proxy = await ProxyHarness.StartAsync(upstream);
        using var sampler = new HeapSampler();

        using var response = await proxy.Client.PostAsync("/sink", new GeneratedContent(Size));

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal($"received {Size}", (await response.Content.ReadAsStringAsync()).Trim());
        output.WriteLine($"upload 200 MB: GC heap growth peak {sampler.PeakGrowth / 1024.0 / 1024.0:0.0} MiB");
        Assert.InRange(sampler.PeakGrowth, long.MinValue, MaxHeapGrowth);
    }

    private sealed class GeneratedContent(long size) : HttpContent
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
            return true;
        }
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
