using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using Ferry.FunctionalTests.Support;
using Ferry.Lab;
using Xunit.Abstractions;

namespace Ferry.FunctionalTests.Restart;

// `ferry run` processes taking the listeners over from each other (docs/operations.md), under client load.
// Run alone: the load loops and three .NET processes would otherwise compete with every other test for two cores.
[Collection(TimingSensitive.Name)]
public sealed class RestartTests(ITestOutputHelper output) : IAsyncLifetime, IDisposable
{
    private static readonly TimeSpan StartBound = TimeSpan.FromSeconds(60);
    private static readonly TimeSpan ExitBound = TimeSpan.FromSeconds(60);

    private readonly string _directory = Directory.CreateTempSubdirectory("ferry-restart-").FullName;
    private LabUpstream _upstream = null!;

    public Task InitializeAsync()
    {
        _upstream = LabUpstream.Start(new LabUpstreamOptions { Name = "u" });
        return Task.CompletedTask;
    }

    public async Task DisposeAsync() => await _upstream.DisposeAsync();

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    private (string Config, IPEndPoint Listener, IPEndPoint Admin, string ControlSocket) WriteConfig(string drainGrace = "2s")
    {
        var listener = new IPEndPoint(IPAddress.Loopback, Loopback.FreePort());
        var admin = new IPEndPoint(IPAddress.Loopback, Loopback.FreePort());
        var control = Path.Combine(_directory, "ferry.sock");
        var config = new
        {
            Listeners = new { main = new { Address = listener.ToString() } },
            Admin = new { Address = admin.ToString() },
            Restart = new { ControlSocket = control, ShutdownTimeout = "20s", DrainGrace = drainGrace },
            AccessLog = new { Enabled = false },
            Routes = new { all = new { ClusterId = "c", Match = new { PathPrefix = "/" } } },
            Clusters = new { c = new { Destinations = new Dictionary<string, object> { ["1"] = new { Address = _upstream.Uri.ToString() } } } },
        };
        var path = Path.Combine(_directory, "ferry.json");
        File.WriteAllText(path, JsonSerializer.Serialize(config));
        return (path, listener, admin, control);
    }

    [Fact]
    public async Task ProcessesTakingOverInTurnUnderLoad_NoClientSeesARefusalOrAReset()
    {
        var (config, listener, _, _) = WriteConfig();
        await using var first = FerryProcess.Start("run", "--config", config);
        await first.WaitForOutputAsync("ferry: control socket", StartBound);

        var load = new LoadClients(listener);
        using var stop = new CancellationTokenSource();
        var loops = load.RunAsync(newConnectionLoops: 6, keepAliveLoops: 4, stop.Token);
        try
        {
            await Wait.Until(() => load.Answered > 200, StartBound);

            // First → second: the second takes the sockets over while the first still serves.
            await using var second = FerryProcess.Start("run", "--config", config, "--takeover");
            await second.WaitForOutputAsync("ferry: control socket", StartBound);
            Assert.Contains($"took over the listeners of process {first.Pid}", second.Output);
            Assert.Equal(0, await first.WaitForExitAsync(ExitBound));
            Assert.Contains($"process {second.Pid} took over the listeners", first.Output);
            var afterFirst = load.Answered;
            await Wait.Until(() => load.Answered > afterFirst + 200, StartBound);

            // Second → third: the second bound the control socket again for exactly this.
            await using var third = FerryProcess.Start("run", "--config", config, "--takeover");
            await third.WaitForOutputAsync("ferry: control socket", StartBound);
            Assert.Equal(0, await second.WaitForExitAsync(ExitBound));
            var afterSecond = load.Answered;
            await Wait.Until(() => load.Answered > afterSecond + 200, StartBound);

            await stop.CancelAsync();
            await loops.WaitAsync(TimeSpan.FromSeconds(60));
            output.WriteLine(load.Summary());
            output.WriteLine($"first:\n{first.Output}\nsecond:\n{second.Output}");

            Assert.True(load.Refused == 0 && load.Reset == 0 && load.ClosedEarly == 0 && load.OtherFailures == 0, load.Summary());
            // The keep-alive clients left the old processes on "Connection: close", not on a closed connection.
            Assert.True(load.KeepAliveEndedByServer >= 4, load.Summary());

            third.Signal(FerryProcess.SigTerm);
            Assert.Equal(0, await third.WaitForExitAsync(ExitBound));
            Assert.Contains("ferry: stopped", third.Output);
        }
        finally
        {
            await stop.CancelAsync();
            await loops.WaitAsync(TimeSpan.FromSeconds(60));
        }
    }

