using System.Diagnostics;
using System.Net.WebSockets;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Ferry.FunctionalTests.Observability;

// A test that needs headless Chromium; skipped, saying why, where it is not installed (.ci/run installs it).
internal sealed class ChromiumFactAttribute : FactAttribute
{
    public ChromiumFactAttribute()
    {
        if (Chromium.ExecutablePath is null)
        {
            Skip = "chromium is not installed (apt-get install chromium; .ci/run does it)";
        }
    }
}

// Headless Chromium driven over the Chrome DevTools Protocol (https://chromedevtools.github.io/devtools-protocol/):
// one page, commands sent as JSON over its WebSocket, replies matched by id, events ignored.
internal sealed class Chromium : IAsyncDisposable
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);
    private readonly Process _process;
    private readonly string _profile;
    private readonly ClientWebSocket _socket;
    private int _nextId;

    private Chromium(Process process, string profile, ClientWebSocket socket)
    {
        _process = process;
        _profile = profile;
        _socket = socket;
    }

    public static string? ExecutablePath { get; } =
        new[] { "/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome" }.FirstOrDefault(File.Exists);

    public static async Task<Chromium> StartAsync()
    {
        var profile = Directory.CreateTempSubdirectory("ferry-chromium-").FullName;
        var start = new ProcessStartInfo(ExecutablePath!)
        {
            RedirectStandardError = true,
            RedirectStandardOutput = true,
        };
        foreach (var arg in new[]
        {
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--hide-scrollbars",
            $"--user-data-dir={profile}", "--remote-debugging-port=0", "--window-size=1280,900", "about:blank",
        })
        {
            start.ArgumentList.Add(arg);
        }
        var process = Process.Start(start)!;
        process.OutputDataReceived += (_, _) => { };
        process.ErrorDataReceived += (_, _) => { };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        try
        {
            // Chromium writes the port it bound, then the browser target's path, once it listens.
            var portFile = Path.Combine(profile, "DevToolsActivePort");
            var deadline = DateTime.UtcNow + Bound;
            string[] lines;
            while (!File.Exists(portFile) || (lines = File.ReadAllLines(portFile)).Length < 2)
            {
                if (DateTime.UtcNow > deadline || process.HasExited)
                {
                    throw new TimeoutException($"chromium did not report its DevTools port (exited: {process.HasExited})");
                }
                await Task.Delay(50);
            }
            using var http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{lines[0].Trim()}"), Timeout = Bound };
            var targets = JsonNode.Parse(await http.GetStringAsync("/json/list"))!.AsArray();
            var page = targets.First(t => (string?)t!["type"] == "page")!;
            var socket = new ClientWebSocket();
            await socket.ConnectAsync(new Uri((string)page["webSocketDebuggerUrl"]!), CancellationToken.None).WaitAsync(Bound);
            return new Chromium(process, profile, socket);
        }
        catch
        {
            process.Kill(entireProcessTree: true);
            throw;
        }
    }

    public async Task<JsonNode?> SendAsync(string method, object? parameters = null)
    {
        var id = ++_nextId;
        var message = JsonSerializer.SerializeToUtf8Bytes(new { id, method, @params = parameters ?? new { } });
        await _socket.SendAsync(message, WebSocketMessageType.Text, true, CancellationToken.None).WaitAsync(Bound);
        var buffer = new byte[64 * 1024];
        while (true)
        {
            using var text = new MemoryStream();
            WebSocketReceiveResult result;
            do
            {
                result = await _socket.ReceiveAsync(buffer, CancellationToken.None).WaitAsync(Bound);
                text.Write(buffer, 0, result.Count);
            }
            while (!result.EndOfMessage);
            var reply = JsonNode.Parse(text.ToArray())!;
            if ((int?)reply["id"] != id)
            {
                continue;
            }
            if (reply["error"] is { } error)
            {
                throw new InvalidOperationException($"{method}: {error.ToJsonString()}");
            }
            return reply["result"];
        }
    }

    public Task NavigateAsync(string url) => SendAsync("Page.navigate", new { url });

    // Evaluates a JavaScript expression in the page and returns its value as JSON.
    public async Task<JsonNode?> EvaluateAsync(string expression)
    {
        var result = await SendAsync("Runtime.evaluate", new { expression, returnByValue = true });
        if (result?["exceptionDetails"] is { } exception)
        {
            throw new InvalidOperationException($"{expression}: {exception.ToJsonString()}");
        }
        return result?["result"]?["value"];
    }

    // Polls until the expression is true; the page refreshes itself every two seconds.
    public async Task WaitForAsync(string expression, string what)
    {
        var deadline = DateTime.UtcNow + Bound;
        while ((bool?)await EvaluateAsync($"!!({expression})") != true)
        {
            Assert.True(DateTime.UtcNow < deadline, $"timed out waiting for {what}: {expression}");
            await Task.Delay(100);
        }
    }

    public async Task<byte[]> ScreenshotAsync()
    {
        var result = await SendAsync("Page.captureScreenshot", new { format = "png", captureBeyondViewport = true });
        return Convert.FromBase64String((string)result!["data"]!);
    }

    public async ValueTask DisposeAsync()
    {
        _socket.Dispose();
        if (!_process.HasExited)
        {
            _process.Kill(entireProcessTree: true);
            await _process.WaitForExitAsync().WaitAsync(Bound);
        }
        _process.Dispose();
        try
        {
            Directory.Delete(_profile, recursive: true);
        }
        catch (IOException)
        {
            // Chromium's helpers may still be releasing files; the temp directory is left for the system to clean.
        }
    }
}
