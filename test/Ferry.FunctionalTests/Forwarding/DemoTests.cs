using Ferry.Cli;
using Ferry.FunctionalTests.Support;
using Ferry.Lab;

namespace Ferry.FunctionalTests.Forwarding;

// `dotnet run --project src/Ferry` with no arguments: the demo's own settings, on free ports.
public sealed class DemoTests
{
    [Fact]
    public async Task Demo_AlternatesBetweenItsTwoUpstreams_AndServesTheAdminPage()
    {
        await using var a = LabUpstream.Start(new LabUpstreamOptions { Name = "demo-a" });
        await using var b = LabUpstream.Start(new LabUpstreamOptions { Name = "demo-b" });
        await using var proxy = await ProxyHarness.StartAsync(DemoCommand.Settings("127.0.0.1:0", "127.0.0.1:0", a.Uri, b.Uri), null, a, b);

        var bodies = new List<string>();
        for (var i = 0; i < 4; i++)
        {
            bodies.Add(await proxy.Client.GetStringAsync("/").WaitAsync(TimeSpan.FromSeconds(30)));
        }
        using var admin = new HttpClient { BaseAddress = proxy.Server.AdminUri };

        Assert.Equal(["hello from demo-a\n", "hello from demo-b\n", "hello from demo-a\n", "hello from demo-b\n"], bodies);
        Assert.Contains("demo-a", await admin.GetStringAsync("/status"));
        Assert.Contains("<html", await admin.GetStringAsync("/"), StringComparison.OrdinalIgnoreCase);
    }
}
