using System.Net;
using System.Text;
using Ferry.FunctionalTests.Lab;
using Ferry.FunctionalTests.Support;
using Ferry.Lab;
using static Ferry.FunctionalTests.Forwarding.FailureTests;

namespace Ferry.FunctionalTests.Forwarding;

// What a client or a destination sends on purpose to break Ferry: each ends in one classified answer, leaves the
// destination's health alone when it is not at fault, and leaves no connection or port counted that is not open.
public sealed class HostilePeerTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task UpstreamThatStopsReadingAnUpload_LeavesExactAccounting()
    {
        // The destination answers before reading the upload and then reads nothing: the body Ferry was sending is
        // still buffered when the connection is closed.
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions
        {
            Name = "deaf",
            Script = async (x, ct) =>
            {
                await x.WriteRawAsync(Encoding.ASCII.GetBytes("HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"), ct);
                await x.StallAsync(ct);
            },
        });
        await using var proxy = await ProxyHarness.StartAsync(upstream);
        using var content = new ByteArrayContent(new byte[32 * 1024 * 1024]);

        var response = await proxy.Client.PostAsync("/upload", content).WaitAsync(Bound);

        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, response.StatusCode);
        await AssertNoConnectionCounted(proxy, "deaf");
        Assert.DoesNotContain(proxy.Logs.Lines, l => l.Contains("Unhandled exception", StringComparison.OrdinalIgnoreCase));
    }

    internal static async Task AssertNoConnectionCounted(ProxyHarness proxy, string destination)
    {
        var pool = proxy.Destination(destination).Pool;
        await Wait.Until(() => pool.Active == 0);
        Assert.Equal(0, pool.Idle);
        Assert.Equal(0, pool.Ports.Busiest().Open);
    }
}
