using System.Collections.Concurrent;
using System.Diagnostics;
using System.Runtime.InteropServices;
using Ferry.FunctionalTests.Support;

namespace Ferry.FunctionalTests.Restart;

// A test that runs Ferry under systemd-socket-activate; skipped, saying why, where systemd's tools are not installed.
internal sealed class SocketActivateFactAttribute : FactAttribute
{
    public SocketActivateFactAttribute()
    {
        if (!File.Exists(FerryProcess.SocketActivate))
        {
            Skip = $"{FerryProcess.SocketActivate} is not installed (package systemd)";
        }
    }
}

// `ferry run` as a real process: the ferry.dll built next to the tests, started with `dotnet`, or the executable at the
// absolute path FERRY_TEST_BIN (a Native AOT build: `FERRY_TEST_BIN=$PWD/bench/out/ferry-aot/ferry`). Its output is
// kept line by line so a test can wait for what it prints; disposing kills it if it is still running.
internal sealed class FerryProcess : IAsyncDisposable
{
    private readonly Process _process;
    private readonly ConcurrentQueue<string> _lines = new();

    private FerryProcess(Process process)
    {
        _process = process;
        _process.OutputDataReceived += (_, e) => { if (e.Data is not null) _lines.Enqueue(e.Data); };
        _process.ErrorDataReceived += (_, e) => { if (e.Data is not null) _lines.Enqueue("stderr: " + e.Data); };
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();
    }

    public int Pid => _process.Id;
    public bool HasExited => _process.HasExited;
    public int ExitCode => _process.ExitCode;
    public string Output => string.Join("\n", _lines);

    public const string SocketActivate = "/usr/bin/systemd-socket-activate";

    private static readonly string? Executable =
        Environment.GetEnvironmentVariable("FERRY_TEST_BIN") is { Length: > 0 } path ? path : null;

    public static FerryProcess Start(params string[] arguments) => StartUnder([], arguments);

    // systemd's socket activation tool binds `listen`, and on the first connection runs Ferry with it as fd 3
    // (LISTEN_FDS=1, LISTEN_PID its own pid: it execs Ferry in the process it forked).
    public static FerryProcess StartSocketActivated(string listen, params string[] arguments) => StartUnder([SocketActivate, "-l", listen], arguments);

    private static FerryProcess StartUnder(string[] wrapper, string[] arguments)
    {
        var info = new ProcessStartInfo(wrapper.Length > 0 ? wrapper[0] : Executable ?? "dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var argument in wrapper.Skip(1))
        {
            info.ArgumentList.Add(argument);
        }
        if (Executable is null)
        {
            if (wrapper.Length > 0)
            {
                info.ArgumentList.Add("dotnet");
            }
            info.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "ferry.dll"));
        }
        else if (wrapper.Length > 0)
        {
            info.ArgumentList.Add(Executable);
        }
        foreach (var argument in arguments)
        {
            info.ArgumentList.Add(argument);
        }
        // The test run's own settings must not leak into the process under test.
        foreach (var name in info.Environment.Keys.Where(k => k.StartsWith("FERRY__", StringComparison.Ordinal)).ToList())
        {
            info.Environment.Remove(name);
        }
        if (TestEngine.Name is { } engine)
        {
            info.Environment["FERRY__Engine"] = engine;
        }
        return new FerryProcess(Process.Start(info)!);
    }

    // Waits, within `bound`, for a line of output containing `text`; fails with the output when the process ended first.
    public async Task WaitForOutputAsync(string text, TimeSpan bound)
    {
        var deadline = DateTime.UtcNow + bound;
        while (!_lines.Any(l => l.Contains(text, StringComparison.Ordinal)))
        {
            if (_process.HasExited && !_lines.Any(l => l.Contains(text, StringComparison.Ordinal)))
            {
                Assert.Fail($"ferry exited ({_process.ExitCode}) before printing '{text}':\n{Output}");
            }
            Assert.True(DateTime.UtcNow < deadline, $"ferry did not print '{text}' within {bound.TotalSeconds:0} s:\n{Output}");
            await Task.Delay(20);
        }
    }

    public async Task<int> WaitForExitAsync(TimeSpan bound)
    {
        using var timeout = new CancellationTokenSource(bound);
        try
        {
            await _process.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            Assert.Fail($"ferry (pid {Pid}) did not exit within {bound.TotalSeconds:0} s:\n{Output}");
        }
        return _process.ExitCode;
    }

    public void Signal(int signal) => Assert.Equal(0, kill(_process.Id, signal));

    public const int SigInt = 2;
    public const int SigTerm = 15;

    public async ValueTask DisposeAsync()
    {
        if (!_process.HasExited)
        {
            _process.Kill(entireProcessTree: true);
            await _process.WaitForExitAsync();
        }
        _process.Dispose();
    }

    [DllImport("libc", SetLastError = true)]
    private static extern int kill(int pid, int signal);
}
