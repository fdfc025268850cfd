using Ferry.Configuration;
using Ferry.Errors;
using Ferry.Forwarding;
using Ferry.Hosting;
using Ferry.Model;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Time.Testing;

namespace Ferry.Tests.Support;

// A proxy state with cluster "c" (destinations "a" at 10.0.0.1:8080 and "b" at 10.0.0.2:8080) and the three records
// the formats must describe exactly: a reused connection, a keep-alive race replayed, and a 502 with its cause.
internal sealed class TestRecords : IAsyncDisposable
{
    public static readonly DateTimeOffset Start = new(2026, 3, 4, 5, 6, 7, 89, TimeSpan.Zero);

    public TestRecords()
    {
        var settings = new Dictionary<string, string?>
        {
            ["Listeners:main:Address"] = "127.0.0.1:0",
            ["Routes:r:ClusterId"] = "c",
            ["Clusters:c:Destinations:a:Address"] = "http://10.0.0.1:8080",
            ["Clusters:c:Destinations:b:Address"] = "http://10.0.0.2:8080",
        };
        var result = FerryConfigLoader.Load(new ConfigurationBuilder().AddInMemoryCollection(settings).Build());
        Assert.True(result.IsValid, string.Join("\n", result.Errors));
        Config = result.Config!;
        State = new ProxyStateHolder(ProxyState.Build(Config, FerryServer.PoolFactory(Clock), Clock));
    }

    public FakeTimeProvider Clock { get; } = new(Start);
    public FerryConfig Config { get; }
    public ProxyStateHolder State { get; }
    public DestinationState A => State.Current.Clusters["c"].Destinations[0];
    public DestinationState B => State.Current.Clusters["c"].Destinations[1];

    public RequestRecord Reused()
    {
        var record = new RequestRecord
        {
            StartTime = Start,
            Method = "GET",
            Target = "/items?id=7&q=\"x\"",
            Protocol = "HTTP/1.1",
            ClientAddress = "192.0.2.10",
            Host = "shop.example",
            RouteId = "r",
            ClusterId = "c",
            Status = 200,
            BytesOut = 1234,
            Duration = TimeSpan.FromMicroseconds(3456),
        };
        record.Attempts.Add(new AttemptRecord
        {
            Destination = A,
            Status = 200,
            HeadTime = TimeSpan.FromMicroseconds(2100),
            ResponseTime = TimeSpan.FromMicroseconds(3250),
            Reused = true,
            ConnectionAge = TimeSpan.FromSeconds(30),
            IdleTime = TimeSpan.FromMilliseconds(1500),
            ConnectionRequests = 3,
        });
        return record;
    }

    public RequestRecord Replayed()
    {
        var record = new RequestRecord
        {
            StartTime = Start,
            Method = "PUT",
            Target = "/orders/1",
            Protocol = "HTTP/2",
            ClientAddress = "2001:db8::1",
            RouteId = "r",
            ClusterId = "c",
            Status = 201,
            BytesIn = 512,
            BytesOut = 0,
            Duration = TimeSpan.FromMilliseconds(12),
        };
        record.Attempts.Add(new AttemptRecord
        {
            Destination = A,
            Reused = true,
            IdleTime = TimeSpan.FromSeconds(4),
            ConnectionRequests = 10,
            Error = ProxyError.ConnectionTerminated,
            ErrorDetails = "reused connection closed before any response byte",
        });
        record.Attempts.Add(new AttemptRecord
        {
            Destination = A,
            Status = 201,
            ConnectTime = TimeSpan.FromMicroseconds(250),
            HeadTime = TimeSpan.FromMilliseconds(9),
            ResponseTime = TimeSpan.FromMilliseconds(10),
            Replay = true,
        });
        return record;
    }

    public RequestRecord BadGateway()
    {
        var record = new RequestRecord
        {
            StartTime = Start,
            Method = "GET",
            Target = "/",
            Protocol = "HTTP/1.1",
            ClientAddress = "192.0.2.11",
            RouteId = "r",
            ClusterId = "c",
            Status = 502,
            BytesOut = 39,
            Duration = TimeSpan.FromMilliseconds(1),
            Error = ProxyError.ConnectionRefused,
            ErrorDetails = "connect to 10.0.0.2:8080 refused",
        };
        record.Attempts.Add(new AttemptRecord
        {
            Destination = B,
            Error = ProxyError.ConnectionRefused,
            ErrorDetails = "connect to 10.0.0.2:8080 refused",
        });
        return record;
    }

    public ValueTask DisposeAsync() => State.Current.DisposeAsync();
}