    [Fact]
    public async Task ATakeoverThatFailsToStart_LeavesTheRunningProcessServing()
    {
        var (config, listener, _, control) = WriteConfig();
        await using var first = FerryProcess.Start("run", "--config", config);
        await first.WaitForOutputAsync("ferry: control socket", StartBound);

        // The successor's configuration adds a listener on an address that is taken: it fails after receiving the
        // sockets and before serving, and must leave the first process as it was.
        using var taken = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        taken.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        taken.Listen();
        await using (var failing = FerryProcess.Start("run", "--config", config, "--takeover", $"--Listeners:extra:Address={taken.LocalEndPoint}"))
        {
            Assert.Equal(2, await failing.WaitForExitAsync(ExitBound));
            Assert.True(failing.Output.Contains("cannot listen", StringComparison.Ordinal), failing.Output);
        }

        await Wait.Until(() => first.Output.Contains("handover abandoned", StringComparison.Ordinal), StartBound);
        Assert.False(first.HasExited);
        using var client = new HttpClient();
        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync($"http://{listener}/")).StatusCode);
        Assert.True(File.Exists(control));

        // And it can still be taken over.
        await using var second = FerryProcess.Start("run", "--config", config, "--takeover");
        await second.WaitForOutputAsync("ferry: control socket", StartBound);
        Assert.Equal(0, await first.WaitForExitAsync(ExitBound));
    }

    [SocketActivateFact]
    public async Task UnderSocketActivation_TheListenerIsSystemdsSocket_AndAConnectionMadeBeforeFerryRanIsServed()
    {
        var (config, listener, _, _) = WriteConfig();
        await using var activated = FerryProcess.StartSocketActivated(listener.ToString(), "run", "--config", config);
        await activated.WaitForOutputAsync("Listening on", StartBound);

        // Ferry is started by this very connection, and finds it queued on the socket it was given.
        using var client = new HttpClient { Timeout = TimeSpan.FromSeconds(60) };
        var response = await client.GetAsync($"http://{listener}/");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        await activated.WaitForOutputAsync("ferry: proxying on", StartBound);
        Assert.DoesNotContain("cannot listen", activated.Output);

        activated.Signal(FerryProcess.SigTerm);
        Assert.Equal(0, await activated.WaitForExitAsync(ExitBound));
    }

    [Theory]
    [InlineData(FerryProcess.SigTerm)]
    [InlineData(FerryProcess.SigInt)]
    public async Task AStopSignal_DrainsTheRequestInFlight_AndHealthzSaysDraining(int signal)
    {
        var (config, listener, admin, _) = WriteConfig(drainGrace: "0s");
        await using var ferry = FerryProcess.Start("run", "--config", config);
        await ferry.WaitForOutputAsync("ferry: control socket", StartBound);
        using var client = new HttpClient { Timeout = TimeSpan.FromSeconds(60) };
        Assert.Equal("ok\n", await client.GetStringAsync($"http://{admin}/healthz"));

        // Longer than System.CommandLine's two seconds, which used to end the process in the middle of its drain.
        var slow = client.GetAsync($"http://{listener}/delay/4000");
        await Wait.Until(() => _upstream.RequestsReceived > 0, StartBound);
        ferry.Signal(signal);
        await ferry.WaitForOutputAsync("draining requests in flight", StartBound);

        var health = await client.GetAsync($"http://{admin}/healthz");
        Assert.Equal(HttpStatusCode.ServiceUnavailable, health.StatusCode);
        Assert.Equal("draining\n", await health.Content.ReadAsStringAsync());

        var response = await slow;
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(0, await ferry.WaitForExitAsync(ExitBound));
        Assert.Contains("ferry: stopped", ferry.Output);
    }
}
