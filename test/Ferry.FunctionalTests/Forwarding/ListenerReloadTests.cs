using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json.Nodes;
using Ferry.FunctionalTests.Support;
using Ferry.Hosting;
using Ferry.Lab;
using Xunit.Abstractions;

namespace Ferry.FunctionalTests.Forwarding;

// Listeners changed by a configuration reload (docs/configuration.md, "Reload"): an unchanged listener keeps its
// socket and its connections, a changed one is rebound on the same address without a refused connection, an added
// one (HTTPS here) answers as soon as the reload returns, a removed one stops accepting and closes its connections.
public sealed class ListenerReloadTests(ITestOutputHelper output) : IDisposable
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);

    private readonly string _directory = Directory.CreateTempSubdirectory("ferry-listeners-").FullName;

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    // Answers with the X-Forwarded-For it received: what a listener's TrustedProxies decides.
    private static LabUpstream Upstream() => LabUpstream.Start(new LabUpstreamOptions
    {
        Name = "echo",
        Script = async (x, ct) =>
        {
            await x.DrainBodyAsync(ct);
            await x.WriteResponseAsync(200, x.Header("X-Forwarded-For") ?? "", null, ct);
        },
    });

    // Step 0: "kept", "changing" (plain, trusting nobody) and "gone". Step 1: "kept" as it was, "changing" on the same
    // address trusting loopback, "gone" removed, "secure" added as HTTPS.
    private static string Config(LabUpstream upstream, int changingPort, int step)
    {
        var changing = new JsonObject { ["Address"] = $"127.0.0.1:{changingPort}" };
        var listeners = new JsonObject
        {
            ["kept"] = new JsonObject { ["Address"] = "127.0.0.1:0" },
            ["changing"] = changing,
        };
        if (step == 0)
        {
            listeners["gone"] = new JsonObject { ["Address"] = "127.0.0.1:0" };
        }
        else
        {
            changing["TrustedProxies"] = new JsonArray("127.0.0.1/32");
            listeners["secure"] = new JsonObject
            {
                ["Address"] = "127.0.0.1:0",
                ["Certificate"] = new JsonObject
                {
                    ["Path"] = TestCertificates.Shared.ServerCertificateFile,
                    ["KeyPath"] = TestCertificates.Shared.ServerKeyFile,
                },
            };
        }
        return new JsonObject
        {
            ["Listeners"] = listeners,
            ["AccessLog"] = new JsonObject { ["Enabled"] = false },
            ["Admin"] = new JsonObject { ["Address"] = "127.0.0.1:0" },
            ["Routes"] = new JsonObject { ["all"] = new JsonObject { ["ClusterId"] = "c", ["Match"] = new JsonObject { ["PathPrefix"] = "/" } } },
            ["Clusters"] = new JsonObject
            {
                ["c"] = new JsonObject { ["Destinations"] = new JsonObject { ["echo"] = new JsonObject { ["Address"] = upstream.Uri.ToString() } } },
            },
        }.ToJsonString();
    }

    private static Uri Listener(FerryServer server, string name) => server.ListenerUri(name) ?? throw new InvalidOperationException($"no listener {name}");

    // One HTTP/1.1 request on a raw connection kept open between calls: whether the server kept that very connection.
    private sealed class KeptConnection : IDisposable
    {
        private readonly TcpClient _tcp = new();
        private readonly byte[] _buffer = new byte[4096];

        public static async Task<KeptConnection> OpenAsync(Uri uri)
        {
            var connection = new KeptConnection();
            await connection._tcp.ConnectAsync(uri.Host, uri.Port).WaitAsync(Bound);
            return connection;
        }

        // The response head and body, or null when the server had closed the connection.
        public async Task<string?> GetAsync(string target = "/")
        {
            var stream = _tcp.GetStream();
            await stream.WriteAsync(Encoding.ASCII.GetBytes($"GET {target} HTTP/1.1\r\nHost: test\r\n\r\n"));
            var response = new StringBuilder();
            while (true)
            {
                var read = await stream.ReadAsync(_buffer).AsTask().WaitAsync(Bound);
                if (read == 0)
                {
                    return response.Length == 0 ? null : response.ToString();
                }
                response.Append(Encoding.Latin1.GetString(_buffer, 0, read));
                var text = response.ToString();
                var end = text.IndexOf("\r\n\r\n", StringComparison.Ordinal);
                if (end >= 0 && ContentLength(text) is { } length && text.Length >= end + 4 + length)
                {
                    return text;
                }
            }
        }

        // Whether the server closes this idle connection within the bound.
        public async Task<bool> ClosedByServerAsync()
        {
            try
            {
                return await _tcp.GetStream().ReadAsync(_buffer).AsTask().WaitAsync(Bound) == 0;
            }
            catch (IOException)
            {
                return true;
            }
        }

        private static int? ContentLength(string head)
        {
            foreach (var line in head.Split("\r\n"))
            {
                if (line.StartsWith("Content-Length:", StringComparison.OrdinalIgnoreCase))
                {
                    return int.Parse(line["Content-Length:".Length..].Trim());
                }
            }
            return null;
        }

        public void Dispose() => _tcp.Dispose();
    }

    [Fact]
    public async Task ListenersChangedUnderLoad_KeptOnesKeepTheirConnections_NoRequestFails()
    {
        const int reloads = 6;
        await using var upstream = Upstream();
        var changingPort = Loopback.FreePort();
        var path = Path.Combine(_directory, "ferry.json");
        await File.WriteAllTextAsync(path, Config(upstream, changingPort, 0));
        await using var server = await ReloadableServer.StartAsync(path);
        var kept = Listener(server, "kept");
        var changing = new Uri($"http://127.0.0.1:{changingPort}/");

        using var keptConnection = await KeptConnection.OpenAsync(kept);
        Assert.NotNull(await keptConnection.GetAsync());
        using var changingConnection = await KeptConnection.OpenAsync(changing);
        Assert.NotNull(await changingConnection.GetAsync());
        using var goneConnection = await KeptConnection.OpenAsync(Listener(server, "gone"));
        Assert.NotNull(await goneConnection.GetAsync());

        // Steady GETs and POSTs on the kept listener and on the one that changes, through the reloads.
        var sent = 0;
        var failures = new List<string>();
        using var stop = new CancellationTokenSource();
        var load = Enumerable.Range(0, 4).Select(i => Task.Run(async () =>
        {
            using var client = new HttpClient(new SocketsHttpHandler { UseProxy = false }) { Timeout = Bound };
            var target = i % 2 == 0 ? kept : changing;
            while (!stop.IsCancellationRequested)
            {
                try
                {
                    using var response = i < 2
                        ? await client.GetAsync(target)
                        : await client.PostAsync(target, new ByteArrayContent(new byte[2048]));
                    await response.Content.ReadAsByteArrayAsync();
                    if (response.StatusCode != HttpStatusCode.OK)
                    {
                        lock (failures)
                        {
                            failures.Add($"{target}: {(int)response.StatusCode}");
                        }
                    }
                }
                catch (HttpRequestException ex)
                {
                    lock (failures)
                    {
                        failures.Add($"{target}: {ex.Message}");
                    }
                }
                Interlocked.Increment(ref sent);
            }
        })).ToArray();

        using var secure = new HttpClient(new SocketsHttpHandler
        {
            UseProxy = false,
            SslOptions = { RemoteCertificateValidationCallback = (_, _, _, _) => true },
        })
        { Timeout = Bound };
        for (var step = 1; step <= reloads; step++)
        {
            await Task.Delay(200);
            await File.WriteAllTextAsync(path, Config(upstream, changingPort, step % 2));
            var result = await server.Reloader.ReloadAsync("test").WaitAsync(Bound);
            Assert.True(result.Success, string.Join("\n", result.Errors));
            Assert.True(result.Changed);

            // The listener's new settings apply to new connections at once: with step 1's TrustedProxies the client's
            // own X-Forwarded-For is kept.
            using var forwarded = new HttpClient(new SocketsHttpHandler { UseProxy = false }) { Timeout = Bound };
            using var request = new HttpRequestMessage(HttpMethod.Get, changing) { Headers = { { "X-Forwarded-For", "203.0.113.9" } } };
            using var answer = await forwarded.SendAsync(request);
            var seen = await answer.Content.ReadAsStringAsync();
            Assert.Equal(step % 2 == 1 ? "203.0.113.9, 127.0.0.1" : "127.0.0.1", seen);
            if (step % 2 == 1)
            {
                // Added by this reload, over HTTPS, and answering as soon as the reload returned.
                var https = Listener(server, "secure");
                Assert.Equal("https", https.Scheme);
                Assert.Equal(HttpStatusCode.OK, (await secure.GetAsync(https)).StatusCode);
                Assert.Equal(3, server.ListenerUris.Count);
            }
        }
        await Task.Delay(200);
        await stop.CancelAsync();
        await Task.WhenAll(load).WaitAsync(Bound);

        output.WriteLine($"{sent} requests during {reloads} reloads; failures: {string.Join("; ", failures)}");
        Assert.Empty(failures);
        Assert.True(sent > 0);
        // The kept listener's connection from before the first reload still serves.
        Assert.NotNull(await keptConnection.GetAsync());
        // The changed listener's old connection was closed by its retirement (it was idle), the removed one's too.
        Assert.True(await changingConnection.ClosedByServerAsync(), "the changed listener's old connection stayed open");
        Assert.True(await goneConnection.ClosedByServerAsync(), "the removed listener's connection stayed open");
    }

    [Fact]
    public async Task RemovedListener_RefusesNewConnections_ItsOpenConnectionsFinishAndClose()
    {
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions
        {
            Name = "slow",
            Script = async (x, ct) =>
            {
                if (x.Target == "/slow")
                {
                    await release.Task.WaitAsync(ct);
                }
                await x.WriteResponseAsync(200, "done", null, ct);
            },
        });
        var path = Path.Combine(_directory, "ferry.json");
        await File.WriteAllTextAsync(path, Config(upstream, Loopback.FreePort(), 0));
        // A drain grace long enough for the idle client below to send its request within it on any machine.
        await using var server = await ReloadableServer.StartAsync(path, drainGrace: TimeSpan.FromSeconds(20));
        var gone = Listener(server, "gone");

        using var idle = await KeptConnection.OpenAsync(gone);
        Assert.NotNull(await idle.GetAsync());
        using var busy = await KeptConnection.OpenAsync(gone);
        var inFlight = busy.GetAsync("/slow");
        await Wait.Until(() => upstream.RequestsReceived == 2, Bound);

        await File.WriteAllTextAsync(path, Config(upstream, Loopback.FreePort(), 1));
        var result = await server.Reloader.ReloadAsync("test").WaitAsync(Bound);
        Assert.True(result.Success, string.Join("\n", result.Errors));

        // No longer accepting the moment the reload returned.
        using var refused = new TcpClient();
        await Assert.ThrowsAsync<SocketException>(() => refused.ConnectAsync(gone.Host, gone.Port).WaitAsync(Bound));
        // The request in flight finishes; a request sent on an open connection during the grace is served and told
        // to close.
        release.SetResult();
        Assert.StartsWith("HTTP/1.1 200", await inFlight.WaitAsync(Bound));
        var last = await idle.GetAsync();
        Assert.NotNull(last);
        Assert.StartsWith("HTTP/1.1 200", last);
        Assert.Contains("Connection: close", last, StringComparison.OrdinalIgnoreCase);
        Assert.True(await idle.ClosedByServerAsync());
    }

    [Fact]
    public async Task ListenerOnAnAddressInUse_FailsTheReload_NothingChanges()
    {
        await using var upstream = Upstream();
        using var taken = new TcpListener(IPAddress.Loopback, 0);
        taken.Start();
        var takenPort = ((IPEndPoint)taken.LocalEndpoint).Port;
        var changingPort = Loopback.FreePort();
        var path = Path.Combine(_directory, "ferry.json");
        await File.WriteAllTextAsync(path, Config(upstream, changingPort, 0));
        await using var server = await ReloadableServer.StartAsync(path);
        var before = server.State.Current;
        var listeners = server.ListenerUris;
        using var client = new HttpClient(new SocketsHttpHandler { UseProxy = false }) { Timeout = Bound };

        await File.WriteAllTextAsync(path, Config(upstream, takenPort, 1));
        var result = await server.Reloader.ReloadAsync("test").WaitAsync(Bound);

        Assert.False(result.Success);
        Assert.StartsWith("rebinding the listeners failed: Failed to bind to address 127.0.0.1:" + takenPort, Assert.Single(result.Errors));
        Assert.Same(before, server.State.Current);
        Assert.Equal(listeners, server.ListenerUris);
        foreach (var uri in listeners)
        {
            Assert.Equal(HttpStatusCode.OK, (await client.GetAsync(uri)).StatusCode);
        }
    }
}
