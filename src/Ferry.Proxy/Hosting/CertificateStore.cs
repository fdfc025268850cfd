using System.Diagnostics.Metrics;
using System.Net.Security;
using System.Security.Authentication;
using Ferry.Configuration;
using Ferry.Metrics;
using Microsoft.AspNetCore.Server.Kestrel.Https;

namespace Ferry.Hosting;

/// <summary>
/// The certificates every HTTPS listener serves, replaceable while the server runs (docs/decisions/2026-12-02-https-listeners.md).
/// A handshake reads the current certificate for its server name without a lock; <see cref="Reload"/>, a change in a
/// watched directory or the periodic check loads the files again and swaps a certificate only when the new one loads
/// completely. Connections already established keep the certificate they were made with.
/// </summary>
internal sealed partial class CertificateStore : IDisposable
{
    // Several files change for one renewal (certificate, key, a symlink swap): the load waits for them to settle.
    internal static readonly TimeSpan Debounce = TimeSpan.FromMilliseconds(500);

    // Catches what the watchers miss: network file systems, exhausted inotify watches, a directory created later.
    internal static readonly TimeSpan PollInterval = TimeSpan.FromSeconds(30);

    // `ferry check` warns from this close to expiry; the server logs the same warning at start and on every reload.
    public static readonly TimeSpan ExpiryWarning = TimeSpan.FromDays(14);

    // Replaced whole when a configuration reload adds, changes or removes an HTTPS listener; read without a lock.
    private volatile Dictionary<string, ListenerCertificates> _listeners = new(StringComparer.OrdinalIgnoreCase);
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly Lock _reloadLock = new();
    private readonly List<FileSystemWatcher> _watchers = [];
    private readonly ITimer _debounce;
    private readonly ITimer _poll;
    private bool _disposed;

