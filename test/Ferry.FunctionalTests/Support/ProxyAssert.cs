using System.Net;

namespace Ferry.FunctionalTests.Support;

// What a failed request must show (status, Proxy-Status, body) and leave behind (no connection in the pool).
internal static class ProxyAssert
{
    public static string ProxyStatus(HttpResponseMessage response) => response.Headers.GetValues("Proxy-Status").Single();

    public static async Task AssertFailure(HttpResponseMessage response, HttpStatusCode status, string error)
    {
        Assert.Equal(status, response.StatusCode);
        Assert.StartsWith($"ferry; error={error}", ProxyStatus(response));
        Assert.Contains(error, await response.Content.ReadAsStringAsync());
    }

    public static async Task AssertPoolClean(ProxyHarness proxy, string destination)
    {
        var pool = proxy.Destination(destination).Pool;
        await Wait.Until(() => pool.Active == 0);
        Assert.Equal(0, pool.Idle);
    }
}
