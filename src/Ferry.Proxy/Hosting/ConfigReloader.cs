using Ferry.Configuration;
using Ferry.Forwarding;
using Ferry.Metrics;
using Ferry.Model;
using Ferry.RateLimiting;
using Ferry.Upstream;
using System.Net.Sockets;
using System.Security.Cryptography;
using Microsoft.Extensions.Configuration;

namespace Ferry.Hosting;

/// <summary>The outcome of one reload, as /status shows it (lastReload).</summary>
internal sealed record ReloadResult(DateTimeOffset Time, string Trigger, bool Success, bool Changed, string? Version,
    IReadOnlyList<string> Errors, IReadOnlyList<string> Warnings);

/// <summary>What runs: the effective configuration's version, when it was loaded and from which file.</summary>
internal sealed record LoadedConfig(string? Version, DateTimeOffset LoadedAt, string? Path);

// Configuration reload (docs/configuration.md, "Reload"; docs/decisions/2026-12-02-config-reload.md): the file is
// read again with the same layers as at start, validated whole, and only then swapped in as a new ProxyState that
// keeps every unchanged destination's live state (DestinationReuse). Requests in flight finish on the state they
// started with; destinations that are gone drain: their pools are disposed once no request can reach them.
internal sealed partial class ConfigReloader : IAsyncDisposable
{
    // Sections read once, when the admin listener and the observability pipeline are built: a change to them is
    // refused rather than ignored, so that the version /status shows is always the configuration that runs.
    internal static readonly string[] RestartOnlySections = ["Admin", "AccessLog", "Metrics", "Tracing", "Restart", "Engine", "EventLoops", "EventLoopStallThreshold"];

    // Editors and deployment tools write a file in several steps (truncate, write, rename); one reload after the
    // last event of a burst, not one per event.
    internal static readonly TimeSpan Debounce = TimeSpan.FromMilliseconds(300);

    // Longest wait for the requests that may still use a removed destination. Past it the pool is disposed anyway:
    // its idle connections close, and connections leased to requests still running (long downloads, WebSockets) are
    // closed when they are released, never under the request.
    internal static readonly TimeSpan DrainTimeout = TimeSpan.FromSeconds(60);

    private static readonly TimeSpan DrainPoll = TimeSpan.FromMilliseconds(100);

    private readonly ProxyStateHolder _state;
    private readonly ConfigSource? _source;
    private readonly ConnectionPool.Factory _poolFactory;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly FerryMetrics? _metrics;
    private readonly ProxyListeners? _listeners;
    private readonly CertificateStore? _certificates;
    private readonly SemaphoreSlim _reloading = new(1, 1);
    private readonly CancellationTokenSource _stopping = new();
    private readonly Lock _lock = new();
    private readonly List<ProxyState> _superseded = []; // swapped out, maybe still used by requests; guarded by _lock
    private readonly List<(Task Drain, IReadOnlyList<DestinationState> Retired)> _drains = []; // guarded by _lock
    private IReadOnlyDictionary<string, string> _restartOnly;
    private IReadOnlyDictionary<string, string> _listenerValues;
    private FileSystemWatcher? _watcher;
    private ITimer? _debounce;
    private LoadedConfig _loaded;
    private ReloadResult? _last;

    public ConfigReloader(ProxyStateHolder state, IConfiguration? configuration, ConfigSource? source, ConnectionPool.Factory poolFactory,
        TimeProvider time, ILogger logger, FerryMetrics? metrics, ProxyListeners? listeners = null, CertificateStore? certificates = null)
    {
        _state = state;
        _source = source;
        _poolFactory = poolFactory;
        _time = time;
        _logger = logger;
        _metrics = metrics;
        _listeners = listeners;
        _certificates = certificates;
        _restartOnly = configuration is null ? new Dictionary<string, string>() : SectionValues(configuration, RestartOnlySections);
        _listenerValues = configuration is null ? new Dictionary<string, string>() : SectionValues(configuration, ["Listeners"]);
        _loaded = new LoadedConfig(configuration is null ? null : ConfigVersion.Compute(configuration), time.GetUtcNow(), source?.FilePath);
    }

    public LoadedConfig Loaded => Volatile.Read(ref _loaded);

    public ReloadResult? LastReload => Volatile.Read(ref _last);

    // Removed destinations whose pools are not disposed yet.
    public int Draining
    {
        get
        {
            lock (_lock)
            {
                return _drains.Where(d => !d.Drain.IsCompleted).Sum(d => d.Retired.Count);
            }
        }
    }