    public CertificateStore(IEnumerable<ListenerConfig> listeners, TimeProvider time, ILogger<CertificateStore> logger, IMeterFactory? meters)
    {
        _time = time;
        _logger = logger;
        foreach (var listener in listeners)
        {
            if (listener.Tls is { } tls)
            {
                _listeners[listener.Name] = new ListenerCertificates(listener.Name, listener.Protocols, tls, time.GetUtcNow());
            }
        }
        foreach (var slot in Slots)
        {
            WarnIfExpiring(slot.Listener, slot.Name, slot.Current!);
        }
        if (meters is not null)
        {
            var meter = meters.Create(FerryMetrics.MeterName);
            meter.CreateObservableCounter("ferry.listener.certificate.reloads", () => Measure<long>(static (s, list) =>
            {
                list.Add(new Measurement<long>(s.Successes, Tags(s, "result", "success")));
                list.Add(new Measurement<long>(s.Failures, Tags(s, "result", "failure")));
            }), "{reload}", "Certificate reloads of HTTPS listeners, by result; a failure keeps the certificate served before.");
            meter.CreateObservableGauge("ferry.listener.certificate.not_after", () => Measure<long>(static (s, list) =>
            {
                if (s.Current is { } current)
                {
                    list.Add(new Measurement<long>(current.NotAfter.ToUnixTimeSeconds(), Tags(s)));
                }
            }), "s", "Expiry of the certificate an HTTPS listener serves (Unix time), by server name (default: the listener's Certificate).");
        }
        // Set up even without an HTTPS listener: a configuration reload may add one.
        _debounce = time.CreateTimer(static s => ((CertificateStore)s!).CheckForChanges(), this, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
        _poll = time.CreateTimer(static s => ((CertificateStore)s!).CheckForChanges(), this, PollInterval, PollInterval);
        Watch();
    }

    public IReadOnlyCollection<ListenerCertificates> Listeners => _listeners.Values;

    public ListenerCertificates? For(string listener) => _listeners.GetValueOrDefault(listener);

    private IEnumerable<CertificateSlot> Slots => _listeners.Values.SelectMany(l => l.Slots);

    /// <summary>
    /// After a configuration reload: the certificates of listeners added or changed replace those of the same name,
    /// those of removed listeners (or listeners no longer HTTPS) go, and the watched directories follow.
    /// </summary>
    public void Replace(IReadOnlyCollection<string> changed, IEnumerable<ListenerCertificates> loaded)
    {
        lock (_reloadLock)
        {
            if (_disposed)
            {
                return;
            }
            var next = new Dictionary<string, ListenerCertificates>(_listeners, StringComparer.OrdinalIgnoreCase);
            foreach (var name in changed)
            {
                next.Remove(name);
            }
            foreach (var listener in loaded)
            {
                next[listener.Listener] = listener;
                foreach (var slot in listener.Slots)
                {
                    WarnIfExpiring(slot.Listener, slot.Name, slot.Current!);
                }
            }
            _listeners = next;
            foreach (var watcher in _watchers)
            {
                watcher.Dispose();
            }
            _watchers.Clear();
            Watch();
        }
    }

    /// <summary>
    /// Loads every certificate file again now (an operator's request: SIGHUP, an admin call). A certificate whose files
    /// did not change is left as it is; one whose new files do not load is kept, and the failure is logged, counted and
    /// shown in /status. Returns the slots whose certificate was replaced or failed to load.
    /// </summary>
    public IReadOnlyList<CertificateSlot> Reload() => ReloadChanged(retryFailed: true);

    // Watcher and poll: only files whose contents differ from the last attempt, so that a bad file is reported once.
    private void CheckForChanges()
    {
        try
        {
            ReloadChanged(retryFailed: false);
        }
        catch (Exception ex)
        {
            // A timer callback must not throw; nothing was swapped.
            LogCheckFailed(_logger, ex);
        }
    }

    private List<CertificateSlot> ReloadChanged(bool retryFailed)
    {
        var changed = new List<CertificateSlot>();
        lock (_reloadLock)
        {
            if (_disposed)
            {
                return changed;
            }
            foreach (var slot in Slots)
            {
                switch (slot.TryReload(_time.GetUtcNow(), retryFailed))
                {
                    case ReloadOutcome.Replaced:
                        changed.Add(slot);
                        LogReloaded(_logger, slot.Listener, slot.Name, slot.Current!.Subject, slot.Current.SerialNumber, slot.Current.NotAfter);
                        WarnIfExpiring(slot.Listener, slot.Name, slot.Current);
                        break;
                    case ReloadOutcome.Failed:
                        changed.Add(slot);
                        LogReloadFailed(_logger, slot.Listener, slot.Name, slot.LastError!, slot.Current?.Subject, slot.Current?.SerialNumber);
                        break;
                }
            }
        }
        return changed;
    }

    private void WarnIfExpiring(string listener, string name, LoadedCertificate certificate)
    {
        var left = certificate.NotAfter - _time.GetUtcNow();
        if (left < ExpiryWarning)
        {
            LogExpiring(_logger, listener, name, certificate.Subject, certificate.NotAfter,
                left <= TimeSpan.Zero ? "has expired: clients refuse it" : $"expires in {left.TotalDays:0.#} days");
        }
    }

    private void Watch()
    {
        var directories = Slots.SelectMany(s => s.Source.Files)
            .Select(f => Path.GetDirectoryName(Path.GetFullPath(f)))
            .Where(d => d is not null)
            .Distinct(StringComparer.Ordinal);
        foreach (var directory in directories)
        {
            try
            {
                // The whole directory: an editor or cert-manager writes a temporary file and renames it over the old
                // one, and a Kubernetes secret volume swaps its ..data symlink; neither changes the watched name itself.
                var watcher = new FileSystemWatcher(directory!)
                {
                    NotifyFilter = NotifyFilters.FileName | NotifyFilters.DirectoryName | NotifyFilters.LastWrite | NotifyFilters.Size | NotifyFilters.CreationTime,
                    IncludeSubdirectories = false,
                };
                watcher.Changed += OnFileEvent;
                watcher.Created += OnFileEvent;
                watcher.Renamed += OnFileEvent;
                watcher.Deleted += OnFileEvent;
                watcher.Error += (_, e) => LogWatchError(_logger, directory!, e.GetException().Message);
                watcher.EnableRaisingEvents = true;
                _watchers.Add(watcher);
            }
            catch (Exception ex) when (ex is ArgumentException or IOException or PlatformNotSupportedException or UnauthorizedAccessException)
            {
                LogWatchError(_logger, directory!, $"{ex.Message}; changes are checked every {PollInterval.TotalSeconds:0} s");
            }
        }
    }

    private void OnFileEvent(object sender, FileSystemEventArgs e)
    {
        lock (_reloadLock)
        {
            if (!_disposed)
            {
                _debounce.Change(Debounce, Timeout.InfiniteTimeSpan);
            }
        }
    }

    private List<Measurement<T>> Measure<T>(Action<CertificateSlot, List<Measurement<T>>> observe)
        where T : struct
    {
        var list = new List<Measurement<T>>();
        foreach (var slot in Slots)
        {
            observe(slot, list);
        }
        return list;
    }

    private static KeyValuePair<string, object?>[] Tags(CertificateSlot s) =>
        [new("ferry.listener", s.Listener), new("ferry.server_name", s.Name)];

    private static KeyValuePair<string, object?>[] Tags(CertificateSlot s, string key, string value) =>
        [new("ferry.listener", s.Listener), new("ferry.server_name", s.Name), new(key, value)];

    public void Dispose()
    {
        lock (_reloadLock)
        {
            _disposed = true;
        }
        foreach (var watcher in _watchers)
        {
            watcher.Dispose();
        }
        _debounce.Dispose();
        _poll.Dispose();
    }

    [LoggerMessage(EventId = 60, Level = LogLevel.Information,
        Message = "listener {Listener}: certificate for {ServerName} reloaded: {Subject}, serial {Serial}, not after {NotAfter:O}")]
    private static partial void LogReloaded(ILogger logger, string listener, string serverName, string subject, string serial, DateTimeOffset notAfter);

    [LoggerMessage(EventId = 61, Level = LogLevel.Error,
        Message = "listener {Listener}: certificate for {ServerName} not reloaded, still serving {Subject} (serial {Serial}): {Error}")]
    private static partial void LogReloadFailed(ILogger logger, string listener, string serverName, string error, string? subject, string? serial);

    [LoggerMessage(EventId = 62, Level = LogLevel.Warning,
        Message = "listener {Listener}: certificate for {ServerName} ({Subject}, not after {NotAfter:O}) {State}")]
    private static partial void LogExpiring(ILogger logger, string listener, string serverName, string subject, DateTimeOffset notAfter, string state);

    [LoggerMessage(EventId = 63, Level = LogLevel.Warning, Message = "certificate directory {Directory} is not watched: {Error}")]
    private static partial void LogWatchError(ILogger logger, string directory, string error);

    [LoggerMessage(EventId = 64, Level = LogLevel.Error, Message = "certificate change check failed")]
    private static partial void LogCheckFailed(ILogger logger, Exception exception);
}

internal enum ReloadOutcome
{
    Unchanged,
    Replaced,
    Failed,
}

/// <summary>The certificates of one HTTPS listener and the choice among them by server name (SNI).</summary>
internal sealed class ListenerCertificates
{
    private readonly CertificateSlot? _default;
    private readonly Dictionary<string, CertificateSlot> _exact = new(StringComparer.OrdinalIgnoreCase);
    private readonly Dictionary<string, CertificateSlot> _wildcard = new(StringComparer.OrdinalIgnoreCase); // "example.com" for "*.example.com"

