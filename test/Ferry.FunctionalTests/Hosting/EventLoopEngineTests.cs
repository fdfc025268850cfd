using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json.Nodes;
using Ferry.FunctionalTests.Support;
using Ferry.Hosting;
using Ferry.Lab;
using Ferry.Loops;

namespace Ferry.FunctionalTests.Hosting;

// Ferry on its own event loops (Engine: Loops) rather than Kestrel's socket transport: requests, keep-alive, large
// bodies against a slow reader both ways, aborts, many connections, TLS, a reload that removes a listener, and that
// every accepted descriptor is closed again.
public sealed class EventLoopEngineTests : IDisposable
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(60);
    private const int LargeBody = 8 * 1024 * 1024;

    private readonly string _directory = Directory.CreateTempSubdirectory("ferry-loops-").FullName;

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    // "/upload" answers with the number of body bytes it read; "/download?n" sends n bytes of Pattern; anything else "ok".
    private static LabUpstream Upstream() => LabUpstream.Start(new LabUpstreamOptions
    {
        Name = "u",
        Script = async (x, ct) =>
        {
            var received = await x.DrainBodyAsync(ct);
            if (x.Path == "/upload")
            {
                await x.WriteResponseAsync(200, received.ToString(System.Globalization.CultureInfo.InvariantCulture), null, ct);
            }
            else if (x.Path == "/download")
            {
                var length = int.Parse(x.Target[(x.Target.IndexOf('?') + 1)..], System.Globalization.CultureInfo.InvariantCulture);
                await x.WriteHeadAsync(200, null, length, ct);
                var body = Pattern(length);
                for (var offset = 0; offset < length; offset += 64 * 1024)
                {
                    await x.WriteBodyAsync(body.AsMemory(offset, Math.Min(64 * 1024, length - offset)), ct);
                }
                await x.CompleteResponseAsync(ct);
            }
            else
            {
                await x.WriteResponseAsync(200, "ok", null, ct);
            }
        },
    });

    private static byte[] Pattern(int length)
    {
        var bytes = new byte[length];
        for (var i = 0; i < length; i++)
        {
            bytes[i] = (byte)(i % 251);
        }
        return bytes;
    }

    private static Task<ProxyHarness> StartAsync(LabUpstream upstream, Action<Dictionary<string, string?>>? configure = null)
    {
        var settings = ProxyHarness.Settings((upstream.Name, upstream.Uri));
        settings["Engine"] = "Loops";
        settings["EventLoops"] = "2";
        settings["AccessLog:Enabled"] = "false";
        configure?.Invoke(settings);
        return ProxyHarness.StartAsync(settings, null, upstream);
    }

    private static EventLoops Loops(FerryServer server) => server.Loops ?? throw new InvalidOperationException("not on the loops engine");

    // Every descriptor the loops accepted is closed once the clients have gone, and the loops hold nothing but the
    // listeners' registrations (one per loop and listener) and the upstream connections the pools keep.
    private static async Task AssertAllClosedAsync(FerryServer server, int listeners = 1)
    {
        var loops = Loops(server);
        await Wait.Until(() => loops.Connections.Closed == loops.Connections.Opened, Bound);
        await Wait.Until(() => loops.All.Sum(l => l.Registered) == listeners * loops.All.Count + UpstreamConnections(server), Bound);
    }

    private static int UpstreamConnections(FerryServer server) =>
        server.State.Current.Clusters.Values.SelectMany(c => c.Destinations).Sum(d => d.Pool.Idle + d.Pool.Active);

    [Fact]
    public async Task Requests_AreServed_OnOneKeptAliveConnection()
    {
        await using var upstream = Upstream();
        await using var proxy = await StartAsync(upstream);
        Assert.NotNull(proxy.Server.Loops);
        using (var client = new HttpClient(new SocketsHttpHandler { UseProxy = false, MaxConnectionsPerServer = 1 }) { BaseAddress = proxy.ProxyUri, Timeout = Bound })
        {
            for (var i = 0; i < 20; i++)
            {
                Assert.Equal("ok", await client.GetStringAsync($"/r{i}"));
            }
            Assert.Equal(1, Loops(proxy.Server).Connections.Opened);
            // One upstream connection, opened on the client's loop and found there by every later request.
            var pool = proxy.Destination("u").Pool;
            Assert.Equal(1, pool.Opened);
            Assert.Equal(19, pool.Reused);
            Assert.Equal(0, pool.CrossLoopLeases);
            Assert.Equal(Loops(proxy.Server).All.Count + 2, Loops(proxy.Server).All.Sum(l => l.Registered)); // listener, client, upstream
        }
        await AssertAllClosedAsync(proxy.Server);
    }

    [Fact]
    public async Task LargeUpload_ReachesTheUpstreamWhole()
    {
        await using var upstream = Upstream();
        await using var proxy = await StartAsync(upstream);
        using (var client = new HttpClient(new SocketsHttpHandler { UseProxy = false }) { BaseAddress = proxy.ProxyUri, Timeout = Bound })
        {
            using var response = await client.PostAsync("/upload", new ByteArrayContent(Pattern(LargeBody)));
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            Assert.Equal(LargeBody.ToString(System.Globalization.CultureInfo.InvariantCulture), await response.Content.ReadAsStringAsync());
        }
        await AssertAllClosedAsync(proxy.Server);
    }

    [Fact]
    public async Task LargeDownload_ToASlowReader_ArrivesWhole()
    {
        await using var upstream = Upstream();
        await using var proxy = await StartAsync(upstream);
        using (var tcp = new TcpClient())
        {
            // A small receive window, read a little at a time with pauses: the loop must wait for EPOLLOUT many times.
            tcp.ReceiveBufferSize = 16 * 1024;
            await tcp.ConnectAsync(IPAddress.Loopback, proxy.ProxyUri.Port).WaitAsync(Bound);
            var stream = tcp.GetStream();
            await stream.WriteAsync(Encoding.ASCII.GetBytes($"GET /download?{LargeBody} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"));
            using var received = new MemoryStream();
            var buffer = new byte[32 * 1024];
            var reads = 0;
            while (await stream.ReadAsync(buffer).AsTask().WaitAsync(Bound) is var read and > 0)
            {
                received.Write(buffer, 0, read);
                if (++reads % 16 == 0)
                {
                    await Task.Delay(1);
                }
            }
            var bytes = received.ToArray();
            var headEnd = bytes.AsSpan().IndexOf("\r\n\r\n"u8) + 4;
            Assert.StartsWith("HTTP/1.1 200", Encoding.ASCII.GetString(bytes, 0, 12));
            Assert.True(bytes.AsSpan(headEnd).SequenceEqual(Pattern(LargeBody)), $"body of {bytes.Length - headEnd} bytes differs");
        }
        await AssertAllClosedAsync(proxy.Server);
    }

    [Fact]
    public async Task AClientResettingMidBody_IsClosed_AndTheProxyServesTheNext()
    {
        await using var upstream = Upstream();
        await using var proxy = await StartAsync(upstream);
        using (var tcp = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp))
        {
            await tcp.ConnectAsync(IPAddress.Loopback, proxy.ProxyUri.Port).WaitAsync(Bound);
            await tcp.SendAsync(Encoding.ASCII.GetBytes($"POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: {LargeBody}\r\n\r\n"));
            await tcp.SendAsync(new byte[256 * 1024]);
            tcp.LingerState = new LingerOption(true, 0); // close with a reset
        }
        using (var tcp = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp))
        {
            await tcp.ConnectAsync(IPAddress.Loopback, proxy.ProxyUri.Port).WaitAsync(Bound);
            await tcp.SendAsync(Encoding.ASCII.GetBytes($"POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: {LargeBody}\r\n\r\n"));
            await tcp.SendAsync(new byte[64 * 1024]);
            tcp.Shutdown(SocketShutdown.Both); // a FIN mid-body
        }
        Assert.Equal("ok", await proxy.Client.GetStringAsync("/after"));
        proxy.Client.Dispose();
        await AssertAllClosedAsync(proxy.Server);
    }

    [Fact]
    public async Task ManyConcurrentConnections_AreAllServed()
    {
        const int connections = 200;
        await using var upstream = Upstream();
        await using var proxy = await StartAsync(upstream);
        var handlers = Enumerable.Range(0, connections).Select(_ => new HttpClient(new SocketsHttpHandler { UseProxy = false }) { BaseAddress = proxy.ProxyUri, Timeout = Bound }).ToList();
        try
        {
            var bodies = await Task.WhenAll(handlers.Select((c, i) => c.GetStringAsync($"/c{i}"))).WaitAsync(Bound);
            Assert.All(bodies, b => Assert.Equal("ok", b));
            Assert.Equal(connections, Loops(proxy.Server).Connections.Opened);
            // Spread evenly over both loops, whichever accepted them: each goes to the loop with the fewest clients
            // (two loops accepting at the same moment may both pick the same one).
            var clients = Loops(proxy.Server).All.Select(l => l.Clients).ToArray();
            Assert.Equal(connections, clients.Sum());
            Assert.True(clients.Max() - clients.Min() <= 20, string.Join(", ", clients));
        }
        finally
        {
            handlers.ForEach(h => h.Dispose());
        }
        await AssertAllClosedAsync(proxy.Server);
    }

    [Fact]
    public async Task HttpsListener_ServesOverTls()
    {
        await using var upstream = Upstream();
        await using var proxy = await StartAsync(upstream, s =>
        {
            s["Listeners:main:Certificate:Path"] = TestCertificates.Shared.ServerCertificateFile;
            s["Listeners:main:Certificate:KeyPath"] = TestCertificates.Shared.ServerKeyFile;
        });
        Assert.Equal("https", proxy.ProxyUri.Scheme);
        using (var client = new HttpClient(new SocketsHttpHandler
        {
            UseProxy = false,
            SslOptions = { RemoteCertificateValidationCallback = (_, _, _, _) => true },
        })
        { BaseAddress = proxy.ProxyUri, Timeout = Bound })
        {
            Assert.Equal("ok", await client.GetStringAsync("/secure"));
            using var response = await client.PostAsync("/upload", new ByteArrayContent(Pattern(1024 * 1024)));
            Assert.Equal("1048576", await response.Content.ReadAsStringAsync());
        }
        await AssertAllClosedAsync(proxy.Server);
    }

    private static long TimersFired(FerryServer server) => Loops(server).All.Sum(l => l.TimersFired);

    // The exchange's response-head deadline is set on the loop that reads the upstream: its loop's timer wheel fires
    // it, on the loop, and not before it is due. The stalled request comes second on the client's connection: the
    // first one's exchange ran on the thread pool up to its first upstream read, and set its deadlines as ITimers.
    [Fact]
    public async Task AnUpstreamThatNeverAnswers_TimesOut_ThroughTheLoopsTimerWheel()
    {
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions
        {
            Name = "slow",
            Script = (x, ct) => x.Path == "/stall" ? x.StallAsync(ct) : x.WriteResponseAsync(200, "ok", null, ct),
        });
        await using var proxy = await StartAsync(upstream, s => s["Clusters:c:Timeouts:ResponseHead"] = "300ms");
        using var client = new HttpClient(new SocketsHttpHandler { UseProxy = false, MaxConnectionsPerServer = 1 }) { BaseAddress = proxy.ProxyUri, Timeout = Bound };
        Assert.Equal("ok", await client.GetStringAsync("/first"));
        Assert.Equal(0, TimersFired(proxy.Server));

        var started = System.Diagnostics.Stopwatch.StartNew();
        var response = await client.GetAsync("/stall");
        var elapsed = started.Elapsed;

        await ProxyAssert.AssertFailure(response, HttpStatusCode.GatewayTimeout, "http_response_timeout");
        Assert.True(elapsed >= TimeSpan.FromMilliseconds(300), $"timed out after {elapsed.TotalMilliseconds} ms");
        Assert.Equal(1, TimersFired(proxy.Server));
        Assert.Equal(1, proxy.Destination("slow").Pool.Reused);
        await ProxyAssert.AssertPoolClean(proxy, "slow");
    }

    // Every deadline an exchange set is cleared when it ends: a connection idle for longer than all of them serves
    // the next request, and no timer of the first exchange fires meanwhile or into the second.
    [Fact]
    public async Task AConnectionWhoseDeadlineWasCleared_IsReused_AndNoTimerFires()
    {
        await using var upstream = Upstream();
        await using var proxy = await StartAsync(upstream, s =>
        {
            s["Clusters:c:Timeouts:SendRequest"] = "500ms";
            s["Clusters:c:Timeouts:ResponseHead"] = "500ms";
            s["Clusters:c:Timeouts:BodyInactivity"] = "500ms";
        });
        using var client = new HttpClient(new SocketsHttpHandler { UseProxy = false, MaxConnectionsPerServer = 1 }) { BaseAddress = proxy.ProxyUri, Timeout = Bound };

        Assert.Equal("ok", await client.GetStringAsync("/first"));
        await Task.Delay(1200);
        // A body of several reads, a deadline moved for each; small enough for the exchange to stay on the loop (the
        // relay of a 1 MiB body continues part of the way on the thread pool, where its deadlines are ITimers).
        Assert.Equal(48 * 1024, (await client.GetByteArrayAsync("/download?49152")).Length);

        var pool = proxy.Destination("u").Pool;
        Assert.Equal(1, pool.Opened);
        Assert.Equal(1, pool.Reused);
        Assert.Equal(0, TimersFired(proxy.Server));
    }

    [Fact]
    public async Task ALoopBlockedOnPurpose_IsLogged_Counted_AndShownInStatus()
    {
        await using var upstream = Upstream();
        await using var proxy = await StartAsync(upstream);
        Assert.Equal("ok", await proxy.Client.GetStringAsync("/before"));
        var loop = Loops(proxy.Server).All[1];

        // Other stalls may come before (the first request's code compiled on a loop): this one is at least 50 ms. A
        // saturated machine can keep the watchdog's own thread off the processors for all of it: it is tried again.
        for (var attempt = 0; attempt < 5 && loop.Activity.Longest < TimeSpan.FromMilliseconds(50); attempt++)
        {
            await loop.InvokeAsync(() => Thread.Sleep(50)).WaitAsync(Bound);
            await Task.Delay(100);
        }
        await Wait.Until(() => loop.Activity.Longest >= TimeSpan.FromMilliseconds(50), Bound);
        Assert.Contains(proxy.Logs.Lines, l => l.StartsWith("Warning Ferry.Loops.LoopWatchdog: Event loop 1 stalled: one batch of work has run for ", StringComparison.Ordinal));
        Assert.Contains(proxy.Logs.Lines, l => l.StartsWith("Warning Ferry.Loops.LoopWatchdog: Event loop 1 stall ended after ", StringComparison.Ordinal));
        using var admin = new HttpClient { BaseAddress = proxy.Server.AdminUri, Timeout = Bound };
        var status = JsonNode.Parse(await admin.GetStringAsync("/status"))!["eventLoops"]!;
        Assert.Equal(10, (double)status["stallThresholdMs"]!);
        var shown = status["loops"]!.AsArray().Single(l => (int)l!["index"]! == 1)!;
        Assert.True((long)shown["stalls"]! >= 1, shown.ToJsonString());
        Assert.True((double)shown["longestStallMs"]! >= 50, shown.ToJsonString());
        Assert.True((double)shown["stalledMs"]! >= 50, shown.ToJsonString());
        var metrics = await admin.GetStringAsync("/metrics");
        Assert.Matches("(?m)^ferry_event_loop_stalls_total\\{ferry_event_loop=\"1\"\\} [1-9]", metrics);
        Assert.Matches("(?m)^ferry_event_loop_stall_time_seconds_total\\{ferry_event_loop=\"1\"\\} 0\\.[0-9]", metrics);
    }

    [Theory]
    [InlineData("Auto", "Loops")]
    [InlineData("Sockets", "Sockets")]
    public async Task StatusNamesTheEngineServing_AndAutoTakesTheLoopsHere(string configured, string serving)
    {
        await using var upstream = Upstream();
        await using var proxy = await StartAsync(upstream, s =>
        {
            s["Engine"] = configured;
            if (configured == "Sockets")
            {
                s.Remove("EventLoops");
            }
        });
        Assert.Equal("ok", await proxy.Client.GetStringAsync("/"));
        Assert.Equal(serving == "Loops", proxy.Server.Loops is not null);
        using var admin = new HttpClient { BaseAddress = proxy.Server.AdminUri, Timeout = Bound };
        var status = JsonNode.Parse(await admin.GetStringAsync("/status"))!;
        Assert.Equal(serving, (string)status["engine"]!);
        Assert.Equal(serving == "Loops", status["eventLoops"] is not null);
    }

    [Fact]
    public async Task AZeroStallThreshold_RunsNoWatchdog()
    {
        await using var upstream = Upstream();
        await using var proxy = await StartAsync(upstream, s => s["EventLoopStallThreshold"] = "0");
        Assert.Null(Loops(proxy.Server).Watchdog);
        using var admin = new HttpClient { BaseAddress = proxy.Server.AdminUri, Timeout = Bound };
        var status = JsonNode.Parse(await admin.GetStringAsync("/status"))!["eventLoops"]!;
        Assert.Null(status["stallThresholdMs"]);
        Assert.DoesNotContain("ferry_event_loop_stalls", await admin.GetStringAsync("/metrics"));
    }

    [Fact]
    public async Task AReloadRemovingAListener_StopsItsAccepting_OnEveryLoop()
    {
        await using var upstream = Upstream();
        var path = Path.Combine(_directory, "ferry.json");
        string Config(bool both)
        {
            var listeners = new JsonObject { ["kept"] = new JsonObject { ["Address"] = "127.0.0.1:0" } };
            if (both)
            {
                listeners["gone"] = new JsonObject { ["Address"] = "127.0.0.1:0" };
            }
            return new JsonObject
            {
                ["Engine"] = "Loops",
                ["EventLoops"] = 2,
                ["Listeners"] = listeners,
                ["AccessLog"] = new JsonObject { ["Enabled"] = false },
                ["Admin"] = new JsonObject { ["Address"] = "127.0.0.1:0" },
                ["Routes"] = new JsonObject { ["all"] = new JsonObject { ["ClusterId"] = "c" } },
                ["Clusters"] = new JsonObject { ["c"] = new JsonObject { ["Destinations"] = new JsonObject { ["u"] = new JsonObject { ["Address"] = upstream.Uri.ToString() } } } },
            }.ToJsonString();
        }
        await File.WriteAllTextAsync(path, Config(both: true));
        // The environment pins the engine too: FERRY_TEST_ENGINE's would override the file's otherwise.
        await using var server = await ReloadableServer.StartAsync(path, new System.Collections.Hashtable { ["FERRY__Engine"] = "Loops" }, drainGrace: TimeSpan.Zero);
        var gone = server.ListenerUri("gone")!;
        using (var client = new HttpClient(new SocketsHttpHandler { UseProxy = false }) { Timeout = Bound })
        {
            Assert.Equal("ok", await client.GetStringAsync(new Uri(gone, "/before")));
        }
        await AssertAllClosedAsync(server, listeners: 2);

        await File.WriteAllTextAsync(path, Config(both: false));
        var result = await server.Reloader.ReloadAsync("test").WaitAsync(Bound);
        Assert.True(result.Success, string.Join("\n", result.Errors));

        using var refused = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        var error = await Assert.ThrowsAsync<SocketException>(() => refused.ConnectAsync(IPAddress.Loopback, gone.Port).WaitAsync(Bound));
        Assert.Equal(SocketError.ConnectionRefused, error.SocketErrorCode);
        using (var client = new HttpClient(new SocketsHttpHandler { UseProxy = false }) { Timeout = Bound })
        {
            Assert.Equal("ok", await client.GetStringAsync(new Uri(server.ListenerUri("kept")!, "/after")));
        }
        await AssertAllClosedAsync(server, listeners: 1);
    }
}
