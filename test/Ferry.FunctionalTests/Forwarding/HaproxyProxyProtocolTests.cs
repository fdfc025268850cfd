using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Ferry.FunctionalTests.Support;
using Ferry.Lab;

namespace Ferry.FunctionalTests.Forwarding;

// A test that needs HAProxy; skipped, saying why, where it is not installed.
internal sealed class HaproxyTheoryAttribute : TheoryAttribute
{
    public const string Path = "/usr/sbin/haproxy";

    public HaproxyTheoryAttribute()
    {
        if (!File.Exists(Path))
        {
            Skip = "haproxy is not installed (apt-get install haproxy)";
        }
    }
}

// Real HAProxy in TCP mode in front of a ProxyProtocol listener, sending the header as its send-proxy options do.
public sealed class HaproxyProxyProtocolTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);

    [HaproxyTheory]
    [InlineData("send-proxy")]
    [InlineData("send-proxy-v2")]
    public async Task ClientAddressBehindHaproxy_IsTheOneHaproxySaw(string option)
    {
        await using var upstream = LabUpstream.Start(new LabUpstreamOptions { Name = "a" });
        var settings = ProxyHarness.Settings(("a", upstream.Uri));
        settings["Listeners:main:ProxyProtocol"] = "true";
        settings["Listeners:main:TrustedProxies"] = "127.0.0.1";
        await using var proxy = await ProxyHarness.StartAsync(settings, null, upstream);
        var port = Loopback.FreePort();
        var directory = Directory.CreateTempSubdirectory("ferry-haproxy-").FullName;
        var config = System.IO.Path.Combine(directory, "haproxy.cfg");
        await File.WriteAllTextAsync(config, $"""
            defaults
              mode tcp
              timeout connect 5s
              timeout client 30s
              timeout server 30s
            frontend f
              bind 127.0.0.1:{port}
              default_backend b
            backend b
              server s 127.0.0.1:{proxy.ProxyUri.Port} {option}

            """);
        var start = new ProcessStartInfo(HaproxyTheoryAttribute.Path) { RedirectStandardError = true, RedirectStandardOutput = true };
        foreach (var arg in new[] { "-db", "-f", config })
        {
            start.ArgumentList.Add(arg);
        }
        using var haproxy = Process.Start(start)!;
        var output = new System.Collections.Concurrent.ConcurrentQueue<string>();
        haproxy.OutputDataReceived += (_, e) => output.Enqueue(e.Data ?? "");
        haproxy.ErrorDataReceived += (_, e) => output.Enqueue(e.Data ?? "");
        haproxy.BeginOutputReadLine();
        haproxy.BeginErrorReadLine();
        try
        {
            // The client connects from 127.0.0.2, so the address HAProxy reports differs from HAProxy's own.
            var text = await RequestFromAsync(IPAddress.Parse("127.0.0.2"), port,
                "GET /headers HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Forwarded-For: 203.0.113.66\r\n\r\n",
                () => haproxy.HasExited ? "haproxy exited: " + string.Join("\n", output) : null);

            Assert.StartsWith("HTTP/1.1 200", text);
            Assert.Contains("X-Forwarded-For: 127.0.0.2\r\n", text);
            Assert.DoesNotContain("203.0.113.66", text);
        }
        finally
        {
            haproxy.Kill();
            await haproxy.WaitForExitAsync().WaitAsync(Bound);
            Directory.Delete(directory, recursive: true);
        }
    }

    // HAProxy needs a moment to bind: connects are retried for a bounded time.
    private static async Task<string> RequestFromAsync(IPAddress source, int port, string request, Func<string?> failure)
    {
        var deadline = DateTime.UtcNow + Bound;
        while (true)
        {
            using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            socket.Bind(new IPEndPoint(source, 0));
            try
            {
                await socket.ConnectAsync(IPAddress.Loopback, port).WaitAsync(Bound);
            }
            catch (SocketException) when (DateTime.UtcNow < deadline)
            {
                if (failure() is { } why)
                {
                    Assert.Fail(why);
                }
                await Task.Delay(50);
                continue;
            }
            return await RawRequest.SendAsync(socket, request);
        }
    }
}
