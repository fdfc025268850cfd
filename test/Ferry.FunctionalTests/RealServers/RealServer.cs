using Ferry.FunctionalTests.Support;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Ferry.FunctionalTests.RealServers;

// A test that needs a real server from Debian's packages. Skipped, saying why, where the server is not installed,
// except under CI=true, where it runs and fails loudly (.ci/run installs every server).
internal sealed class RealServerFactAttribute : FactAttribute
{
    public RealServerFactAttribute(string server)
    {
        if (RealServer.Missing(server) is { } missing && !RealServer.RequiredByCi)
        {
            Skip = missing;
        }
    }
}

// A real server process on 127.0.0.1, in a temporary directory of its own. The application records every request it
// processed in a file ("METHOD id" per line, the id from X-Request-Id), so that a test can count how many times each
// request reached it. Disposing kills the process and its children.
internal sealed class RealServer : IAsyncDisposable
{
    public const string Gunicorn = "gunicorn";
    public const string Tomcat = "tomcat";
    public const string Node = "node";
    public const string Tornado = "tornado";

    private const string Python = "/usr/bin/python3";
    private const string PythonPackages = "/usr/lib/python3/dist-packages";
    private const string CatalinaHome = "/usr/share/tomcat10";
    private const string NodeExecutable = "/usr/bin/node";
    private static readonly TimeSpan StartTimeout = TimeSpan.FromSeconds(60);
    private static readonly TimeSpan StopTimeout = TimeSpan.FromSeconds(15);

    private readonly Process _process;
    private readonly string _directory;
    private readonly StringBuilder _output;

    private RealServer(string name, Process process, string directory, string seenFile, int port, StringBuilder output)
    {
        Name = name;
        _process = process;
        _directory = directory;
        SeenFile = seenFile;
        Uri = new Uri($"http://127.0.0.1:{port}/");
        _output = output;
    }

    public string Name { get; }
    public Uri Uri { get; }
    public string SeenFile { get; }

    public static bool RequiredByCi => string.Equals(Environment.GetEnvironmentVariable("CI"), "true", StringComparison.OrdinalIgnoreCase);

    // Why the server cannot run here, or null.
    public static string? Missing(string server)
    {
        var (files, package) = server switch
        {
            Gunicorn => (new[] { Python, $"{PythonPackages}/gunicorn/__init__.py" }, "python3-gunicorn"),
            Tornado => (new[] { Python, $"{PythonPackages}/tornado/__init__.py" }, "python3-tornado"),
            Tomcat => (new[] { $"{CatalinaHome}/bin/catalina.sh", $"{CatalinaHome}/etc/web.xml" }, "tomcat10"),
            Node => (new[] { NodeExecutable }, "nodejs"),
            _ => throw new ArgumentOutOfRangeException(nameof(server), server, null),
        };
        var absent = files.Where(f => !File.Exists(f)).ToList();
        return absent.Count == 0 ? null
            : $"{server} is not installed ({string.Join(", ", absent)} missing; apt-get install {package}; .ci/run does it)";
    }

    private static void Require(string server)
    {
        if (Missing(server) is { } missing)
        {
            throw new InvalidOperationException($"{missing}. CI=true: every real server must be installed.");
        }
    }

    private static string AppsDirectory => Path.Combine(AppContext.BaseDirectory, "RealServers", "Apps");

    // gunicorn 20.1, gthread workers, keep-alive 2 s (its default is 2 s too; said explicitly because that is the case).
    public static Task<RealServer> StartGunicornAsync()
    {
        Require(Gunicorn);
        var port = Loopback.FreePort();
        return StartAsync(Gunicorn, port, Python,
            ["-m", "gunicorn", "--worker-class", "gthread", "--workers", "2", "--threads", "4", "--keep-alive", "2",
             "--bind", $"127.0.0.1:{port}", "--chdir", AppsDirectory, "wsgi_app:app"],
            (_, _) => { });
    }

    // tornado 6.2: backlog 8, a handler that blocks the event loop for 20 ms. One process per call.
    public static Task<RealServer> StartTornadoAsync(string name)
    {
        Require(Tornado);
        var port = Loopback.FreePort();
        return StartAsync(name, port, Python, [Path.Combine(AppsDirectory, "tornado_app.py"), port.ToString()], (_, _) => { });
    }

    // node's http server with its defaults.
    public static Task<RealServer> StartNodeAsync()
    {
        Require(Node);
        var port = Loopback.FreePort();
        return StartAsync(Node, port, NodeExecutable, [Path.Combine(AppsDirectory, "node_app.js"), port.ToString()], (_, _) => { });
    }