    public ListenerCertificates(string listener, ListenerProtocols protocols, ListenerTlsConfig tls, DateTimeOffset now)
    {
        Listener = listener;
        // Ferry sets ALPN itself so that Kestrel never writes into an options object that every handshake shares.
        List<SslApplicationProtocol> alpn = protocols switch
        {
            ListenerProtocols.Http2 => [SslApplicationProtocol.Http2],
            ListenerProtocols.Http1AndHttp2 => [SslApplicationProtocol.Http2, SslApplicationProtocol.Http11],
            _ => [SslApplicationProtocol.Http11],
        };
        var slots = new List<CertificateSlot>();
        if (tls.Default is { } defaultSource)
        {
            _default = new CertificateSlot(listener, "default", defaultSource, tls.SslProtocols, alpn, now);
            slots.Add(_default);
        }
        foreach (var sni in tls.Sni)
        {
            var slot = new CertificateSlot(listener, sni.Host, sni.Certificate, tls.SslProtocols, alpn, now);
            slots.Add(slot);
            if (sni.Host.StartsWith("*.", StringComparison.Ordinal))
            {
                _wildcard[sni.Host[2..]] = slot;
            }
            else
            {
                _exact[sni.Host] = slot;
            }
        }
        Slots = slots;
    }

    public string Listener { get; }

    public IReadOnlyList<CertificateSlot> Slots { get; }

    /// <summary>
    /// The slot for a server name: an exact name, else a wildcard covering its first label only (as a certificate's
    /// wildcard does, RFC 6125 §6.4.3), else the default; null when there is none (the handshake fails, like Kestrel's).
    /// </summary>
    public CertificateSlot? Select(string? serverName)
    {
        if (!string.IsNullOrEmpty(serverName) && (_exact.Count > 0 || _wildcard.Count > 0))
        {
            // Span lookups: no string is made per handshake for the trailing dot or the wildcard's parent name.
            var name = serverName.AsSpan();
            if (name[^1] == '.')
            {
                name = name[..^1];
            }
            if (_exact.GetAlternateLookup<ReadOnlySpan<char>>().TryGetValue(name, out var exact))
            {
                return exact;
            }
            var dot = name.IndexOf('.');
            if (dot > 0 && _wildcard.GetAlternateLookup<ReadOnlySpan<char>>().TryGetValue(name[(dot + 1)..], out var wildcard))
            {
                return wildcard;
            }
        }
        return _default;
    }

