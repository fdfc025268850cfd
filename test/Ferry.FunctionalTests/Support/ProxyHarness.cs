using System.Collections.Concurrent;
using Ferry.Configuration;
using Ferry.Hosting;
using Ferry.Lab;
using Ferry.Model;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Logging;

namespace Ferry.FunctionalTests.Support;

// A Ferry started in-process on 127.0.0.1:0 in front of Lab upstreams, configured through the same loader as a file.
internal sealed class ProxyHarness : IAsyncDisposable
{
    private readonly List<LabUpstream> _upstreams;

    private ProxyHarness(FerryServer server, List<LabUpstream> upstreams, LogSink logs)
    {
        Server = server;
        _upstreams = upstreams;
        Logs = logs;
        ProxyUri = server.ListenerUris[0];
        Client = new HttpClient(new SocketsHttpHandler { UseProxy = false, AllowAutoRedirect = false, UseCookies = false })
        {
            BaseAddress = ProxyUri,
            Timeout = TimeSpan.FromSeconds(60),
        };
    }

    public FerryServer Server { get; }
    public Uri ProxyUri { get; }
    public HttpClient Client { get; }
    public LogSink Logs { get; }

    public static Dictionary<string, string?> Settings(params (string Id, Uri Address)[] destinations)
    {
        var settings = new Dictionary<string, string?>
        {
            ["Listeners:main:Address"] = "127.0.0.1:0",
            ["Admin:Address"] = "127.0.0.1:0",
            ["ProxyStatus:IncludeDetails"] = "true",
            ["Routes:all:ClusterId"] = "c",
            ["Routes:all:Match:PathPrefix"] = "/",
        };
        foreach (var (id, address) in destinations)
        {
            settings[$"Clusters:c:Destinations:{id}:Address"] = address.ToString();
        }
        return settings;
    }

    public static Task<ProxyHarness> StartAsync(params LabUpstream[] upstreams) =>
        StartAsync(Settings(upstreams.Select(u => (u.Name, u.Uri)).ToArray()), null, upstreams);

    public static async Task<ProxyHarness> StartAsync(Dictionary<string, string?> settings, TimeProvider? time, params LabUpstream[] upstreams)
    {
        var result = FerryConfigLoader.Load(new ConfigurationBuilder().AddInMemoryCollection(TestEngine.Apply(settings)).Build());
        Assert.True(result.IsValid, string.Join("\n", result.Errors));
        var logs = new LogSink();
        var server = await FerryServer.StartAsync(result.Config!, new FerryServerOptions
        {
            TimeProvider = time ?? TimeProvider.System,
            ConfigureLogging = l => l.AddProvider(logs).SetMinimumLevel(LogLevel.Information).AddFilter("Microsoft", LogLevel.Warning),
            ShutdownTimeout = TimeSpan.FromSeconds(2),
            Admin = Ferry.Admin.AdminEndpoints.Handler,
        }).WaitAsync(TimeSpan.FromSeconds(30));
        return new ProxyHarness(server, [.. upstreams], logs);
    }

    public DestinationState Destination(string id) =>
        Server.State.Current.Clusters["c"].Destinations.Single(d => d.Id == id);

    public async ValueTask DisposeAsync()
    {
        Client.Dispose();
        await Server.DisposeAsync();
        foreach (var upstream in _upstreams)
        {
            await upstream.DisposeAsync();
        }
    }
}

// Ferry's log lines, kept so that tests can check that a failure was explained.
internal sealed class LogSink : ILoggerProvider
{
    public ConcurrentQueue<string> Lines { get; } = new();

    public ILogger CreateLogger(string categoryName) => new Logger(this, categoryName);

    public void Dispose()
    {
    }

    private sealed class Logger(LogSink sink, string category) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
            sink.Lines.Enqueue($"{logLevel} {category}: {formatter(state, exception)}");
    }
}
