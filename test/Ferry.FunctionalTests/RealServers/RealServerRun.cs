using Ferry.FunctionalTests.Support;
using Ferry.Upstream;
using Xunit.Abstractions;

namespace Ferry.FunctionalTests.RealServers;

// One run of waves through an in-process Ferry (default settings, access log in a temporary file) in front of real
// servers, and what came of it: the clients' counts, what each server processed, Ferry's pool counters.
internal sealed class RealServerRun
{
    // A pause around a server's idle timeout: from a little before it to half a second after, because gunicorn's and
    // Tomcat's idle sweeps run about once a second, so their real close comes up to a second after the timeout.
    public static Func<int, TimeSpan> Around(TimeSpan timeout, int seed)
    {
        var random = new Random(seed);
        return _ => timeout + TimeSpan.FromMilliseconds(random.Next(-100, 501));
    }

    public static async Task<RealServerRun> RunAsync(ITestOutputHelper output, string name, RealServer[] servers, int waves, Func<int, (int Gets, int Posts)> size, Func<int, TimeSpan> pause)
    {
        var accessLog = Path.Combine(Path.GetTempPath(), $"ferry-{name}-{Guid.NewGuid():N}.log");
        var settings = ProxyHarness.Settings(servers.Select(s => (s.Name, s.Uri)).ToArray());
        settings["AccessLog:Path"] = accessLog;
        RealServerRun run;
        await using (var proxy = await ProxyHarness.StartAsync(settings, null))
        {
            var result = await Waves.RunAsync(proxy.ProxyUri, name, waves, size, pause);
            await WaitForRecordsAsync(servers, result);
            var destinations = servers.Select(s => proxy.Destination(s.Name)).ToList();
            run = new RealServerRun(name, result, servers, destinations.Select(d => d.Pool).ToList(), destinations.Sum(d => d.Replays),
                [.. proxy.Logs.Lines.Where(l => !l.StartsWith("Information", StringComparison.Ordinal)).Take(20)]);
        }
        // Ferry's access log is complete once the proxy has stopped; the lines with an error say what Ferry did.
        var lines = File.Exists(accessLog) ? File.ReadAllLines(accessLog) : [];
        run.AccessLogErrors = [.. lines.Where(l => l.Contains("\"error\"", StringComparison.Ordinal)).Take(20)];
        run.SlowConnects = lines.Sum(CountSlowConnects);
        File.Delete(accessLog);
        foreach (var line in run.Summary)
        {
            output.WriteLine(line);
        }
        if (run.AccessLogErrors.Count > 0 || run.FerryLog.Count > 0)
        {
            output.WriteLine(run.Details);
        }
        return run;
    }

