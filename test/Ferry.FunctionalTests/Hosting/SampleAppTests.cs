using System.Collections.Concurrent;
using System.Diagnostics;
using System.Reflection;
using System.Text.RegularExpressions;
using Ferry.Lab;

namespace Ferry.FunctionalTests.Hosting;

// samples/Ferry.Sample as a process: an ASP.NET Core app that calls AddFerry and MapFerry, its appsettings.json
// pointed at a Lab upstream by a command-line override, on a port its own Kestrel picks.
public sealed partial class SampleAppTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(60);

    [Fact]
    public async Task Sample_ForwardsToItsCluster_AndServesItsOwnEndpoint()
    {
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions { Name = "lab" });
        var directory = typeof(SampleAppTests).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>()
            .Single(a => a.Key == "FerrySampleDirectory").Value!;
        var info = new ProcessStartInfo("dotnet")
        {
            WorkingDirectory = directory,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        info.ArgumentList.Add(Path.Combine(directory, "Ferry.Sample.dll"));
        info.ArgumentList.Add("--urls=http://127.0.0.1:0");
        info.ArgumentList.Add($"--Ferry:Clusters:backend:Destinations:one:Address={upstream.Uri}");
        // The test run's own settings must not reach the app.
        foreach (var name in info.Environment.Keys.Where(k => k.StartsWith("ASPNETCORE_", StringComparison.Ordinal) || k.StartsWith("DOTNET_URLS", StringComparison.Ordinal)).ToList())
        {
            info.Environment.Remove(name);
        }
        var lines = new ConcurrentQueue<string>();
        using var process = new Process { StartInfo = info };
        process.OutputDataReceived += (_, e) => { if (e.Data is not null) lines.Enqueue(e.Data); };
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lines.Enqueue("stderr: " + e.Data); };
        Assert.True(process.Start());
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        try
        {
            var address = await ListeningAddressAsync(process, lines);
            using var client = new HttpClient { BaseAddress = address, Timeout = Bound };

            Assert.Equal("hello from lab\n", await client.GetStringAsync("/"));
            Assert.Equal("abcdefghijklmnopqrstuvwxyz", await client.GetStringAsync("/bytes/26"));
            Assert.Equal("hello from the app\n", await client.GetStringAsync("/app/hello"));
        }
        finally
        {
            if (!process.HasExited)
            {
                process.Kill(entireProcessTree: true);
                await process.WaitForExitAsync();
            }
        }
    }

    // ASP.NET Core's "Now listening on: http://127.0.0.1:<port>" line, within the bound.
    private static async Task<Uri> ListeningAddressAsync(Process process, ConcurrentQueue<string> lines)
    {
        var deadline = DateTime.UtcNow + Bound;
        while (true)
        {
            if (lines.Select(l => Listening().Match(l)).FirstOrDefault(m => m.Success) is { } match)
            {
                return new Uri(match.Groups[1].Value);
            }
            Assert.False(process.HasExited, $"the sample exited ({(process.HasExited ? process.ExitCode : 0)}):\n{string.Join("\n", lines)}");
            Assert.True(DateTime.UtcNow < deadline, $"the sample did not start listening within {Bound.TotalSeconds:0} s:\n{string.Join("\n", lines)}");
            await Task.Delay(20);
        }
    }

    [GeneratedRegex(@"Now listening on: (http://127\.0\.0\.1:\d+)")]
    private static partial Regex Listening();
}
