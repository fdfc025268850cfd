using System.Net;
using System.Text;

namespace Ferry.FunctionalTests.RealServers;

// Synchronized waves: every client sends one request at the same moment, all wait for their answers, then all pause
// (about a server's idle timeout, when its keep-alive connections close) before the next wave. Each request carries a
// unique X-Request-Id, which the server records, so that what it processed can be counted per request.
internal static class Waves
{
    public static readonly TimeSpan RequestTimeout = TimeSpan.FromSeconds(30);
    public const string Path = "/hello.txt";

    public static async Task<WaveResult> RunAsync(Uri proxy, string name, int waves, Func<int, (int Gets, int Posts)> size, Func<int, TimeSpan> pause)
    {
        using var client = new HttpClient(new SocketsHttpHandler
        {
            UseProxy = false,
            AllowAutoRedirect = false,
            UseCookies = false,
            PooledConnectionIdleTimeout = TimeSpan.FromMinutes(5),
        })
        {
            BaseAddress = proxy,
            Timeout = RequestTimeout,
        };
        var result = new WaveResult();
        for (var wave = 0; wave < waves; wave++)
        {
            var (gets, posts) = size(wave);
            var requests = Enumerable.Range(0, gets).Select(i => SendAsync(client, result, "GET", $"{name}-w{wave}-g{i}"))
                .Concat(Enumerable.Range(0, posts).Select(i => SendAsync(client, result, "POST", $"{name}-w{wave}-p{i}")));
            await Task.WhenAll(requests);
            if (wave < waves - 1)
            {
                await Task.Delay(pause(wave));
            }
        }
        return result;
    }

    private static async Task SendAsync(HttpClient client, WaveResult result, string method, string id)
    {
        using var request = new HttpRequestMessage(new HttpMethod(method), Path);
        request.Headers.Add("X-Request-Id", id);
        if (method == "POST")
        {
            request.Content = new StringContent($"order={id}&quantity=3", Encoding.ASCII, "application/x-www-form-urlencoded");
        }
        var counts = result.For(method);
        counts.Ids.Add(id);
        try
        {
            using var response = await client.SendAsync(request);
            await response.Content.ReadAsByteArrayAsync();
            var proxyStatus = response.Headers.TryGetValues("Proxy-Status", out var values) ? string.Join(", ", values) : null;
            counts.Answered(id, response.StatusCode, proxyStatus);
        }
        catch (Exception e) when (e is HttpRequestException or TaskCanceledException or IOException)
        {
            counts.Dropped(id, e);
        }
    }
}

internal sealed class WaveResult
{
    public MethodCounts Get { get; } = new("GET");
    public MethodCounts Post { get; } = new("POST");

    public MethodCounts For(string method) => method == "GET" ? Get : Post;
}

internal sealed class MethodCounts(string method)
{
    private readonly Lock _lock = new();
    private readonly List<string> _failures = [];

    public string Method { get; } = method;
    public System.Collections.Concurrent.ConcurrentBag<string> Ids { get; } = [];
    public int Sent => Ids.Count;
    public int Ok { get; private set; }
    public int ServerErrors { get; private set; }
    public int OtherStatus { get; private set; }
    public int DroppedCount { get; private set; }
    public int TimedOut { get; private set; }
    public int Unavailable { get; private set; } // 503 with Proxy-Status destination_unavailable: every destination down

    // The first failures, each with its id and Ferry's Proxy-Status or the client's exception.
    public IReadOnlyList<string> Failures
    {
        get
        {
            lock (_lock)
            {
                return [.. _failures];
            }
        }
    }

    public void Answered(string id, HttpStatusCode status, string? proxyStatus)
    {
        lock (_lock)
        {
            if ((int)status is >= 200 and < 300)
            {
                Ok++;
                return;
            }
            if ((int)status >= 500)
            {
                ServerErrors++;
            }
            else
            {
                OtherStatus++;
            }
            if (status == HttpStatusCode.ServiceUnavailable && proxyStatus?.Contains("destination_unavailable", StringComparison.Ordinal) == true)
            {
                Unavailable++;
            }
            Note($"{Method} {id}: {(int)status} Proxy-Status: {proxyStatus ?? "(none)"}");
        }
    }

    public void Dropped(string id, Exception e)
    {
        lock (_lock)
        {
            DroppedCount++;
            if (e is TaskCanceledException)
            {
                TimedOut++;
            }
            Note($"{Method} {id}: no answer: {e.GetType().Name}: {e.Message}{(e.InnerException is { } inner ? $" ({inner.Message})" : "")}");
        }
    }

    private void Note(string failure)
    {
        if (_failures.Count < 20)
        {
            _failures.Add(failure);
        }
    }
}