    // Tomcat's access-log valve, its record of processed requests, writes a line after the response has gone out: the
    // last wave's lines may land a moment after its answers. Waits (bounded) until every request sent is recorded.
    private static async Task WaitForRecordsAsync(RealServer[] servers, WaveResult result)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(5);
        while (DateTime.UtcNow < deadline)
        {
            var seen = servers.SelectMany(s => s.Seen().Keys).ToHashSet();
            if (result.Get.Ids.All(id => seen.Contains($"GET {id}")) && result.Post.Ids.All(id => seen.Contains($"POST {id}")))
            {
                return;
            }
            await Task.Delay(100);
        }
    }

    private RealServerRun(string name, WaveResult result, RealServer[] servers, List<ConnectionPool> pools, long replays, List<string> ferryLog)
    {
        Name = name;
        Methods = [result.Get, result.Post];
        Pools = pools;
        Replays = replays;
        FerryLog = ferryLog;
        var seen = new Dictionary<string, int>();
        foreach (var server in servers)
        {
            foreach (var (key, count) in server.Seen())
            {
                seen[key] = seen.GetValueOrDefault(key) + count;
            }
        }
        Processed = seen;
        PostsProcessedTwice = [.. result.Post.Ids.Where(id => seen.GetValueOrDefault($"POST {id}") > 1).Order()];
        PostsNeverProcessed = [.. result.Post.Ids.Where(id => seen.GetValueOrDefault($"POST {id}") == 0).Order()];
        GetsNeverProcessed = [.. result.Get.Ids.Where(id => seen.GetValueOrDefault($"GET {id}") == 0).Order()];
    }

    public string Name { get; }
    public IReadOnlyList<MethodCounts> Methods { get; }
    public IReadOnlyList<ConnectionPool> Pools { get; }
    public long Replays { get; }
    public IReadOnlyList<string> FerryLog { get; }
    public IReadOnlyList<string> AccessLogErrors { get; private set; } = [];

    // Connects that took a second or more: Linux retransmits a SYN after 1 s, so the destination's listen backlog was
    // full (or a SYN was lost). Printed, not asserted: whether a backlog overflows depends on the machine's speed.
    public int SlowConnects { get; private set; }

    private static int CountSlowConnects(string accessLogLine)
    {
        using var json = System.Text.Json.JsonDocument.Parse(accessLogLine);
        return json.RootElement.GetProperty("attempts").EnumerateArray()
            .Count(a => a.TryGetProperty("connect_ms", out var ms) && ms.ValueKind == System.Text.Json.JsonValueKind.Number && ms.GetDouble() >= 1000);
    }
    public IReadOnlyDictionary<string, int> Processed { get; }
    public List<string> PostsProcessedTwice { get; }
    public List<string> PostsNeverProcessed { get; }
    public List<string> GetsNeverProcessed { get; }

    public IEnumerable<string> Summary
    {
        get
        {
            foreach (var m in Methods)
            {
                var twice = m.Method == "POST" ? PostsProcessedTwice.Count.ToString() : "-";
                yield return $"{Name} {m.Method}: sent {m.Sent}, 2xx {m.Ok}, 5xx {m.ServerErrors}, other status {m.OtherStatus}, "
                    + $"dropped {m.DroppedCount} (client timeouts {m.TimedOut}), 503 destination_unavailable {m.Unavailable}, POSTs processed twice {twice}";
            }
            var retired = Enum.GetValues<RetireReason>()
                .Select(r => (Reason: r, Count: Pools.Sum(p => p.Retired(r)))).Where(r => r.Count > 0).Select(r => $"{r.Reason} {r.Count}");
            yield return $"{Name} Ferry: upstream connections opened {Pools.Sum(p => p.Opened)}, reused {Pools.Sum(p => p.Reused)}, "
                + $"replays {Replays}, connects of 1 s or more {SlowConnects}, closed while idle by FIN {Pools.Sum(p => p.ClosedByFin)} / RST {Pools.Sum(p => p.ClosedByReset)}, "
                + $"retired: {string.Join(", ", retired)}; learned idle timeout "
                + string.Join("/", Pools.Select(p => p.Learner.IdleTimeout is { } t ? $"{t.TotalSeconds:0.###} s" : "none"))
                + $", learned max requests {string.Join("/", Pools.Select(p => p.Learner.MaxRequests))}";
        }
    }

    public string Details => string.Join("\n", Methods.SelectMany(m => m.Failures)
        .Concat(AccessLogErrors.Select(l => $"access log: {l}"))
        .Concat(FerryLog.Select(l => $"ferry log: {l}")));

    public void AssertNoFailure()
    {
        foreach (var m in Methods)
        {
            Assert.True(m.ServerErrors == 0, $"{Name} {m.Method}: {m.ServerErrors} 5xx\n{Details}");
            Assert.True(m.DroppedCount == 0, $"{Name} {m.Method}: {m.DroppedCount} requests without an answer\n{Details}");
            Assert.True(m.Ok == m.Sent, $"{Name} {m.Method}: {m.Sent - m.Ok} requests not answered 2xx\n{Details}");
        }
        Assert.True(PostsProcessedTwice.Count == 0, $"{Name}: POSTs processed twice: {string.Join(", ", PostsProcessedTwice)}");
        Assert.True(PostsNeverProcessed.Count == 0, $"{Name}: POSTs answered 2xx but never processed: {string.Join(", ", PostsNeverProcessed)}");
        Assert.True(GetsNeverProcessed.Count == 0, $"{Name}: GETs answered 2xx but never processed: {string.Join(", ", GetsNeverProcessed)}");
    }

    // The waves did meet the server's idle timeout: connections were closed (by the server, or by Ferry before it)
    // and new ones opened.
    public void AssertConnectionsWereClosedAndReplaced()
    {
        var closed = Enum.GetValues<RetireReason>().Where(r => r != RetireReason.Shutdown).Sum(r => Pools.Sum(p => p.Retired(r)));
        Assert.True(closed > 0, $"{Name}: no upstream connection was closed during the waves");
    }
}
