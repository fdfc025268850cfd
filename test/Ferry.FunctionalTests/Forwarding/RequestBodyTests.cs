using System.Net;
using Ferry.FunctionalTests.Support;
using Ferry.Lab;

namespace Ferry.FunctionalTests.Forwarding;

// A request body Ferry stops forwarding because the destination has already answered.
public sealed class RequestBodyTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task EarlyAnswerAndClose_LeavesTheClientConnectionUsable()
    {
        // The destination refuses an upload before reading it and closes (a 413 from a size check, say). Ferry stops
        // sending the body; Kestrel must still be able to read the rest of it from the client, or the client loses its
        // keep-alive connection and Kestrel logs that its body reader was left mid-read.
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions
        {
            Name = "early",
            Script = (x, ct) => x.Method == "POST"
                ? LabScripts.WriteThenClose("HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")(x, ct)
                : LabRoutes.HandleAsync(x, ct),
        });
        await using var proxy = await ProxyHarness.StartAsync(upstream);
        await using var client = await RawHttpConnection.ConnectAsync(new IPEndPoint(IPAddress.Loopback, proxy.ProxyUri.Port));

        // Larger than the replay buffer (64 KiB), so the body streams; the client pauses half way.
        const int length = 256 * 1024;
        await client.SendAsync($"POST /upload HTTP/1.1\r\nHost: early\r\nContent-Length: {length}\r\n\r\n");
        await client.SendAsync(new byte[length / 2]);
        var refused = await client.ReadResponseAsync().WaitAsync(Bound);
        await client.SendAsync(new byte[length / 2]);
        var next = await client.GetAsync("/").WaitAsync(Bound);

        Assert.Equal(413, refused.Status);
        Assert.Equal(200, next.Status);
        Assert.DoesNotContain(proxy.Logs.Lines, l => l.Contains("invalid state", StringComparison.Ordinal));
    }
}
