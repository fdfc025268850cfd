using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace Ferry.Incidents;

/// <summary>
/// nginx in the foreground with its own prefix directory, configuration and pid file, configured the way the
/// incidents are usually met in production: an upstream block with keepalive 32, keepalive_timeout 60s (its default),
/// HTTP/1.1 and an empty Connection header. Stopped with `nginx -s stop` (SIGTERM to the master, which stops its
/// workers), killed if that does not end it.
/// </summary>
internal sealed class NginxProxy : IAsyncDisposable
{
    private static readonly TimeSpan StartTimeout = TimeSpan.FromSeconds(10);
    private static readonly TimeSpan StopTimeout = TimeSpan.FromSeconds(10);

    private readonly Process _process;
    private readonly string _prefix;
    private readonly string _configFile;

    private NginxProxy(Process process, string prefix, string configFile, IPEndPoint endPoint)
    {
        _process = process;
        _prefix = prefix;
        _configFile = configFile;
        EndPoint = endPoint;
    }

    public IPEndPoint EndPoint { get; }

    /// <summary>The nginx executable on PATH, or null.</summary>
    public static string? Find()
    {
        foreach (var directory in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries)
                     .Concat(["/usr/sbin", "/usr/local/sbin"]))
        {
            var candidate = Path.Combine(directory, "nginx");
            if (File.Exists(candidate))
            {
                return candidate;
            }
        }
        return null;
    }

    public static string Config(IPEndPoint listen, Uri upstream, string prefix) => $$"""
        worker_processes 1;
        pid {{prefix}}/nginx.pid;
        error_log {{prefix}}/error.log warn;
        events { worker_connections 4096; }
        http {
            access_log off;
            client_body_temp_path {{prefix}}/client_body;
            proxy_temp_path {{prefix}}/proxy;
            fastcgi_temp_path {{prefix}}/fastcgi;
            uwsgi_temp_path {{prefix}}/uwsgi;
            scgi_temp_path {{prefix}}/scgi;
            upstream lab {
                server {{upstream.Authority}};
                keepalive 32;
                keepalive_timeout 60s;
            }
            server {
                listen {{listen}};
                location / {
                    proxy_pass http://lab;
                    proxy_http_version 1.1;
                    proxy_set_header Connection "";
                }
            }
        }
        """;

    public static async Task<NginxProxy> StartAsync(string executable, Uri upstream, CancellationToken ct)
    {
        var prefix = Directory.CreateTempSubdirectory("ferry-lab-nginx-").FullName;
        var endPoint = new IPEndPoint(IPAddress.Loopback, FreePort());
        var configFile = Path.Combine(prefix, "nginx.conf");
        await File.WriteAllTextAsync(configFile, Config(endPoint, upstream, prefix), ct);
        var process = Process.Start(Command(executable, prefix, configFile, "-g", "daemon off;"))
                      ?? throw new InvalidOperationException("nginx did not start");
        var nginx = new NginxProxy(process, prefix, configFile, endPoint);
        try
        {
            await nginx.WaitUntilListeningAsync(ct);
        }
        catch
        {
            await nginx.DisposeAsync();
            throw;
        }
        return nginx;
    }

    private static ProcessStartInfo Command(string executable, string prefix, string configFile, params string[] extra)
    {
        // -e: the error log before the configuration is read (nginx 1.19.5+), so no system path is touched.
        var start = new ProcessStartInfo(executable) { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
        foreach (var argument in new[] { "-p", prefix, "-e", Path.Combine(prefix, "error.log"), "-c", configFile }.Concat(extra))
        {
            start.ArgumentList.Add(argument);
        }
        return start;
    }

    private async Task WaitUntilListeningAsync(CancellationToken ct)
    {
        // Real time on purpose: nginx is a real process.
        long started = TimeProvider.System.GetTimestamp();
        while (true)
        {
            if (_process.HasExited)
            {
                var log = File.Exists(Path.Combine(_prefix, "error.log")) ? await File.ReadAllTextAsync(Path.Combine(_prefix, "error.log"), ct) : "";
                throw new InvalidOperationException($"nginx exited with code {_process.ExitCode}: {await _process.StandardError.ReadToEndAsync(ct)}{log}");
            }
            using var probe = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            try
            {
                await probe.ConnectAsync(EndPoint, ct);
                return;
            }
            catch (SocketException) when (TimeProvider.System.GetElapsedTime(started) < StartTimeout)
            {
                await Task.Delay(50, ct);
            }
        }
    }

    private static int FreePort()
    {
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return ((IPEndPoint)socket.LocalEndPoint!).Port;
    }

    public async ValueTask DisposeAsync()
    {
        if (!_process.HasExited)
        {
            using (var stop = Process.Start(Command(_process.StartInfo.FileName, _prefix, _configFile, "-s", "stop")))
            {
                if (stop is not null)
                {
                    await stop.WaitForExitAsync().WaitAsync(StopTimeout).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
                }
            }
            await _process.WaitForExitAsync().WaitAsync(StopTimeout).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
            if (!_process.HasExited)
            {
                _process.Kill(entireProcessTree: true);
            }
        }
        _process.Dispose();
        try
        {
            Directory.Delete(_prefix, recursive: true);
        }
        catch (IOException)
        {
            // A worker still closing its log; the directory is in the temp folder.
        }
    }
}