    // Reloads whenever the file is written, created, or renamed into place (how most tools replace a file atomically;
    // Kubernetes swaps the "..data" link of a mounted ConfigMap). The directory is watched, not the file, so that a
    // file replaced by another is still seen.
    public void WatchFile()
    {
        if (_source is null || _watcher is not null)
        {
            return;
        }
        var path = Path.GetFullPath(_source.FilePath);
        var name = Path.GetFileName(path);
        _debounce = _time.CreateTimer(static s => ((ConfigReloader)s!).ReloadInBackground("file"), this, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
        FileSystemWatcher watcher;
        try
        {
            watcher = new FileSystemWatcher(Path.GetDirectoryName(path)!)
            {
                NotifyFilter = NotifyFilters.FileName | NotifyFilters.DirectoryName | NotifyFilters.LastWrite | NotifyFilters.Size | NotifyFilters.CreationTime,
            };
        }
        catch (Exception ex) when (ex is IOException or ArgumentException or UnauthorizedAccessException)
        {
            LogNotWatched(path, ex.Message);
            return;
        }
        void OnEvent(string? changed)
        {
            if (changed is not null && (string.Equals(changed, name, StringComparison.Ordinal) || changed == "..data"))
            {
                _debounce.Change(Debounce, Timeout.InfiniteTimeSpan);
            }
        }
        watcher.Changed += (_, e) => OnEvent(e.Name);
        watcher.Created += (_, e) => OnEvent(e.Name);
        watcher.Renamed += (_, e) => OnEvent(e.Name);
        // Events were lost (the watcher's buffer overflowed): the file may have changed.
        watcher.Error += (_, _) => _debounce.Change(Debounce, Timeout.InfiniteTimeSpan);
        try
        {
            watcher.EnableRaisingEvents = true;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            // inotify's per-user limits (fs.inotify.max_user_instances, max_user_watches) are the usual cause.
            watcher.Dispose();
            LogNotWatched(path, ex.Message);
            return;
        }
        _watcher = watcher;
    }

    private void ReloadInBackground(string trigger)
    {
        if (!_stopping.IsCancellationRequested)
        {
            _ = ReloadAsync(trigger);
        }
    }

    // Returns once the new configuration is current (or refused): a request sent after it sees the new routes.
    public async Task<ReloadResult> ReloadAsync(string trigger)
    {
        try
        {
            await _reloading.WaitAsync(_stopping.Token);
        }
        catch (OperationCanceledException)
        {
            return new ReloadResult(_time.GetUtcNow(), trigger, false, false, null, ["the server is shutting down"], []);
        }
        try
        {
            var result = await ReloadCoreAsync(trigger);
            Volatile.Write(ref _last, result);
            _metrics?.RecordReload(result.Success);
            foreach (var warning in result.Warnings)
            {
                LogReloadWarning(trigger, warning);
            }
            foreach (var error in result.Errors)
            {
                LogReloadError(trigger, error);
            }
            if (!result.Success)
            {
                LogReloadFailed(trigger, result.Errors.Count, Loaded.Version);
            }
            return result;
        }
        finally
        {
            _reloading.Release();
        }
    }

    private async Task<ReloadResult> ReloadCoreAsync(string trigger)
    {
        var now = _time.GetUtcNow();
        var started = _time.GetTimestamp();
        if (_source is null)
        {
            return new ReloadResult(now, trigger, false, false, null,
                ["this server was not started from a configuration file (ferry run --config): there is nothing to reload"], []);
        }
        IConfigurationRoot configuration;
        try
        {
            configuration = _source.Build();
        }
        catch (Exception ex) when (ex is IOException or InvalidDataException or UnauthorizedAccessException or FormatException)
        {
            // Malformed JSON, a file missing between two steps of a replacement, or not readable.
            return new ReloadResult(now, trigger, false, false, null, [$"{_source.FilePath}: {ex.Message}"], []);
        }
        var version = ConfigVersion.Compute(configuration);
        var loaded = FerryConfigLoader.Load(configuration);
        if (!loaded.IsValid)
        {
            return new ReloadResult(now, trigger, false, false, version, loaded.Errors, loaded.Warnings);
        }
        var restartOnly = SectionValues(configuration, RestartOnlySections);
        var needRestart = RestartOnlyChanges(_restartOnly, restartOnly);
        var listenerValues = SectionValues(configuration, ["Listeners"]);
        var changedListeners = ChangedListeners(_listenerValues, listenerValues);
        if (changedListeners.Count > 0 && _listeners is not { CanReload: true })
        {
            needRestart.Add($"Listeners:{changedListeners[0]}: changed; this server cannot rebind its listeners (the running Listeners settings are kept, nothing was reloaded)");
        }
        if (needRestart.Count > 0)
        {
            return new ReloadResult(now, trigger, false, false, version, needRestart, loaded.Warnings);
        }
        if (version == Loaded.Version)
        {
            return new ReloadResult(now, trigger, true, false, version, [], loaded.Warnings);
        }

        // Listeners first: an address that cannot be bound fails the reload before anything changed. Added and
        // changed listeners serve before the ones they replace stop accepting (with the running state until the swap).
        ListenerChange? listenerChange = null;
        if (changedListeners.Count > 0)
        {
            try
            {
                listenerChange = _listeners!.Prepare(loaded.Config!.Listeners, changedListeners);
                await _listeners.StartAsync(listenerChange, _stopping.Token);
            }
            catch (Exception ex) when (ex is IOException or SocketException or CertificateFileException or CryptographicException
                or InvalidOperationException or OperationCanceledException)
            {
                return new ReloadResult(now, trigger, false, false, version, [$"rebinding the listeners failed: {ex.Message}"], loaded.Warnings);
            }
        }

        // Reloads are serialized and nothing else swaps: the state built on is the one swapped out.
        var current = _state.Current;
        var owners = current.Destinations.Select(d => (Destination: d, d.Cluster, d.Config)).ToArray();
        ProxyState next;
        try
        {
            next = ProxyState.Build(loaded.Config!, _poolFactory, _time, previous: current);
        }
        catch (Exception ex) when (ex is IOException or InvalidOperationException or ArgumentException or System.Security.Authentication.AuthenticationException)
        {
            // Nothing was swapped; destinations already taken over go back to the running state as they were.
            foreach (var (destination, cluster, config) in owners)
            {
                destination.Adopt(cluster, config);
            }
            if (listenerChange is not null)
            {
                await _listeners!.AbortAsync(listenerChange);
            }
            return new ReloadResult(now, trigger, false, false, version, [$"building the new configuration failed: {ex.Message}"], loaded.Warnings);
        }
        var old = _state.Swap(next);
        if (listenerChange is not null)
        {
            _certificates?.Replace(listenerChange.Names, listenerChange.Added.Select(l => l.Certificates).OfType<ListenerCertificates>());
            await _listeners!.CommitAsync(listenerChange);
            _listenerValues = listenerValues;
            LogListenersChanged(trigger, string.Join(", ", listenerChange.Names.Order(StringComparer.OrdinalIgnoreCase)));
        }
        var from = Loaded.Version;
        _restartOnly = restartOnly;
        Volatile.Write(ref _loaded, new LoadedConfig(version, now, _source.FilePath));
        var retired = old.RetiredBy(next);
        var kept = old.Destinations.Count() - retired.Count;
        LogReloaded(trigger, from, version, kept, next.Destinations.Count() - kept, retired.Count, _time.GetElapsedTime(started).TotalMilliseconds);
        List<ProxyState> mayUse;
        lock (_lock)
        {
            // A superseded state seen without requests is never taken again (ProxyStateHolder.Acquire).
            _superseded.RemoveAll(s => s.Requests == 0);
            _superseded.Add(old);
            mayUse = [.. _superseded];
            _drains.RemoveAll(d => d.Drain.IsCompleted);
            _drains.Add((DrainAsync(old, mayUse, retired, old.RateLimitersRetiredBy(next)), retired));
        }
        return new ReloadResult(now, trigger, true, true, version, [], loaded.Warnings);
    }

    // The old state's health checkers stop at once (the new state has its own for the clusters it keeps). Removed
    // destinations can only be reached through superseded states: once none of those has a request left, nothing can
    // use them and their pools and rate limiter policies are disposed.
    private async Task DrainAsync(ProxyState old, IReadOnlyList<ProxyState> mayUse, IReadOnlyList<DestinationState> retired,
        IReadOnlyList<RateLimiterPolicy> retiredLimiters)
    {
        await Task.Yield();
        try
        {
            await old.StopHealthChecksAsync();
            if (retired.Count == 0 && retiredLimiters.Count == 0)
            {
                return;
            }
            var started = _time.GetTimestamp();
            while (mayUse.Any(s => s.Requests > 0) || retired.Any(d => d.InFlight > 0))
            {
                if (_time.GetElapsedTime(started) >= DrainTimeout)
                {
                    LogDrainTimeout(retired.Count, DrainTimeout.TotalSeconds);
                    break;
                }
                await Task.Delay(DrainPoll, _time, _stopping.Token);
            }
        }
        catch (OperationCanceledException)
        {
            // Shutting down: the pools are disposed now.
        }
        foreach (var destination in retired)
        {
            destination.Resolver?.Dispose();
            await destination.Pool.DisposeAsync();
        }
        foreach (var limiter in retiredLimiters)
        {
            limiter.Dispose();
        }
    }

    private static Dictionary<string, string> SectionValues(IConfiguration configuration, IEnumerable<string> sections)
    {
        var values = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        foreach (var section in sections)
        {
            foreach (var (key, value) in configuration.GetSection(section).AsEnumerable())
            {
                if (value is not null)
                {
                    values[key] = value;
                }
            }
        }
        return values;
    }

    /// <summary>The listener ids (the key after "Listeners:") whose settings differ: added, removed or changed.</summary>
    internal static List<string> ChangedListeners(IReadOnlyDictionary<string, string> running, IReadOnlyDictionary<string, string> next)
    {
        static string? Id(string key)
        {
            var parts = key.Split(':');
            return parts.Length >= 2 && parts[0].Equals("Listeners", StringComparison.OrdinalIgnoreCase) ? parts[1] : null;
        }
        return running.Keys.Union(next.Keys, StringComparer.OrdinalIgnoreCase)
            .Where(k => !running.TryGetValue(k, out var a) || !next.TryGetValue(k, out var b) || a != b)
            .Select(Id)
            .OfType<string>()
            .Distinct(StringComparer.OrdinalIgnoreCase)
            .Order(StringComparer.OrdinalIgnoreCase)
            .ToList();
    }

    internal static List<string> RestartOnlyChanges(IReadOnlyDictionary<string, string> running, IReadOnlyDictionary<string, string> next)
    {
        var errors = new List<string>();
        foreach (var section in RestartOnlySections)
        {
            var changed = running.Keys.Union(next.Keys, StringComparer.OrdinalIgnoreCase)
                .Where(k => k.Equals(section, StringComparison.OrdinalIgnoreCase) || k.StartsWith(section + ":", StringComparison.OrdinalIgnoreCase))
                .Where(k => !running.TryGetValue(k, out var a) || !next.TryGetValue(k, out var b) || a != b)
                .Order(StringComparer.OrdinalIgnoreCase)
                .ToArray();
            if (changed.Length > 0)
            {
                errors.Add($"{changed[0]}: changed; {section} changes need a restart (the running {section} settings are kept, "
                    + $"nothing was reloaded){(changed.Length > 1 ? $"; also changed: {string.Join(", ", changed.Skip(1))}" : "")}");
            }
        }
        return errors;
    }

    public async ValueTask DisposeAsync()
    {
        _stopping.Cancel();
        _watcher?.Dispose();
        _debounce?.Dispose();
        // A reload in progress finishes first, so that the state it swaps in is the one the server disposes.
        await _reloading.WaitAsync();
        Task[] drains;
        lock (_lock)
        {
            drains = _drains.Select(d => d.Drain).ToArray();
        }
        await Task.WhenAll(drains);
    }

    [LoggerMessage(EventId = 60, Level = LogLevel.Information,
        Message = "configuration reloaded ({Trigger}) in {Milliseconds:0.#} ms: version {From} -> {To}; {Kept} destinations kept with their connections, {Added} new, {Retired} draining")]
    private partial void LogReloaded(string trigger, string? from, string to, int kept, int added, int retired, double milliseconds);

    [LoggerMessage(EventId = 66, Level = LogLevel.Information,
        Message = "configuration reload ({Trigger}): listeners {Listeners} rebound; the others kept their sockets and connections")]
    private partial void LogListenersChanged(string trigger, string listeners);

    [LoggerMessage(EventId = 61, Level = LogLevel.Error, Message = "configuration reload ({Trigger}): error: {Error}")]
    private partial void LogReloadError(string trigger, string error);

    [LoggerMessage(EventId = 62, Level = LogLevel.Warning, Message = "configuration reload ({Trigger}): warning: {Warning}")]
    private partial void LogReloadWarning(string trigger, string warning);

    [LoggerMessage(EventId = 63, Level = LogLevel.Error,
        Message = "configuration reload ({Trigger}) failed with {Count} error(s); the running configuration (version {Version}) is kept")]
    private partial void LogReloadFailed(string trigger, int count, string? version);

    [LoggerMessage(EventId = 65, Level = LogLevel.Warning,
        Message = "the configuration file {Path} is not watched ({Reason}); SIGHUP and POST /reload still reload it")]
    private partial void LogNotWatched(string path, string reason);

    [LoggerMessage(EventId = 64, Level = LogLevel.Warning,
        Message = "{Count} removed destinations still had requests after {Seconds} s; their pools are disposed, connections in use close when released")]
    private partial void LogDrainTimeout(int count, double seconds);
}