    // Tomcat 10 from Debian's package, run with catalina.sh from a CATALINA_BASE made here: the stock configuration
    // files, a server.xml with one connector (plus connectorAttributes) and a static application.
    public static Task<RealServer> StartTomcatAsync(string name, string connectorAttributes)
    {
        Require(Tomcat);
        var port = Loopback.FreePort();
        return StartAsync(name, port, Path.Combine(CatalinaHome, "bin", "catalina.sh"), ["run"], (start, directory) =>
        {
            var conf = Directory.CreateDirectory(Path.Combine(directory, "conf")).FullName;
            foreach (var file in new[] { "web.xml", "catalina.properties", "logging.properties", "context.xml" })
            {
                File.Copy(Path.Combine(CatalinaHome, "etc", file), Path.Combine(conf, file));
            }
            File.WriteAllText(Path.Combine(conf, "server.xml"), File.ReadAllText(Path.Combine(AppsDirectory, "tomcat-server.xml"))
                .Replace("@PORT@", port.ToString())
                .Replace("@CONNECTOR_ATTRIBUTES@", connectorAttributes)
                .Replace("@SEEN_FILE@", "seen.txt"));
            foreach (var sub in new[] { "logs", "temp", "work" })
            {
                Directory.CreateDirectory(Path.Combine(directory, sub));
            }
            var root = Directory.CreateDirectory(Path.Combine(directory, "webapps", "ROOT")).FullName;
            File.WriteAllText(Path.Combine(root, "hello.txt"), "ok\n");
            start.Environment["CATALINA_HOME"] = CatalinaHome;
            start.Environment["CATALINA_BASE"] = directory;
            start.Environment["CATALINA_TMPDIR"] = Path.Combine(directory, "temp");
            start.Environment["CATALINA_PID"] = Path.Combine(directory, "catalina.pid");
            // A small heap and the quick JIT tier: the JVM starts sooner on a busy machine; Tomcat's behaviour is the same.
            start.Environment["JAVA_OPTS"] = "-Xmx192m -XX:+UseSerialGC -XX:TieredStopAtLevel=1";
        }, seenFile: d => Path.Combine(d, "logs", "seen.txt"));
    }

    private static async Task<RealServer> StartAsync(string name, int port, string executable, string[] arguments,
        Action<ProcessStartInfo, string> prepare, Func<string, string>? seenFile = null)
    {
        var directory = Directory.CreateTempSubdirectory($"ferry-{name}-").FullName;
        var seen = seenFile?.Invoke(directory) ?? Path.Combine(directory, "seen.txt");
        var start = new ProcessStartInfo(executable)
        {
            WorkingDirectory = directory,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        foreach (var argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }
        start.Environment["SEEN_FILE"] = seen;
        start.Environment["PYTHONPATH"] = AppsDirectory;
        start.Environment["PYTHONDONTWRITEBYTECODE"] = "1";
        prepare(start, directory);

        var output = new StringBuilder();
        var process = Process.Start(start)!;
        process.OutputDataReceived += (_, e) => Append(output, e.Data);
        process.ErrorDataReceived += (_, e) => Append(output, e.Data);
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        var server = new RealServer(name, process, directory, seen, port, output);
        try
        {
            await server.WaitUntilListeningAsync(port);
            return server;
        }
        catch
        {
            await server.DisposeAsync();
            throw;
        }
    }

    private static void Append(StringBuilder output, string? line)
    {
        if (line is null)
        {
            return;
        }
        lock (output)
        {
            // The first lines say why a server did not start; past that only the size matters.
            if (output.Length < 64 * 1024)
            {
                output.AppendLine(line);
            }
        }
    }

    public string Output
    {
        get
        {
            lock (_output)
            {
                return _output.ToString();
            }
        }
    }

    private async Task WaitUntilListeningAsync(int port)
    {
        var deadline = DateTime.UtcNow + StartTimeout;
        while (true)
        {
            if (_process.HasExited)
            {
                throw new InvalidOperationException($"{Name} exited with {_process.ExitCode} before listening on port {port}:\n{Output}");
            }
            using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            try
            {
                await socket.ConnectAsync(new IPEndPoint(IPAddress.Loopback, port)).WaitAsync(TimeSpan.FromSeconds(2));
                return;
            }
            catch (Exception e) when (e is SocketException or TimeoutException)
            {
                if (DateTime.UtcNow > deadline)
                {
                    throw new TimeoutException($"{Name} did not listen on port {port} within {StartTimeout.TotalSeconds} s:\n{Output}");
                }
                await Task.Delay(100);
            }
        }
    }

    // How many times the application processed each request id, by method ("POST p-12" → 1).
    public Dictionary<string, int> Seen()
    {
        var counts = new Dictionary<string, int>();
        if (!File.Exists(SeenFile))
        {
            return counts;
        }
        foreach (var line in File.ReadAllLines(SeenFile))
        {
            if (line.Length > 0)
            {
                counts[line] = counts.GetValueOrDefault(line) + 1;
            }
        }
        return counts;
    }

    public async ValueTask DisposeAsync()
    {
        try
        {
            if (!_process.HasExited)
            {
                _process.Kill(entireProcessTree: true);
            }
            await _process.WaitForExitAsync().WaitAsync(StopTimeout);
        }
        catch (InvalidOperationException)
        {
            // Exited between the check and the kill.
        }
        _process.Dispose();
        try
        {
            Directory.Delete(_directory, recursive: true);
        }
        catch (IOException)
        {
            // A child still closing a file; the temp directory is left for the system to clean.
        }
    }
}
