using System.Net;
using Ferry.Upstream;
using Microsoft.Extensions.Time.Testing;

namespace Ferry.Tests.Upstream;

public sealed class PortSpaceTests
{
    private static readonly PortSpaceKey Any = new(null, new IPEndPoint(IPAddress.Parse("10.0.0.1"), 8080));
    private static readonly PortSpaceKey FromSecond = new(IPAddress.Parse("10.0.0.9"), new IPEndPoint(IPAddress.Parse("10.0.0.1"), 8080));

    [Theory]
    [InlineData("32768\t60999\n", 32768, 60999, 28232)]
    [InlineData("1024 65535", 1024, 65535, 64512)]
    public void Range_ParsesTheProcFile(string text, int low, int high, int size)
    {
        var range = EphemeralRange.Parse(text);
        Assert.Equal(new EphemeralRange(low, high), range);
        Assert.Equal(size, range!.Value.Size);
    }

    [Theory]
    [InlineData("")]
    [InlineData("60999 32768")]
    [InlineData("32768")]
    [InlineData("a b")]
    public void Range_RejectsAnythingElse(string text) => Assert.Null(EphemeralRange.Parse(text));

    [Fact]
    public void Range_FallsBackToLinuxDefault_WhenTheFileIsMissing() =>
        Assert.Equal(new EphemeralRange(32768, 60999), EphemeralRange.Read("/nonexistent/ip_local_port_range"));

    [Fact]
    public void Usage_CountsOpenConnections_AndClosedOnesForSixtySeconds()
    {
        var clock = new FakeTimeProvider();
        var ports = new PortSpace(100, clock);
        for (var i = 0; i < 10; i++)
        {
            ports.Opened(Any);
        }
        for (var i = 0; i < 4; i++)
        {
            ports.Closed(Any);
        }

        Assert.Equal(new PortSpaceUsage(Any, 6, 4, 100), ports.Busiest());
        clock.Advance(TimeSpan.FromSeconds(59));
        Assert.Equal(10, ports.Busiest().Used);
        clock.Advance(TimeSpan.FromSeconds(1));
        Assert.Equal(new PortSpaceUsage(Any, 6, 0, 100), ports.Busiest());
        Assert.Equal(0.06, ports.Busiest().Utilization);
    }

    [Fact]
    public void SourceAddresses_AreSpacesOfTheirOwn()
    {
        var ports = new PortSpace(100, new FakeTimeProvider());
        for (var i = 0; i < 30; i++)
        {
            ports.Opened(i % 3 == 0 ? FromSecond : Any);
        }

        Assert.Equal(new PortSpaceUsage(Any, 20, 0, 100), ports.Busiest());
    }

    [Fact]
    public void Warning_At80Percent_AtMostOncePerMinute()
    {
        var clock = new FakeTimeProvider();
        var ports = new PortSpace(10, clock);
        for (var i = 0; i < 7; i++)
        {
            ports.Opened(Any);
        }
        Assert.Null(ports.TakeWarning());

        ports.Opened(Any);
        Assert.Equal(new PortSpaceUsage(Any, 8, 0, 10), ports.TakeWarning());
        Assert.Null(ports.TakeWarning());

        ports.Closed(Any);
        ports.Opened(Any);
        clock.Advance(TimeSpan.FromSeconds(59));
        ports.Opened(Any);
        Assert.Null(ports.TakeWarning());

        clock.Advance(TimeSpan.FromSeconds(1));
        ports.Opened(Any);
        // The close a minute ago no longer counts: 10 open.
        Assert.Equal(new PortSpaceUsage(Any, 10, 0, 10), ports.TakeWarning());
    }
}
