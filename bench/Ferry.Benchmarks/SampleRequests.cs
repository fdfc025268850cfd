using System.Net;
using Ferry.Configuration;
using Ferry.Errors;
using Ferry.Forwarding;
using Ferry.Hosting;
using Ferry.Model;
using Microsoft.Extensions.Configuration;

namespace Ferry.Benchmarks;

// One route to one cluster with one destination, and the record of a request through it as the small bench scenario
// makes one (GET / answered by nginx's 6-byte body on a reused connection).
internal static class SampleRequests
{
    public static ProxyStateHolder State(string destination = "a", string address = "http://127.0.0.1:8080") =>
        new(ProxyState.Build(Config(destination, address), FerryServer.PoolFactory(TimeProvider.System), TimeProvider.System));

    public static FerryConfig Config(string destination, string address) => FerryConfigLoader.Load(new ConfigurationBuilder().AddInMemoryCollection(
        new Dictionary<string, string?>
        {
            ["Listeners:main:Address"] = "127.0.0.1:0",
            ["Routes:r:ClusterId"] = "c",
            [$"Clusters:c:Destinations:{destination}:Address"] = address,
        }).Build()).Config!;

    public static RequestRecord Record(ProxyStateHolder state, int status = 200, ProxyError error = ProxyError.None, TimeSpan? duration = null)
    {
        var took = duration ?? TimeSpan.FromMicroseconds(350);
        var record = new RequestRecord
        {
            StartTime = DateTimeOffset.UtcNow,
            Method = "GET",
            Target = "/",
            Protocol = "HTTP/1.1",
            ClientAddress = IPAddress.Loopback.ToString(),
            Host = "127.0.0.1:8000",
            RouteId = "r",
            ClusterId = "c",
            Status = status,
            Error = error,
            BytesOut = error == ProxyError.None ? 6 : 0,
            Duration = took,
        };
        record.Attempts.Add(new AttemptRecord
        {
            Destination = state.Current.Clusters["c"].Destinations[0],
            Status = error == ProxyError.None ? status : 0,
            Error = error,
            HeadTime = took * 0.86,
            ResponseTime = took * 0.91,
            Reused = error == ProxyError.None,
            IdleTime = TimeSpan.FromMicroseconds(50),
            ConnectionRequests = 12,
        });
        return record;
    }
}
