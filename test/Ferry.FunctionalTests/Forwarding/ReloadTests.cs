using System.Collections;
using System.Net;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Ferry.Configuration;
using Ferry.FunctionalTests.Support;
using Ferry.Hosting;
using Ferry.Lab;
using Microsoft.Extensions.Logging;

namespace Ferry.FunctionalTests.Forwarding;

// Configuration reload under load: files swapped in through POST /reload, the file watcher and a rename, with the
// running configuration kept when a file is invalid (docs/configuration.md, "Reload").
public sealed class ReloadTests : IDisposable
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);
    private const string Token = "reload-secret";
    private const int Loops = 4;

    private readonly string _directory = Directory.CreateTempSubdirectory("ferry-reload-").FullName;

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    // Answers with its name and the headers the route rules set, after reading the whole body.
    private static LabUpstream Upstream(string name) => LabUpstream.Start(new LabUpstreamOptions
    {
        Name = name,
        Script = async (x, ct) =>
        {
            await x.DrainBodyAsync(ct);
            await x.WriteResponseAsync(200, $"{name}|{x.Header("X-Step")}|{x.Header("X-Route")}|{x.Header("X-Env")}", null, ct);
        },
    });

    private sealed record Upstreams(LabUpstream A, LabUpstream B, LabUpstream X, LabUpstream Y1, LabUpstream Y2, LabUpstream E) : IAsyncDisposable
    {
        public async ValueTask DisposeAsync()
        {
            foreach (var u in new[] { A, B, X, Y1, Y2, E })
            {
                await u.DisposeAsync();
            }
        }
    }

    // Step n: weights of a and b move, x is there on odd steps, y changes address every two steps, cluster "extra" and
    // its route exist on odd steps, route "r<n>" is new, and the header rule of the catch-all route says n.
    private static string Config(Upstreams u, int step)
    {
        var destinations = new JsonObject
        {
            ["a"] = new JsonObject { ["Address"] = u.A.Uri.ToString(), ["Weight"] = 1 + step % 3 },
            ["b"] = new JsonObject { ["Address"] = u.B.Uri.ToString(), ["Weight"] = 1 + (step + 1) % 3 },
            ["y"] = new JsonObject { ["Address"] = (step / 2 % 2 == 0 ? u.Y1 : u.Y2).Uri.ToString() },
        };
        if (step % 2 == 1)
        {
            destinations["x"] = new JsonObject { ["Address"] = u.X.Uri.ToString() };
        }
        var routes = new JsonObject
        {
            ["all"] = new JsonObject
            {
                ["ClusterId"] = "c",
                ["Match"] = new JsonObject { ["PathPrefix"] = "/" },
                ["Transforms"] = new JsonArray(new JsonObject { ["RequestHeader"] = "X-Step", ["Set"] = step.ToString() }),
            },
            [$"r{step}"] = new JsonObject
            {
                ["ClusterId"] = "c",
                ["Match"] = new JsonObject { ["PathPrefix"] = $"/r{step}/" },
                ["Transforms"] = new JsonArray(new JsonObject { ["RequestHeader"] = "X-Route", ["Set"] = $"r{step}" }),
            },
        };
        var clusters = new JsonObject { ["c"] = new JsonObject { ["Destinations"] = destinations } };
        if (step % 2 == 1)
        {
            routes["extra"] = new JsonObject { ["ClusterId"] = "extra", ["Match"] = new JsonObject { ["PathPrefix"] = "/extra/" } };
            clusters["extra"] = new JsonObject { ["Destinations"] = new JsonObject { ["e"] = new JsonObject { ["Address"] = u.E.Uri.ToString() } } };
        }
        return new JsonObject
        {
            ["Listeners"] = new JsonObject { ["main"] = new JsonObject { ["Address"] = "127.0.0.1:0" } },
            ["Admin"] = new JsonObject { ["Address"] = "127.0.0.1:0", ["Token"] = Token },
            ["ProxyStatus"] = new JsonObject { ["IncludeDetails"] = true },
            ["AccessLog"] = new JsonObject { ["Enabled"] = false },
            ["Routes"] = routes,
            ["Clusters"] = clusters,
        }.ToJsonString();
    }

    private async Task<FerryServer> StartAsync(string path, IDictionary? environment = null, bool watch = false)
    {
        var source = new ConfigSource(path, [], environment ?? new Hashtable());
        var configuration = source.Build();
        var loaded = FerryConfigLoader.Load(configuration);
        Assert.True(loaded.IsValid, string.Join("\n", loaded.Errors));
        return await FerryServer.StartAsync(loaded.Config!, new FerryServerOptions
        {
            ConfigureLogging = l => l.SetMinimumLevel(LogLevel.Warning),
            ShutdownTimeout = TimeSpan.FromSeconds(2),
            Configuration = configuration,
            Source = source,
            WatchFile = watch,
            Admin = Ferry.Admin.AdminEndpoints.Handler,
        }).WaitAsync(Bound);
    }

    private static HttpClient Admin(FerryServer server)
    {
        var admin = new HttpClient { BaseAddress = server.AdminUri, Timeout = Bound };
        admin.DefaultRequestHeaders.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", Token);
        return admin;
    }

    private static async Task<(HttpStatusCode Status, JsonElement Body)> ReloadAsync(HttpClient admin)
    {
        using var response = await admin.PostAsync("/reload", null);
        using var json = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        return (response.StatusCode, json.RootElement.Clone());
    }

    private static async Task<JsonElement> StatusAsync(HttpClient admin)
    {
        using var json = JsonDocument.Parse(await admin.GetStringAsync("/status"));
        return json.RootElement.Clone();
    }

    [Fact]
    public async Task TwentyReloadsUnderLoad_NoRequestFails_UnchangedDestinationsKeepTheirConnections()
    {
        await using var u = new Upstreams(Upstream("a"), Upstream("b"), Upstream("x"), Upstream("y1"), Upstream("y2"), Upstream("e"));
        var path = Path.Combine(_directory, "ferry.json");
        await File.WriteAllTextAsync(path, Config(u, 0));
        await using var server = await StartAsync(path);
        using var admin = Admin(server);
        var proxyUri = server.ListenerUris[0];

        // Client loops, each one request at a time: GETs and POSTs with a body, through every reload.
        using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(120));
        var failures = new System.Collections.Concurrent.ConcurrentQueue<string>();
        var completed = 0;
        var loops = Enumerable.Range(0, Loops).Select(i => Task.Run(async () =>
        {
            using var client = new HttpClient(new SocketsHttpHandler { UseProxy = false }) { BaseAddress = proxyUri, Timeout = Bound };
            var body = new string('p', 2000);
            // Bounded in count as well as by `stop`.
            for (var n = 0; n < 200_000 && !stop.IsCancellationRequested; n++)
            {
                try
                {
                    using var response = i % 2 == 0
                        ? await client.GetAsync(n % 3 == 0 ? "/extra/x" : "/get")
                        : await client.PostAsync("/post", new StringContent(body, Encoding.UTF8));
                    var text = await response.Content.ReadAsStringAsync();
                    if (response.StatusCode != HttpStatusCode.OK)
                    {
                        failures.Enqueue($"{(int)response.StatusCode} {string.Join(",", response.Headers.Select(h => $"{h.Key}={string.Join(";", h.Value)}"))}");
                    }
                    Interlocked.Increment(ref completed);
                }
                catch (Exception ex)
                {
                    failures.Enqueue(ex.GetType().Name + ": " + ex.Message);
                }
            }
        })).ToArray();

        await Wait.Until(() => Volatile.Read(ref completed) >= 200, Bound);
        var a = server.State.Current.Clusters["c"].Destinations.Single(d => d.Id == "a");
        var b = server.State.Current.Clusters["c"].Destinations.Single(d => d.Id == "b");
        var version0 = (await StatusAsync(admin)).GetProperty("config").GetProperty("version").GetString();
        Assert.NotNull(version0);

        var successes = 0;
        var invalid = 0;
        for (var step = 1; step <= 20; step++)
        {
            if (step is 7 or 14)
            {
                // Invalid files: nothing changes, and the answer and /status say why.
                var before = server.State.Current;
                var versionBefore = server.Reloader.Loaded.Version;
                await File.WriteAllTextAsync(path, step == 7 ? "{ \"Routes\": { \"all\": " : Config(u, step).Replace("\"ClusterId\":\"c\"", "\"ClusterId\":\"nope\""));
                var (failedStatus, failed) = await ReloadAsync(admin);
                invalid++;
                Assert.Equal(HttpStatusCode.UnprocessableEntity, failedStatus);
                Assert.Equal("failure", failed.GetProperty("result").GetString());
                Assert.NotEmpty(failed.GetProperty("errors").EnumerateArray());
                if (step == 14)
                {
                    Assert.Contains(failed.GetProperty("errors").EnumerateArray(), e => e.GetString()!.StartsWith("Routes:all:ClusterId", StringComparison.Ordinal));
                }
                Assert.Same(before, server.State.Current);
                var status = await StatusAsync(admin);
                Assert.Equal(versionBefore, status.GetProperty("config").GetProperty("version").GetString());
                Assert.Equal("failure", status.GetProperty("lastReload").GetProperty("result").GetString());
                Assert.Equal(path, status.GetProperty("lastReload").GetProperty("source").GetString());
                Assert.Equal(versionBefore, status.GetProperty("lastReload").GetProperty("runningVersion").GetString());
            }

            await File.WriteAllTextAsync(path, Config(u, step));
            var (okStatus, ok) = await ReloadAsync(admin);
            Assert.True(okStatus == HttpStatusCode.OK, ok.ToString());
            Assert.True(ok.GetProperty("changed").GetBoolean());
            successes++;

            // The route added by this reload answers at once, with its own header rule.
            using var check = new HttpClient(new SocketsHttpHandler { UseProxy = false }) { BaseAddress = proxyUri, Timeout = Bound };
            Assert.EndsWith($"||r{step}|", await check.GetStringAsync($"/r{step}/now"));
            if (step > 1)
            {
                // The previous reload's route is gone: the catch-all answers, with this reload's header rule.
                Assert.EndsWith($"|{step}||", await check.GetStringAsync($"/r{step - 1}/now"));
            }
            await Task.Delay(300);
        }
        stop.Cancel();
        await Task.WhenAll(loops).WaitAsync(Bound);

        Assert.True(failures.IsEmpty, $"{failures.Count} of {completed} requests failed: {string.Join(" | ", failures.Take(5))}");
        Assert.True(completed > 1000, $"only {completed} requests ran under the reloads");
        var final = server.State.Current.Clusters["c"];
        // Unchanged destinations (only their weights moved) kept their live state: the same objects, and the
        // upstreams never saw more connections than there can be concurrent requests (the loops and the route
        // checks), all of them from that one pool. A pool started afresh by any of the 20 reloads would reconnect.
        Assert.Same(a, final.Destinations.Single(d => d.Id == "a"));
        Assert.Same(b, final.Destinations.Single(d => d.Id == "b"));
        Assert.InRange(u.A.ConnectionsAccepted, 1, Loops + 1);
        Assert.InRange(u.B.ConnectionsAccepted, 1, Loops + 1);
        Assert.Equal(u.A.ConnectionsAccepted, a.Pool.Opened);
        Assert.Equal(u.B.ConnectionsAccepted, b.Pool.Opened);
        Assert.Equal(3, final.Destinations[0].Config.Weight); // step 20: 1 + 20 % 3

        // x and the cluster "extra" are gone in step 20: once drained, their pools closed every connection.
        Assert.False(server.State.Current.Clusters.ContainsKey("extra"));
        await Wait.Until(() => server.Reloader.Draining == 0 && u.X.OpenConnections == 0 && u.E.OpenConnections == 0, Bound);

        var metrics = await admin.GetStringAsync("/metrics");
        Assert.Contains($"ferry_config_reloads_total{{result=\"success\"}} {successes}", metrics);
        Assert.Contains($"ferry_config_reloads_total{{result=\"failure\"}} {invalid}", metrics);
        var last = await StatusAsync(admin);
        Assert.NotEqual(version0, last.GetProperty("config").GetProperty("version").GetString());
        Assert.Equal("success", last.GetProperty("lastReload").GetProperty("result").GetString());
    }

    [Fact]
    public async Task FileWatcher_ReloadsOnWriteAndOnRenameIntoPlace_EnvironmentOverridesStillApply()
    {
        await using var u = new Upstreams(Upstream("a"), Upstream("b"), Upstream("x"), Upstream("y1"), Upstream("y2"), Upstream("e"));
        var path = Path.Combine(_directory, "ferry.json");
        await File.WriteAllTextAsync(path, Config(u, 0));
        var environment = new Hashtable
        {
            ["FERRY__Routes__all__Transforms__1__RequestHeader"] = "X-Env",
            ["FERRY__Routes__all__Transforms__1__Set"] = "from-env",
        };
        await using var server = await StartAsync(path, environment, watch: true);
        using var client = new HttpClient(new SocketsHttpHandler { UseProxy = false }) { BaseAddress = server.ListenerUris[0], Timeout = Bound };
        Assert.EndsWith("|0||from-env", await client.GetStringAsync("/"));

        // Written in place.
        await File.WriteAllTextAsync(path, Config(u, 1));
        await Wait.Until(() => server.Reloader.LastReload is { Success: true, Changed: true }, Bound);
        Assert.EndsWith("|1||from-env", await client.GetStringAsync("/"));
        Assert.Equal("file", server.Reloader.LastReload!.Trigger);

        // Written elsewhere and renamed over the file, as deployment tools replace a file atomically.
        var version1 = server.Reloader.Loaded.Version;
        var temporary = Path.Combine(_directory, "ferry.json.tmp");
        await File.WriteAllTextAsync(temporary, Config(u, 2));
        File.Move(temporary, path, overwrite: true);
        await Wait.Until(() => server.Reloader.Loaded.Version != version1, Bound);
        Assert.EndsWith("|2||from-env", await client.GetStringAsync("/"));
    }

    [Fact]
    public async Task RestartOnlyChange_IsRefused_TheRunningConfigurationStays()
    {
        await using var u = new Upstreams(Upstream("a"), Upstream("b"), Upstream("x"), Upstream("y1"), Upstream("y2"), Upstream("e"));
        var path = Path.Combine(_directory, "ferry.json");
        await File.WriteAllTextAsync(path, Config(u, 0));
        await using var server = await StartAsync(path);
        using var admin = Admin(server);
        var before = server.State.Current;

        await File.WriteAllTextAsync(path, Config(u, 1).Replace($"\"Token\":\"{Token}\"", "\"Token\":\"another\""));
        var (status, result) = await ReloadAsync(admin);

        Assert.Equal(HttpStatusCode.UnprocessableEntity, status);
        var error = Assert.Single(result.GetProperty("errors").EnumerateArray()).GetString();
        Assert.StartsWith("Admin:Token: changed; Admin changes need a restart", error);
        Assert.Same(before, server.State.Current);
    }

    [Fact]
    public async Task Reload_NeedsTheAdminTokenAndPost()
    {
        await using var u = new Upstreams(Upstream("a"), Upstream("b"), Upstream("x"), Upstream("y1"), Upstream("y2"), Upstream("e"));
        var path = Path.Combine(_directory, "ferry.json");
        await File.WriteAllTextAsync(path, Config(u, 0));
        await using var server = await StartAsync(path);
        using var anonymous = new HttpClient { BaseAddress = server.AdminUri, Timeout = Bound };
        using var admin = Admin(server);

        Assert.Equal(HttpStatusCode.Unauthorized, (await anonymous.PostAsync("/reload", null)).StatusCode);
        Assert.Equal(HttpStatusCode.MethodNotAllowed, (await admin.GetAsync("/reload")).StatusCode);
        using var crossSite = new HttpRequestMessage(HttpMethod.Post, "/reload") { Headers = { { "Origin", "http://attacker.example" } } };
        Assert.Equal(HttpStatusCode.Forbidden, (await admin.SendAsync(crossSite)).StatusCode);
        Assert.Null(server.Reloader.LastReload);

        var (status, result) = await ReloadAsync(admin);
        Assert.Equal(HttpStatusCode.OK, status);
        Assert.False(result.GetProperty("changed").GetBoolean()); // the same file: nothing to swap
    }
}