    // Kestrel's per-handshake callback; the options object is the slot's current one, swapped whole on reload.
    public ValueTask<SslServerAuthenticationOptions> OnConnection(TlsHandshakeCallbackContext context) =>
        Select(context.ClientHelloInfo.ServerName)?.Options is { } options
            ? ValueTask.FromResult(options)
            : ValueTask.FromException<SslServerAuthenticationOptions>(new AuthenticationException(
                $"listener {Listener} has no certificate for server name '{context.ClientHelloInfo.ServerName}' and no default Certificate"));
}

/// <summary>One certificate of a listener (its default, or one server name's) and the record of its reloads.</summary>
internal sealed class CertificateSlot
{
    private readonly SslProtocols _protocols;
    private readonly List<SslApplicationProtocol> _alpn;
    private volatile Served? _served;
    private byte[]? _lastAttempt;

    public CertificateSlot(string listener, string name, CertificateSource source, SslProtocols protocols, List<SslApplicationProtocol> alpn, DateTimeOffset now)
    {
        Listener = listener;
        Name = name;
        Source = source;
        _protocols = protocols;
        _alpn = alpn;
        var initial = source.Initial ?? LoadedCertificate.Load(source);
        _served = Serve(initial);
        _lastAttempt = initial.Fingerprint;
        LoadedAt = now;
    }

    private sealed record Served(LoadedCertificate Certificate, SslServerAuthenticationOptions Options);

    public string Listener { get; }

    public string Name { get; }

    public CertificateSource Source { get; }

    public LoadedCertificate? Current => _served?.Certificate;

    public SslServerAuthenticationOptions? Options => _served?.Options;

    public DateTimeOffset LoadedAt { get; private set; }

    public DateTimeOffset? LastReload { get; private set; }

    public string? LastResult { get; private set; }

    public string? LastError { get; private set; }

    public long Successes => Interlocked.Read(ref _successes);

    public long Failures => Interlocked.Read(ref _failures);

    private long _successes;
    private long _failures;

    // Called under the store's lock. retryFailed: load again files that failed before even if they did not change.
    internal ReloadOutcome TryReload(DateTimeOffset now, bool retryFailed)
    {
        byte[] fingerprint;
        try
        {
            fingerprint = LoadedCertificate.HashFiles(Source);
        }
        catch (CertificateFileException ex)
        {
            // A file missing for a moment (a replace by delete and create) is reported once, then waited out.
            return Fail(now, ex.Message, null, retryFailed);
        }
        if (_served is { } served && served.Certificate.Fingerprint.AsSpan().SequenceEqual(fingerprint))
        {
            _lastAttempt = fingerprint;
            if (LastResult == "failure")
            {
                // The files hold the served certificate again (a bad file was put back): the error is over.
                LastResult = "success";
                LastError = null;
                LastReload = now;
            }
            return ReloadOutcome.Unchanged;
        }
        if (!retryFailed && _lastAttempt is not null && _lastAttempt.AsSpan().SequenceEqual(fingerprint))
        {
            return ReloadOutcome.Unchanged;
        }
        _lastAttempt = fingerprint;
        LoadedCertificate loaded;
        try
        {
            loaded = LoadedCertificate.Load(Source);
        }
        catch (CertificateFileException ex)
        {
            return Fail(now, ex.Message, fingerprint, retryFailed: true);
        }
        _served = Serve(loaded);
        LoadedAt = now;
        LastReload = now;
        LastResult = "success";
        LastError = null;
        Interlocked.Increment(ref _successes);
        return ReloadOutcome.Replaced;
    }

    private ReloadOutcome Fail(DateTimeOffset now, string error, byte[]? fingerprint, bool retryFailed)
    {
        if (!retryFailed && LastResult == "failure" && LastError == error)
        {
            return ReloadOutcome.Unchanged;
        }
        if (fingerprint is not null)
        {
            _lastAttempt = fingerprint;
        }
        LastReload = now;
        LastResult = "failure";
        LastError = error;
        Interlocked.Increment(ref _failures);
        return ReloadOutcome.Failed;
    }

    private Served Serve(LoadedCertificate certificate) => new(certificate, new SslServerAuthenticationOptions
    {
        ServerCertificateContext = certificate.Context,
        EnabledSslProtocols = _protocols,
        ApplicationProtocols = _alpn,
        ClientCertificateRequired = false,
        CertificateRevocationCheckMode = System.Security.Cryptography.X509Certificates.X509RevocationMode.NoCheck,
    });
}
