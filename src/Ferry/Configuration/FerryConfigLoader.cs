using System.Collections;
using System.Net;
using System.Net.Security;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Configuration;

namespace Ferry.Configuration;

/// <summary>
/// Builds the layered configuration (JSON file, then FERRY__ environment variables, then command-line overrides) and
/// turns it into a validated <see cref="FerryConfig"/>. Binding is by hand so that every error names its path and
/// unknown keys (typos) are reported instead of silently ignored.
/// </summary>
internal static class FerryConfigLoader
{
    private static readonly string[] RootKeys = ["Listeners", "Admin", "ProxyStatus", "Limits", "RateLimiterPolicies", "Routes", "Clusters", "AccessLog", "Metrics", "Tracing", "Restart"];
    private static readonly string[] RootLimitsKeys = ["MaxRequestBodySize"];
    private static readonly string[] ListenerKeys =
        ["Address", "Protocols", "TrustedProxies", "ProxyProtocol", "AmbiguousPaths", "Certificate", "Sni", "SslProtocols", "Hsts", "RedirectToHttps"];
    private static readonly string[] CertificateKeys = ["Path", "KeyPath", "Password"];
    private static readonly string[] SniKeys = ["Certificate"];
    private static readonly string[] HstsKeys = ["Enabled", "MaxAge", "IncludeSubDomains", "Preload"];
    private static readonly string[] RedirectToHttpsKeys = ["Enabled", "Port"];
    private static readonly string[] AdminKeys = ["Address", "Enabled", "Token", "AllowedHosts"];
    private static readonly string[] RestartKeys = ["ControlSocket", "ShutdownTimeout", "DrainGrace"];
    private static readonly string[] ProxyStatusKeys = ["IncludeDetails"];
    private static readonly string[] RouteKeys = ["ClusterId", "Order", "Match", "PathRemovePrefix", "Upgrades", "Transforms", "MaxRequestBodySize", "RateLimiterPolicy"];
    private static readonly string[] RateLimiterCommonKeys = ["Kind", "Key", "Name", "QueueLimit", "QueueProcessingOrder", "MaxPartitions"];
    private static readonly Dictionary<RateLimiterKind, string[]> RateLimiterKindKeys = new()
    {
        [RateLimiterKind.TokenBucket] = ["TokenLimit", "TokensPerPeriod", "ReplenishmentPeriod"],
        [RateLimiterKind.FixedWindow] = ["PermitLimit", "Window"],
        [RateLimiterKind.SlidingWindow] = ["PermitLimit", "Window", "SegmentsPerWindow"],
        [RateLimiterKind.Concurrency] = ["PermitLimit"],
    };
    private static readonly string[] MatchKeys = ["Hosts", "Path", "PathPrefix", "Methods"];
    private static readonly string[] ClusterKeys =
        ["LoadBalancingPolicy", "Destinations", "KeepAlive", "Timeouts", "Limits", "Forwarding", "Replay",
         "HealthCheck", "SlowStart", "Panic", "MaxConnections", "Queue", "AdaptiveLimit", "Retry", "Hash", "SourceAddresses", "Dns", "Tls"];
    private static readonly string[] TlsKeys = ["ServerName", "CaFile", "ClientCertificate", "DangerousAcceptAnyServerCertificate"];
    private static readonly string[] ClientCertificateKeys = ["Path", "KeyPath", "Password"];
    private static readonly string[] DestinationTlsKeys = ["ServerName"];
    private static readonly string[] HealthCheckKeys = ["Passive", "Active"];
    private static readonly string[] PassiveKeys = ["Enabled", "MaxFailures", "FailureWindow", "ReactivationPeriod", "FailureStatuses"];
    private static readonly string[] ActiveKeys = ["Enabled", "Interval", "Timeout", "Method", "Path", "ExpectedStatuses", "Rise", "Fall", "Jitter"];
    private static readonly string[] PanicKeys = ["Enabled"];
    private static readonly string[] QueueKeys = ["Size", "Timeout"];
    private static readonly string[] AdaptiveLimitKeys = ["Enabled", "Min", "Max", "Initial"];
    private static readonly string[] DnsKeys = ["RefreshInterval"];
    private static readonly string[] RetryKeys = ["Tries", "Timeout", "OnErrors", "Statuses"];
    private static readonly string[] HashKeys = ["Key", "Name", "VirtualNodes"];
    private static readonly string[] DestinationKeys = ["Address", "Weight", "Backup", "Tls"];
    private static readonly string[] KeepAliveKeys = ["MaxIdle", "IdleTimeout", "AutoIdleTimeoutCap", "MaxRequests", "MaxLifetime"];
    private static readonly string[] TimeoutsKeys = ["Connect", "SendRequest", "ResponseHead", "BodyInactivity", "TunnelIdle"];
    private static readonly string[] LimitsKeys = ["MaxResponseHeaderBytes", "MaxResponseHeaderCount"];
    private static readonly string[] ForwardingKeys = ["PreserveHost", "XForwarded"];
    private static readonly string[] ReplayKeys = ["MaxBodySize", "NonIdempotent"];
    private static readonly string[] AccessLogKeys = ["Enabled", "Format", "Path", "BufferSize"];
    private static readonly string[] TelemetryKeys = ["Enabled", "Otlp"];
    private static readonly string[] OtlpKeys = ["Endpoint", "Protocol", "Interval"];

    // 1000 keeps smooth weighted round robin's running sums small and is already finer than any real capacity ratio.
    private const int MaxWeight = 1000;

    /// <summary>The listener, route and cluster name used by `ferry proxy --listen ... --to ...`.</summary>
    public const string ProxyCommandName = "proxy";

    /// <summary>
    /// Layers, later wins: the JSON file (if given; it must exist), FERRY__ environment variables from
    /// <paramref name="environment"/> (the process environment when null), then command-line arguments
    /// ("--Clusters:api:KeepAlive:MaxIdle=64"). Malformed JSON throws <see cref="InvalidDataException"/> from here.
    /// </summary>
    public static IConfigurationRoot Build(string? jsonFile, IEnumerable<string> commandLineArgs, IDictionary? environment = null)
    {
        var builder = new ConfigurationBuilder();
        if (jsonFile is not null)
        {
            var fullPath = Path.GetFullPath(jsonFile);
            if (!File.Exists(fullPath))
            {
                throw new FileNotFoundException($"Configuration file '{fullPath}' does not exist.", fullPath);
            }

            builder.AddJsonFile(fullPath, optional: false, reloadOnChange: false);
        }

        builder.Add(new FerryEnvironmentVariablesSource(environment ?? Environment.GetEnvironmentVariables()));
        builder.AddCommandLine([.. commandLineArgs]);
        return builder.Build();
    }

    /// <summary>
    /// The settings `ferry proxy --listen ADDRESS --to URI... [--admin ADDRESS | --no-admin]` stands for: one
    /// listener, one catch-all route and one cluster named "proxy", destinations "1".."n", every other setting at its
    /// default. The command loads them through <see cref="Load"/>, so it validates and defaults exactly like a file.
    /// </summary>
    public static Dictionary<string, string?> ProxyCommandSettings(string listen, IReadOnlyList<string> destinations, string? admin = null, bool adminEnabled = true,
        string? caFile = null, bool insecure = false, string? certificate = null, string? key = null)
    {
        var settings = new Dictionary<string, string?>
        {
            [$"Listeners:{ProxyCommandName}:Address"] = ProxyListenAddress(listen).Address,
            [$"Routes:{ProxyCommandName}:ClusterId"] = ProxyCommandName,
        };
        if (certificate is not null)
        {
            settings[$"Listeners:{ProxyCommandName}:Certificate:Path"] = certificate;
            settings[$"Listeners:{ProxyCommandName}:Certificate:KeyPath"] = key;
        }
        for (var i = 0; i < destinations.Count; i++)
        {
            settings[$"Clusters:{ProxyCommandName}:Destinations:{i + 1}:Address"] = destinations[i];
        }

        if (destinations.Count == 0)
        {
            // Keeps the cluster present so that the error is "at least one destination", not "unknown cluster".
            settings[$"Clusters:{ProxyCommandName}:Destinations"] = "";
        }

        if (caFile is not null)
        {
            settings[$"Clusters:{ProxyCommandName}:Tls:CaFile"] = caFile;
        }

        if (insecure)
        {
            settings[$"Clusters:{ProxyCommandName}:Tls:DangerousAcceptAnyServerCertificate"] = "true";
        }

        if (!adminEnabled)
        {
            settings["Admin:Enabled"] = "false";
        }
        else if (admin is not null)
        {
            settings["Admin:Address"] = admin;
        }

        return settings;
    }

    /// <summary>`--listen` of `ferry proxy`: an address, optionally written as http://address or https://address.</summary>
    public static (string Address, bool Https) ProxyListenAddress(string listen)
    {
        var text = listen.Trim().TrimEnd('/');
        if (text.StartsWith("https://", StringComparison.OrdinalIgnoreCase))
        {
            return (text["https://".Length..], true);
        }
        return text.StartsWith("http://", StringComparison.OrdinalIgnoreCase) ? (text["http://".Length..], false) : (text, false);
    }

    public static ConfigLoadResult Load(IConfiguration configuration)
    {
        var reader = new ConfigReader { BaseDirectory = ConfigDirectory(configuration) };
        reader.WarnUnknownKeys(configuration, RootKeys);

        var listeners = ReadListeners(reader, configuration);
        var admin = ReadAdmin(reader, configuration, listeners);
        admin = admin with { Token = ReadAdminToken(reader, configuration) };

        var proxyStatusSection = reader.Section(configuration, "ProxyStatus");
        reader.WarnUnknownKeys(proxyStatusSection, ProxyStatusKeys);
        var proxyStatus = new ProxyStatusConfig(
            reader.Bool(proxyStatusSection, "IncludeDetails", ProxyStatusConfig.Default.IncludeDetails));

        var clusters = new Dictionary<string, ClusterConfig>(StringComparer.OrdinalIgnoreCase);
        foreach (var entry in reader.Entries(configuration, "Clusters"))
        {
            clusters[entry.Key] = ReadCluster(reader, entry);
        }

        var limitsSection = reader.Section(configuration, "Limits");
        reader.WarnUnknownKeys(limitsSection, RootLimitsKeys);
        var limits = new RequestLimitsConfig(reader.Size(limitsSection, "MaxRequestBodySize", RequestLimitsConfig.DefaultMaxRequestBodySize));

        // Declared names include the policies with errors: a route naming one is not reported a second time.
        var rateLimiterPolicies = new Dictionary<string, RateLimiterPolicyConfig>(StringComparer.OrdinalIgnoreCase);
        var declaredPolicies = new List<string>();
        foreach (var entry in reader.Entries(configuration, "RateLimiterPolicies"))
        {
            declaredPolicies.Add(entry.Key);
            if (ReadRateLimiterPolicy(reader, entry) is { } policy)
            {
                rateLimiterPolicies[entry.Key] = policy;
            }
        }

        var routes = new List<RouteConfig>();
        foreach (var entry in reader.Entries(configuration, "Routes"))
        {
            routes.Add(ReadRoute(reader, entry, clusters, limits, declaredPolicies));
        }

        // Counted on the configuration, not on the valid listeners: an invalid listener already has its own error.
        if (routes.Count > 0 && !configuration.GetSection("Listeners").GetChildren().Any())
        {
            reader.Error("Listeners", "at least one listener is required when routes are defined");
        }

        foreach (var cluster in clusters.Values)
        {
            if (!routes.Any(r => string.Equals(r.ClusterId, cluster.ClusterId, StringComparison.OrdinalIgnoreCase)))
            {
                reader.Warning($"Clusters:{cluster.ClusterId}", "not used by any route");
            }
        }

        foreach (var policy in rateLimiterPolicies.Values)
        {
            if (!routes.Any(r => string.Equals(r.RateLimiterPolicy, policy.Name, StringComparison.OrdinalIgnoreCase)))
            {
                reader.Warning($"RateLimiterPolicies:{policy.Name}", "not used by any route");
            }
        }

        routes.Sort(RouteOrder.Compare);
        var (accessLog, metrics, tracing) = ReadObservability(reader, configuration);
        var restart = ReadRestart(reader, configuration);

        var config = reader.Errors.Count == 0
            ? new FerryConfig(listeners.Select(l => l.Config).ToArray(), admin, proxyStatus, routes, clusters)
            {
                Limits = limits,
                RateLimiterPolicies = rateLimiterPolicies,
                AccessLog = accessLog,
                Metrics = metrics,
                Tracing = tracing,
                Restart = restart,
            }
            : null;
        return new ConfigLoadResult(config, reader.Errors, reader.Warnings);
    }

    // The directory of the JSON file among the configuration's sources (the last one if several).
    private static string? ConfigDirectory(IConfiguration configuration)
    {
        if (configuration is not IConfigurationRoot root)
        {
            return null;
        }
        string? directory = null;
        foreach (var provider in root.Providers)
        {
            if (provider is Microsoft.Extensions.Configuration.Json.JsonConfigurationProvider { Source: { Path: { } path, FileProvider: Microsoft.Extensions.FileProviders.PhysicalFileProvider files } })
            {
                directory = Path.GetDirectoryName(Path.Combine(files.Root, path));
            }
            else if (provider is ChainedConfigurationProvider { Configuration: { } inner } && ConfigDirectory(inner) is { } innerDirectory)
            {
                directory = innerDirectory;
            }
        }
        return directory;
    }

    private static List<(ListenerConfig Config, string Path, string Text)> ReadListeners(ConfigReader reader, IConfiguration root)
    {
        var listeners = new List<(ListenerConfig Config, string Path, string Text)>();
        foreach (var entry in reader.Entries(root, "Listeners"))
        {
            reader.WarnUnknownKeys(entry, ListenerKeys);
            var protocols = reader.Choice(entry, "Protocols", ListenerProtocols.Http1, "a listener protocol",
                ("Http1", ListenerProtocols.Http1), ("Http2", ListenerProtocols.Http2), ("Http1AndHttp2", ListenerProtocols.Http1AndHttp2));
            var tls = ReadListenerTls(reader, entry);
            if (tls is null && protocols == ListenerProtocols.Http1AndHttp2)
            {
                reader.Error(entry.GetSection("Protocols").Path,
                    "Http1AndHttp2 needs TLS (a Certificate or Sni): without ALPN a client cannot say which it speaks; Http2 alone is HTTP/2 with prior knowledge (h2c)");
            }
            var hsts = ReadHsts(reader, entry, tls is not null);
            var redirect = ReadRedirectToHttps(reader, entry, tls is not null);
            var trusted = ReadTrustedProxies(reader, entry);
            var proxyProtocol = reader.Bool(entry, "ProxyProtocol", false);
            if (proxyProtocol && trusted.Count == 0)
            {
                // Without a trusted sender every connection would be refused; with any sender trusted, any client
                // could claim any address.
                reader.Error(entry.GetSection("ProxyProtocol").Path, "requires TrustedProxies: the addresses of the load balancers that send the header");
            }
            var ambiguousPaths = reader.Choice(entry, "AmbiguousPaths", AmbiguousPaths.Reject, "an ambiguous path action",
                ("Reject", AmbiguousPaths.Reject), ("Normalize", AmbiguousPaths.Normalize));
            if (ReadEndPoint(reader, entry, required: true) is { } endPoint)
            {
                var listener = new ListenerConfig(entry.Key, endPoint.EndPoint, protocols)
                {
                    TrustedProxies = trusted,
                    ProxyProtocol = proxyProtocol,
                    AmbiguousPaths = ambiguousPaths,
                    Tls = tls,
                    Hsts = hsts,
                    RedirectToHttps = redirect,
                };
                listeners.Add((listener, endPoint.Path, endPoint.Text));
            }
        }

        for (var i = 0; i < listeners.Count; i++)
        {
            for (var j = 0; j < i; j++)
            {
                ReportConflict(reader, listeners[i].Path, listeners[i].Text, listeners[i].Config.EndPoint,
                    listeners[j].Path, listeners[j].Text, listeners[j].Config.EndPoint);
            }
        }

        return listeners;
    }

    // Certificate and Sni make a listener HTTPS; null when it has neither.
    private static ListenerTlsConfig? ReadListenerTls(ConfigReader reader, IConfigurationSection listener)
    {
        var defaultCertificate = ReadCertificate(reader, listener, "Certificate");
        var sni = new List<SniCertificate>();
        foreach (var entry in reader.Entries(listener, "Sni"))
        {
            reader.WarnUnknownKeys(entry, SniKeys);
            var host = entry.Key.TrimEnd('.').ToLowerInvariant();
            if (!IsSniHost(host))
            {
                reader.Error(entry.Path, $"'{entry.Key}' is not a server name (a DNS name, or '*.' and a DNS name); the listener's Certificate is the default for the others");
                continue;
            }
            if (!entry.GetSection("Certificate").Exists())
            {
                reader.Error(entry.GetSection("Certificate").Path, "required: the certificate for this server name (Path, KeyPath, Password)");
                continue;
            }
            if (sni.Any(s => s.Host == host))
            {
                reader.Error(entry.Path, $"'{host}' is listed twice");
                continue;
            }
            if (ReadCertificate(reader, entry, "Certificate") is { } certificate)
            {
                if (certificate.Initial is { } loaded && !loaded.Leaf.MatchesHostname(host.StartsWith("*.", StringComparison.Ordinal) ? "sni-check" + host[1..] : host))
                {
                    reader.Warning(entry.GetSection("Certificate").Path, $"the certificate ({loaded.Subject}) is not valid for '{host}': clients will refuse it");
                }
                sni.Add(new SniCertificate(host, certificate));
            }
        }
        var sslProtocolsSection = listener.GetSection("SslProtocols");
        var sslProtocols = ListenerTlsConfig.DefaultSslProtocols;
        if (reader.List(listener, "SslProtocols") is { Count: > 0 } items)
        {
            sslProtocols = System.Security.Authentication.SslProtocols.None;
            foreach (var (path, text) in items)
            {
                if (text.Equals("Tls12", StringComparison.OrdinalIgnoreCase))
                {
                    sslProtocols |= System.Security.Authentication.SslProtocols.Tls12;
                }
                else if (text.Equals("Tls13", StringComparison.OrdinalIgnoreCase))
                {
                    sslProtocols |= System.Security.Authentication.SslProtocols.Tls13;
                }
                else if (text is "Tls" or "Tls11" or "Ssl3" or "Ssl2")
                {
                    reader.Error(path, $"'{text}' is not offered: TLS 1.0 and 1.1 are deprecated (RFC 8996); use Tls12 and Tls13");
                }
                else
                {
                    reader.Error(path, $"'{text}' is not a TLS version (Tls12, Tls13)");
                }
            }
            if (sslProtocols == System.Security.Authentication.SslProtocols.None)
            {
                sslProtocols = ListenerTlsConfig.DefaultSslProtocols;
            }
        }
        if (defaultCertificate is null && sni.Count == 0)
        {
            if (sslProtocolsSection.Exists())
            {
                reader.Warning(sslProtocolsSection.Path, "has no effect: the listener has no Certificate or Sni");
            }
            // A listener whose only certificates failed to load already has its errors; it is not plain HTTP.
            return listener.GetSection("Certificate").Exists() || listener.GetSection("Sni").Exists()
                ? new ListenerTlsConfig(null, [], sslProtocols)
                : null;
        }
        return new ListenerTlsConfig(defaultCertificate, sni, sslProtocols);
    }

    private static bool IsSniHost(string host)
    {
        var name = host.StartsWith("*.", StringComparison.Ordinal) ? host[2..] : host;
        return name.Length > 0 && Uri.CheckHostName(name) == UriHostNameType.Dns && !name.Contains('*');
    }

    // { Path, KeyPath, Password }, loaded now: a file that is missing, does not parse, is encrypted with another
    // password or holds the key of another certificate is an error here rather than a failed handshake later.
    private static CertificateSource? ReadCertificate(ConfigReader reader, IConfiguration parent, string key)
    {
        var section = reader.Section(parent, key);
        reader.WarnUnknownKeys(section, CertificateKeys);
        if (!section.GetChildren().Any())
        {
            return null;
        }
        var path = reader.RequiredString(section, "Path");
        if (path is null)
        {
            return null;
        }
        var keyPath = reader.String(section, "KeyPath");
        var source = new CertificateSource(section.Path, reader.FilePath(path), keyPath is null ? null : reader.FilePath(keyPath), reader.String(section, "Password"));
        try
        {
            return source with { Initial = LoadedCertificate.Load(source) };
        }
        catch (CertificateFileException ex)
        {
            reader.Error(section.Path, ex.Message);
            return null;
        }
    }

    private static HstsConfig? ReadHsts(ConfigReader reader, IConfiguration listener, bool https)
    {
        var section = reader.Section(listener, "Hsts");
        reader.WarnUnknownKeys(section, HstsKeys);
        var enabled = reader.Bool(section, "Enabled", false);
        var hsts = new HstsConfig(
            reader.Duration(section, "MaxAge", HstsConfig.DefaultMaxAge),
            reader.Bool(section, "IncludeSubDomains", false),
            reader.Bool(section, "Preload", false));
        if (!enabled)
        {
            return null;
        }
        if (!https)
        {
            // RFC 6797 §7.2: a browser ignores the header over plain HTTP.
            reader.Warning(section.Path, "has no effect: the listener has no Certificate or Sni, and browsers ignore HSTS over plain HTTP");
            return null;
        }
        if (hsts.Preload && (!hsts.IncludeSubDomains || hsts.MaxAge < HstsConfig.DefaultMaxAge))
        {
            // hstspreload.org refuses a site whose header lacks includeSubDomains or a max-age of a year.
            reader.Warning(section.GetSection("Preload").Path, "preload lists require IncludeSubDomains and a MaxAge of at least one year (8760h)");
        }
        return hsts;
    }

    private static RedirectToHttpsConfig? ReadRedirectToHttps(ConfigReader reader, IConfiguration listener, bool https)
    {
        var section = reader.Section(listener, "RedirectToHttps");
        reader.WarnUnknownKeys(section, RedirectToHttpsKeys);
        var enabled = reader.Bool(section, "Enabled", false);
        var port = reader.Int(section, "Port", RedirectToHttpsConfig.DefaultPort, min: 1, max: 65535);
        if (!enabled)
        {
            return null;
        }
        if (https)
        {
            reader.Error(section.Path, "a listener with a Certificate cannot redirect to https: it is https already");
            return null;
        }
        return new RedirectToHttpsConfig(port);
    }

    // Addresses ("10.0.0.5") or CIDR blocks ("10.0.0.0/8", "fd00::/8") of the proxies in front of this listener.
    private static IReadOnlyList<IPNetwork> ReadTrustedProxies(ConfigReader reader, IConfiguration listener)
    {
        var networks = new List<IPNetwork>();
        foreach (var (path, text) in reader.List(listener, "TrustedProxies"))
        {
            if (text.Contains('/'))
            {
                // "10.0.0.1/8" is refused rather than read as 10.0.0.0/8: bits after the prefix hint at a mistake.
                if (IPNetwork.TryParse(text, out var network) && IPAddress.TryParse(text.AsSpan(0, text.IndexOf('/')), out var start)
                    && start.Equals(network.BaseAddress))
                {
                    networks.Add(network);
                }
                else
                {
                    reader.Error(path, $"'{text}' is not a CIDR block (e.g. 10.0.0.0/8) with no bits set after the prefix");
                }
            }
            else if (IPAddress.TryParse(text, out var address))
            {
                networks.Add(new IPNetwork(address, address.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork ? 32 : 128));
            }
            else
            {
                reader.Error(path, $"'{text}' is not an IP address or CIDR block");
            }
        }
        return networks.Count == 0 ? [] : [.. networks.Distinct()];
    }

    private static RestartConfig ReadRestart(ConfigReader reader, IConfiguration root)
    {
        var section = reader.Section(root, "Restart");
        reader.WarnUnknownKeys(section, RestartKeys);
        var controlSocket = reader.String(section, "ControlSocket");
        if (controlSocket is not null && !Path.IsPathFullyQualified(controlSocket))
        {
            // The successor finds it by the same name whatever its working directory.
            reader.Error(section.GetSection("ControlSocket").Path, $"'{controlSocket}' must be an absolute path");
            controlSocket = null;
        }
        return new RestartConfig(
            controlSocket,
            reader.Duration(section, "ShutdownTimeout", RestartConfig.Default.ShutdownTimeout),
            reader.Duration(section, "DrainGrace", RestartConfig.Default.DrainGrace));
    }

    private static AdminConfig ReadAdmin(ConfigReader reader, IConfiguration root,
        IReadOnlyList<(ListenerConfig Config, string Path, string Text)> listeners)
    {
        var section = reader.Section(root, "Admin");
        reader.WarnUnknownKeys(section, AdminKeys);
        var enabled = reader.Bool(section, "Enabled", AdminConfig.Default.Enabled);
        var endPoint = ReadEndPoint(reader, section, required: false);
        var admin = new AdminConfig(enabled, endPoint?.EndPoint ?? AdminConfig.Default.EndPoint)
        {
            AllowedHosts = ReadAllowedHosts(reader, section),
        };
        if (enabled)
        {
            var path = section.GetSection("Address").Path;
            var text = endPoint?.Text ?? admin.EndPoint.ToString();
            foreach (var listener in listeners)
            {
                ReportConflict(reader, path, text, admin.EndPoint, listener.Path, listener.Text, listener.Config.EndPoint);
            }
        }

        return admin;
    }

    private static (IPEndPoint EndPoint, string Path, string Text)? ReadEndPoint(ConfigReader reader, IConfiguration section, bool required)
    {
        var text = required ? reader.RequiredString(section, "Address") : reader.String(section, "Address");
        if (text is null)
        {
            return null;
        }

        var path = section.GetSection("Address").Path;
        if (!ListenAddress.TryParse(text, out var endPoint))
        {
            reader.Error(path, $"'{text}' is not a listen address ({ListenAddress.Expected})");
            return null;
        }

        return (endPoint, path, text);
    }

    private static void ReportConflict(ConfigReader reader, string path, string text, IPEndPoint endPoint,
        string otherPath, string otherText, IPEndPoint otherEndPoint)
    {
        if (endPoint.Equals(otherEndPoint) && endPoint.Port != 0)
        {
            reader.Error(path, $"'{text}' is already used by {otherPath}");
        }
        else if (ListenAddress.Conflict(endPoint, otherEndPoint))
        {
            reader.Error(path, $"'{text}' overlaps {otherPath} ('{otherText}'): both cannot be bound");
        }
    }

    private static ClusterConfig ReadCluster(ConfigReader reader, IConfigurationSection section)
    {
        reader.WarnUnknownKeys(section, ClusterKeys);
        var clusterId = section.Key;

        var policy = LoadBalancingPolicies.Default;
        if (reader.String(section, "LoadBalancingPolicy") is { } policyText)
        {
            var known = LoadBalancingPolicies.All.FirstOrDefault(p => p.Equals(policyText, StringComparison.OrdinalIgnoreCase));
            if (known is null)
            {
                reader.Error(section.GetSection("LoadBalancingPolicy").Path,
                    $"'{policyText}' is not a load balancing policy ({string.Join(", ", LoadBalancingPolicies.All)})");
            }
            else
            {
                policy = known;
            }
        }

        var destinations = new List<DestinationConfig>();
        foreach (var entry in reader.Entries(section, "Destinations"))
        {
            if (ReadDestination(reader, entry) is { } destination)
            {
                destinations.Add(destination);
            }
        }

        var destinationsPath = section.GetSection("Destinations").Path;
        if (!section.GetSection("Destinations").GetChildren().Any())
        {
            reader.Error(destinationsPath, "at least one destination is required");
        }
        else if (destinations.Count > 0 && destinations.All(d => d.Backup))
        {
            // Backups are used only when every primary is unavailable; with no primary the intent is unclear.
            reader.Error(destinationsPath, "every destination is a backup; at least one must not be");
        }

        return new ClusterConfig(clusterId, destinations, policy, ReadKeepAlive(reader, section),
            ReadTimeouts(reader, section), ReadLimits(reader, section), ReadForwarding(reader, section), ReadReplay(reader, section))
        {
            HealthCheck = ReadHealthCheck(reader, section),
            SlowStart = reader.Duration(section, "SlowStart", TimeSpan.Zero),
            Panic = ReadPanic(reader, section),
            ConnectionLimit = ReadConnectionLimit(reader, section),
            Retry = ReadRetry(reader, section),
            Hash = ReadHash(reader, section, policy),
            SourceAddresses = ReadSourceAddresses(reader, section),
            Dns = ReadDns(reader, section),
            Tls = ReadTls(reader, section, destinations.Any(d => d.IsHttps)),
        };
    }

    private static TlsConfig ReadTls(ConfigReader reader, IConfiguration cluster, bool anyHttps)
    {
        var section = reader.Section(cluster, "Tls");
        reader.WarnUnknownKeys(section, TlsKeys);
        if (!section.GetChildren().Any())
        {
            return TlsConfig.Default;
        }
        if (!anyHttps)
        {
            reader.Warning(section.Path, "has no effect: no destination of this cluster is https");
        }
        var serverName = reader.String(section, "ServerName");
        if (serverName is not null && Uri.CheckHostName(serverName) != UriHostNameType.Dns)
        {
            reader.Error(section.GetSection("ServerName").Path, $"'{serverName}' is not a DNS host name");
            serverName = null;
        }
        var accept = reader.Bool(section, "DangerousAcceptAnyServerCertificate", defaultValue: false);
        X509Certificate2Collection? trusted = null;
        if (reader.String(section, "CaFile") is { } caFile)
        {
            var path = section.GetSection("CaFile").Path;
            try
            {
                trusted = [];
                trusted.ImportFromPemFile(reader.FilePath(caFile));
                if (trusted.Count == 0)
                {
                    reader.Error(path, $"'{caFile}' holds no PEM certificate");
                }
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or CryptographicException)
            {
                reader.Error(path, $"'{caFile}' cannot be read as a PEM CA bundle: {ex.Message}");
            }
            if (accept)
            {
                reader.Warning(path, "has no effect with DangerousAcceptAnyServerCertificate");
            }
        }
        if (accept)
        {
            reader.Warning(section.GetSection("DangerousAcceptAnyServerCertificate").Path,
                "Ferry does not check who it talks to: anyone on the path can read and change the traffic");
        }
        return new TlsConfig(serverName, trusted, ReadClientCertificate(reader, section), accept);
    }

    // A PEM certificate with its key (in KeyPath, or in the same file), or a PKCS#12 file (.pfx, .p12); Password
    // decrypts an encrypted PEM key or the PKCS#12 file.
    private static SslStreamCertificateContext? ReadClientCertificate(ConfigReader reader, IConfiguration tls)
    {
        var section = reader.Section(tls, "ClientCertificate");
        reader.WarnUnknownKeys(section, ClientCertificateKeys);
        if (!section.GetChildren().Any())
        {
            return null;
        }
        var path = reader.RequiredString(section, "Path");
        if (path is null)
        {
            return null;
        }
        path = reader.FilePath(path);
        var keyPath = reader.String(section, "KeyPath") is { } keyText ? reader.FilePath(keyText) : null;
        var password = reader.String(section, "Password");
        try
        {
            X509Certificate2 certificate;
            if (keyPath is null && (path.EndsWith(".pfx", StringComparison.OrdinalIgnoreCase) || path.EndsWith(".p12", StringComparison.OrdinalIgnoreCase)))
            {
                certificate = X509CertificateLoader.LoadPkcs12FromFile(path, password);
            }
            else
            {
                certificate = password is null
                    ? X509Certificate2.CreateFromPemFile(path, keyPath)
                    : X509Certificate2.CreateFromEncryptedPemFile(path, password, keyPath);
            }
            if (!certificate.HasPrivateKey)
            {
                reader.Error(section.GetSection("Path").Path, $"'{path}' has no private key");
                return null;
            }
            // One context for every connection of the cluster: the chain is built once, and the TLS session cache
            // sees the same client credentials each time.
            return SslStreamCertificateContext.Create(certificate, additionalCertificates: null, offline: true);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or CryptographicException or ArgumentException)
        {
            reader.Error(section.Path, $"the client certificate cannot be loaded: {ex.Message}");
            return null;
        }
    }

    private static DnsConfig ReadDns(ConfigReader reader, IConfiguration cluster)
    {
        var section = reader.Section(cluster, "Dns");
        reader.WarnUnknownKeys(section, DnsKeys);
        var interval = reader.Duration(section, "RefreshInterval", DnsConfig.Default.RefreshInterval);
        if (interval < DnsConfig.Floor || interval > DnsConfig.Ceiling)
        {
            reader.Error(section.GetSection("RefreshInterval").Path, "must be between 1s and 1h");
            interval = DnsConfig.Default.RefreshInterval;
        }
        return new DnsConfig(interval);
    }

    // IP addresses of this host, e.g. ["10.0.0.5", "10.0.0.6"]; whether they are local shows at the first connect.
    private static System.Net.IPAddress[] ReadSourceAddresses(ConfigReader reader, IConfiguration cluster)
    {
        var addresses = new List<System.Net.IPAddress>();
        foreach (var (path, text) in reader.List(cluster, "SourceAddresses"))
        {
            if (System.Net.IPAddress.TryParse(text, out var address) && !address.Equals(System.Net.IPAddress.Any)
                && !address.Equals(System.Net.IPAddress.IPv6Any))
            {
                addresses.Add(address);
            }
            else
            {
                reader.Error(path, $"'{text}' is not a local IP address");
            }
        }
        return [.. addresses.Distinct()];
    }

    private static HealthCheckConfig ReadHealthCheck(ConfigReader reader, IConfiguration cluster)
    {
        var section = reader.Section(cluster, "HealthCheck");
        reader.WarnUnknownKeys(section, HealthCheckKeys);

        var passive = reader.Section(section, "Passive");
        reader.WarnUnknownKeys(passive, PassiveKeys);
        var p = PassiveHealthConfig.Default;
        var passiveConfig = new PassiveHealthConfig(
            Enabled: reader.Bool(passive, "Enabled", p.Enabled),
            MaxFailures: reader.Int(passive, "MaxFailures", p.MaxFailures, min: 1),
            FailureWindow: reader.Duration(passive, "FailureWindow", p.FailureWindow, positive: true),
            ReactivationPeriod: reader.Duration(passive, "ReactivationPeriod", p.ReactivationPeriod, positive: true),
            FailureStatuses: ReadStatuses(reader, passive, "FailureStatuses", 500));

        var active = reader.Section(section, "Active");
        reader.WarnUnknownKeys(active, ActiveKeys);
        var a = ActiveHealthConfig.Default;
        var interval = reader.Duration(active, "Interval", a.Interval, positive: true);
        var timeout = reader.Duration(active, "Timeout", a.Timeout, positive: true);
        if (timeout > interval)
        {
            // A check still running when the next one is due would overlap it on another connection.
            reader.Error(active.GetSection("Timeout").Path, "must not exceed Interval");
        }
        var method = reader.String(active, "Method") ?? a.Method;
        if (!method.All(IsTokenChar))
        {
            reader.Error(active.GetSection("Method").Path, $"'{method}' is not an HTTP method");
        }
        var path = ReadPath(reader, active, "Path") ?? a.Path;
        var expected = ReadStatusRanges(reader, active, "ExpectedStatuses") ?? a.ExpectedStatuses;
        var jitter = a.Jitter;
        if (reader.String(active, "Jitter") is { } jitterText)
        {
            if (!double.TryParse(jitterText, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out jitter)
                || jitter < 0 || jitter > 0.5)
            {
                reader.Error(active.GetSection("Jitter").Path, $"'{jitterText}' must be a number between 0 and 0.5 (a fraction of Interval)");
                jitter = a.Jitter;
            }
        }
        var activeConfig = new ActiveHealthConfig(
            Enabled: reader.Bool(active, "Enabled", a.Enabled),
            Interval: interval,
            Timeout: timeout,
            Method: HttpMethods.GetCanonicalizedValue(method),
            Path: path,
            ExpectedStatuses: expected,
            Rise: reader.Int(active, "Rise", a.Rise, min: 1, max: 100),
            Fall: reader.Int(active, "Fall", a.Fall, min: 1, max: 100),
            Jitter: jitter);
        return new HealthCheckConfig(passiveConfig, activeConfig);
    }

    private static PanicConfig ReadPanic(ConfigReader reader, IConfiguration cluster)
    {
        var section = reader.Section(cluster, "Panic");
        reader.WarnUnknownKeys(section, PanicKeys);
        return new PanicConfig(reader.Bool(section, "Enabled", PanicConfig.Default.Enabled));
    }

    private static ConnectionLimitConfig ReadConnectionLimit(ConfigReader reader, IConfiguration cluster)
    {
        var defaults = ConnectionLimitConfig.Default;
        var max = reader.Int(cluster, "MaxConnections", defaults.MaxConnections, min: 0);
        var adaptive = ReadAdaptiveLimit(reader, cluster);
        var queue = reader.Section(cluster, "Queue");
        reader.WarnUnknownKeys(queue, QueueKeys);
        if (max == 0 && !adaptive.Enabled && queue.GetChildren().Any())
        {
            reader.Warning(queue.Path, "has no effect without MaxConnections or AdaptiveLimit");
        }
        return new ConnectionLimitConfig(
            MaxConnections: max,
            QueueSize: reader.Int(queue, "Size", defaults.QueueSize, min: 0),
            QueueTimeout: reader.Duration(queue, "Timeout", defaults.QueueTimeout, positive: true))
        {
            Adaptive = adaptive,
        };
    }

    private static AdaptiveLimitConfig ReadAdaptiveLimit(ConfigReader reader, IConfiguration cluster)
    {
        var section = reader.Section(cluster, "AdaptiveLimit");
        reader.WarnUnknownKeys(section, AdaptiveLimitKeys);
        var defaults = AdaptiveLimitConfig.Default;
        var min = reader.Int(section, "Min", defaults.Min, min: 1, max: 100_000);
        var max = reader.Int(section, "Max", defaults.Max, min: 1, max: 100_000);
        if (max < min)
        {
            reader.Error(section.Path, $"Max ({max}) is below Min ({min})");
            max = min;
        }
        return new AdaptiveLimitConfig(
            Enabled: reader.Bool(section, "Enabled", defaults.Enabled),
            Min: min,
            Max: max,
            Initial: reader.Int(section, "Initial", defaults.Initial, min: 1, max: 100_000));
    }

    private static RetryConfig ReadRetry(ConfigReader reader, IConfiguration cluster)
    {
        var section = reader.Section(cluster, "Retry");
        reader.WarnUnknownKeys(section, RetryKeys);
        var defaults = RetryConfig.Default;
        return new RetryConfig(
            Tries: reader.Int(section, "Tries", defaults.Tries, min: 1, max: 100),
            Timeout: reader.Duration(section, "Timeout", defaults.Timeout),
            OnErrors: reader.Bool(section, "OnErrors", defaults.OnErrors),
            // From 400: retrying a success or a redirect elsewhere would only hide an answer (nginx accepts http_403 up).
            Statuses: ReadStatuses(reader, section, "Statuses", 400));
    }

    private static HashConfig ReadHash(ConfigReader reader, IConfiguration cluster, string policy)
    {
        var section = reader.Section(cluster, "Hash");
        reader.WarnUnknownKeys(section, HashKeys);
        var defaults = HashConfig.Default;
        if (policy != LoadBalancingPolicies.ConsistentHash && section.GetChildren().Any())
        {
            reader.Warning(section.Path, $"has no effect unless LoadBalancingPolicy is {LoadBalancingPolicies.ConsistentHash}");
        }
        var key = reader.Choice(section, "Key", defaults.Key, "a hash key",
            Enum.GetValues<HashKeyKind>().Select(k => (k.ToString(), k)).ToArray());
        var name = reader.String(section, "Name");
        if (key != HashKeyKind.ClientIp && name is null)
        {
            reader.Error(section.GetSection("Name").Path, $"required when Key is {key}");
        }
        else if (name is not null && !name.All(IsTokenChar))
        {
            reader.Error(section.GetSection("Name").Path, $"'{name}' is not a header or cookie name");
        }
        return new HashConfig(key, name, reader.Int(section, "VirtualNodes", defaults.VirtualNodes, min: 1, max: 10_000));
    }

    // Status codes from `min` to 599, e.g. [502, 503, 504].
    private static int[] ReadStatuses(ConfigReader reader, IConfiguration section, string key, int min)
    {
        var statuses = new List<int>();
        foreach (var (path, text) in reader.List(section, key))
        {
            if (int.TryParse(text, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var status)
                && status >= min && status <= 599)
            {
                statuses.Add(status);
            }
            else
            {
                reader.Error(path, $"'{text}' is not a status code from {min} to 599");
            }
        }
        return [.. statuses.Distinct()];
    }

    // Status codes or ranges, e.g. ["200-299", "302"]; null when absent.
    private static StatusRange[]? ReadStatusRanges(ConfigReader reader, IConfiguration section, string key)
    {
        var items = reader.List(section, key);
        if (items.Count == 0)
        {
            return null;
        }
        var ranges = new List<StatusRange>();
        foreach (var (path, text) in items)
        {
            var parts = text.Split('-', 2, StringSplitOptions.TrimEntries);
            if (int.TryParse(parts[0], System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var from)
                && int.TryParse(parts[^1], System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var to)
                && from >= 100 && to <= 599 && from <= to)
            {
                ranges.Add(new StatusRange(from, to));
            }
            else
            {
                reader.Error(path, $"'{text}' is not a status code or range from 100 to 599 (e.g. 200 or 200-399)");
            }
        }
        return [.. ranges];
    }

    private static DestinationConfig? ReadDestination(ConfigReader reader, IConfigurationSection section)
    {
        reader.WarnUnknownKeys(section, DestinationKeys);
        var weight = reader.Int(section, "Weight", DestinationConfig.DefaultWeight, 1, MaxWeight);
        var backup = reader.Bool(section, "Backup", defaultValue: false);
        var text = reader.RequiredString(section, "Address");
        if (text is null)
        {
            return null;
        }

        var path = section.GetSection("Address").Path;
        if (!Uri.TryCreate(text, UriKind.Absolute, out var uri)
            || (uri.Scheme != Uri.UriSchemeHttp && uri.Scheme != Uri.UriSchemeHttps)
            || uri.Host.Length == 0)
        {
            reader.Error(path, $"'{text}' is not an http or https URI");
            return null;
        }

        if (uri.AbsolutePath != "/")
        {
            reader.Error(path, $"'{text}' has a path; a destination address is http[s]://host[:port] (path empty or '/')");
            return null;
        }

        if (uri.UserInfo.Length > 0 || uri.Query.Length > 0 || uri.Fragment.Length > 0)
        {
            reader.Error(path, $"'{text}' has user info, a query or a fragment; a destination address is http[s]://host[:port]");
            return null;
        }

        // Uri.Host keeps IPv6 brackets; DnsSafeHost removes them, which is what IPAddress.Parse and DNS expect.
        var host = uri.HostNameType == UriHostNameType.IPv6 ? uri.DnsSafeHost : uri.IdnHost;
        var tls = reader.Section(section, "Tls");
        reader.WarnUnknownKeys(tls, DestinationTlsKeys);
        var serverName = reader.String(tls, "ServerName");
        if (serverName is not null && Uri.CheckHostName(serverName) != UriHostNameType.Dns)
        {
            reader.Error(tls.GetSection("ServerName").Path, $"'{serverName}' is not a DNS host name");
            serverName = null;
        }
        else if (serverName is not null && uri.Scheme != Uri.UriSchemeHttps)
        {
            reader.Warning(tls.Path, "has no effect: the destination is not https");
        }
        return new DestinationConfig(section.Key, uri, host, uri.Port, weight, backup) { ServerName = serverName };
    }

    private static KeepAliveConfig ReadKeepAlive(ConfigReader reader, IConfiguration cluster)
    {
        var section = reader.Section(cluster, "KeepAlive");
        reader.WarnUnknownKeys(section, KeepAliveKeys);
        var defaults = KeepAliveConfig.Default;

        var idleTimeout = defaults.IdleTimeout;
        if (reader.TryScalar(section, "IdleTimeout", out var idleText, out var idlePath)
            && idleText is not null
            && !idleText.Equals("auto", StringComparison.OrdinalIgnoreCase)
            && reader.ParseDuration(idlePath, idleText, positive: false, out var parsed))
        {
            idleTimeout = parsed;
        }

        return new KeepAliveConfig(
            MaxIdle: reader.Int(section, "MaxIdle", defaults.MaxIdle, min: 0),
            IdleTimeout: idleTimeout,
            // A zero cap would forbid every learned timeout, which is "IdleTimeout: 0", not "auto".
            AutoIdleTimeoutCap: reader.Duration(section, "AutoIdleTimeoutCap", defaults.AutoIdleTimeoutCap, positive: true),
            MaxRequests: reader.Int(section, "MaxRequests", defaults.MaxRequests, min: 0),
            MaxLifetime: reader.Duration(section, "MaxLifetime", defaults.MaxLifetime));
    }

    private static TimeoutsConfig ReadTimeouts(ConfigReader reader, IConfiguration cluster)
    {
        var section = reader.Section(cluster, "Timeouts");
        reader.WarnUnknownKeys(section, TimeoutsKeys);
        var defaults = TimeoutsConfig.Default;
        // Connect and ResponseHead have no "unlimited": a connect or a head that never comes must end in a 504.
        return new TimeoutsConfig(
            Connect: reader.Duration(section, "Connect", defaults.Connect, positive: true),
            SendRequest: reader.Duration(section, "SendRequest", defaults.SendRequest),
            ResponseHead: reader.Duration(section, "ResponseHead", defaults.ResponseHead, positive: true),
            BodyInactivity: reader.Duration(section, "BodyInactivity", defaults.BodyInactivity))
        {
            TunnelIdle = reader.Duration(section, "TunnelIdle", defaults.TunnelIdle),
        };
    }

    private static LimitsConfig ReadLimits(ConfigReader reader, IConfiguration cluster)
    {
        var section = reader.Section(cluster, "Limits");
        reader.WarnUnknownKeys(section, LimitsKeys);
        var defaults = LimitsConfig.Default;
        return new LimitsConfig(
            MaxResponseHeaderBytes: reader.Int(section, "MaxResponseHeaderBytes", defaults.MaxResponseHeaderBytes, min: 1),
            MaxResponseHeaderCount: reader.Int(section, "MaxResponseHeaderCount", defaults.MaxResponseHeaderCount, min: 1));
    }

    private static ForwardingConfig ReadForwarding(ConfigReader reader, IConfiguration cluster)
    {
        var section = reader.Section(cluster, "Forwarding");
        reader.WarnUnknownKeys(section, ForwardingKeys);
        var defaults = ForwardingConfig.Default;
        return new ForwardingConfig(
            PreserveHost: reader.Bool(section, "PreserveHost", defaults.PreserveHost),
            XForwarded: reader.Bool(section, "XForwarded", defaults.XForwarded));
    }

    private static ReplayConfig ReadReplay(ConfigReader reader, IConfiguration cluster)
    {
        var section = reader.Section(cluster, "Replay");
        reader.WarnUnknownKeys(section, ReplayKeys);
        var defaults = ReplayConfig.Default;
        return new ReplayConfig(
            MaxBodySize: reader.Int(section, "MaxBodySize", defaults.MaxBodySize, min: 0),
            NonIdempotent: reader.Bool(section, "NonIdempotent", defaults.NonIdempotent));
    }

    private static RouteConfig ReadRoute(ConfigReader reader, IConfigurationSection section,
        IReadOnlyDictionary<string, ClusterConfig> clusters, RequestLimitsConfig limits, IReadOnlyCollection<string> rateLimiterPolicies)
    {
        reader.WarnUnknownKeys(section, RouteKeys);

        var clusterId = reader.RequiredString(section, "ClusterId");
        if (clusterId is not null)
        {
            if (clusters.TryGetValue(clusterId, out var cluster))
            {
                clusterId = cluster.ClusterId;
            }
            else
            {
                var suggestion = ConfigReader.Suggest(clusterId, clusters.Keys);
                reader.Error(section.GetSection("ClusterId").Path, suggestion is null
                    ? $"'{clusterId}' is not a cluster"
                    : $"'{clusterId}' is not a cluster (did you mean '{suggestion}'?)");
            }
        }

        var order = reader.Int(section, "Order", defaultValue: 0);
        var match = ReadMatch(reader, reader.Section(section, "Match"));
        var removePrefix = ReadPathRemovePrefix(reader, section, match);
        return new RouteConfig(section.Key, clusterId ?? "", order, match, removePrefix)
        {
            Upgrades = ReadUpgrades(reader, section),
            Transforms = TransformsReader.Read(reader, section, match, removePrefix),
            MaxRequestBodySize = reader.Size(section, "MaxRequestBodySize", limits.MaxRequestBodySize),
            RateLimiterPolicy = ReadRouteRateLimiterPolicy(reader, section, rateLimiterPolicies),
        };
    }

    private static string? ReadRouteRateLimiterPolicy(ConfigReader reader, IConfigurationSection section, IReadOnlyCollection<string> policies)
    {
        var name = reader.String(section, "RateLimiterPolicy");
        if (name is null)
        {
            return null;
        }
        if (policies.FirstOrDefault(p => p.Equals(name, StringComparison.OrdinalIgnoreCase)) is { } known)
        {
            return known;
        }
        var suggestion = ConfigReader.Suggest(name, policies);
        reader.Error(section.GetSection("RateLimiterPolicy").Path, suggestion is null
            ? $"'{name}' is not a policy in RateLimiterPolicies"
            : $"'{name}' is not a policy in RateLimiterPolicies (did you mean '{suggestion}'?)");
        return null;
    }

    // Null when the policy has errors (reported at their paths).
    private static RateLimiterPolicyConfig? ReadRateLimiterPolicy(ConfigReader reader, IConfigurationSection section)
    {
        var errors = reader.Errors.Count;
        var kinds = Enum.GetValues<RateLimiterKind>();
        var kind = reader.Choice<RateLimiterKind?>(section, "Kind", null, "a rate limiter kind", kinds.Select(k => (k.ToString(), (RateLimiterKind?)k)).ToArray());
        if (kind is null)
        {
            if (reader.Errors.Count == errors)
            {
                reader.Error(section.GetSection("Kind").Path, $"required ({string.Join(", ", kinds)})");
            }
            return null;
        }

        // A setting of another kind (a Window on a token bucket) is named as such rather than as a typo.
        var own = RateLimiterKindKeys[kind.Value];
        var all = RateLimiterKindKeys.Values.SelectMany(k => k).Distinct().ToArray();
        foreach (var child in section.GetChildren())
        {
            if (RateLimiterCommonKeys.Contains(child.Key, StringComparer.OrdinalIgnoreCase) || own.Contains(child.Key, StringComparer.OrdinalIgnoreCase))
            {
                continue;
            }
            if (all.Contains(child.Key, StringComparer.OrdinalIgnoreCase))
            {
                reader.Warning(child.Path, $"has no effect with Kind {kind} (its settings: {string.Join(", ", own)})");
                continue;
            }
            var suggestion = ConfigReader.Suggest(child.Key, [.. RateLimiterCommonKeys, .. own]);
            reader.Warning(child.Path, suggestion is null ? "unknown setting" : $"unknown setting (did you mean '{suggestion}'?)");
        }

        var limit = kind == RateLimiterKind.TokenBucket
            ? RequiredInt(reader, section, "TokenLimit", min: 1)
            : RequiredInt(reader, section, "PermitLimit", min: 1);
        var tokensPerPeriod = kind == RateLimiterKind.TokenBucket ? RequiredInt(reader, section, "TokensPerPeriod", min: 1) : 0;
        var period = kind switch
        {
            RateLimiterKind.TokenBucket => RequiredPeriod(reader, section, "ReplenishmentPeriod"),
            RateLimiterKind.FixedWindow or RateLimiterKind.SlidingWindow => RequiredPeriod(reader, section, "Window"),
            _ => TimeSpan.Zero,
        };
        var segments = 1;
        if (kind == RateLimiterKind.SlidingWindow)
        {
            segments = RequiredInt(reader, section, "SegmentsPerWindow", min: 1);
            if (segments > 0 && period > TimeSpan.Zero && period / segments < RateLimiterPolicyConfig.MinPeriod)
            {
                reader.Error(section.GetSection("SegmentsPerWindow").Path,
                    $"'{segments}' makes segments of {Milliseconds(period / segments)}; each must last at least {Milliseconds(RateLimiterPolicyConfig.MinPeriod)}");
            }
        }

        var key = reader.Choice(section, "Key", RateLimiterKey.ClientIp, "a rate limiter key",
            Enum.GetValues<RateLimiterKey>().Select(k => (k.ToString(), k)).ToArray());
        var name = reader.String(section, "Name");
        if (key == RateLimiterKey.Header && name is null)
        {
            reader.Error(section.GetSection("Name").Path, "required when Key is Header (the header's name)");
        }
        else if (key != RateLimiterKey.Header && name is not null)
        {
            reader.Warning(section.GetSection("Name").Path, $"has no effect unless Key is {RateLimiterKey.Header}");
        }
        else if (name is not null && !name.All(IsTokenChar))
        {
            reader.Error(section.GetSection("Name").Path, $"'{name}' is not a header name");
        }

        var queueLimit = reader.Int(section, "QueueLimit", 0, min: 0, max: 1_000_000);
        var newestFirst = reader.Choice(section, "QueueProcessingOrder", false, "a queue processing order", ("OldestFirst", false), ("NewestFirst", true));
        if (queueLimit == 0 && section.GetSection("QueueProcessingOrder").Value is not null)
        {
            reader.Warning(section.GetSection("QueueProcessingOrder").Path, "has no effect without QueueLimit");
        }
        var maxPartitions = reader.Int(section, "MaxPartitions", RateLimiterPolicyConfig.DefaultMaxPartitions, min: 1, max: 10_000_000);
        if (key == RateLimiterKey.Route && section.GetSection("MaxPartitions").Value is not null)
        {
            reader.Warning(section.GetSection("MaxPartitions").Path, "has no effect when Key is Route (one partition per route)");
        }

        if (reader.Errors.Count != errors)
        {
            return null;
        }
        return new RateLimiterPolicyConfig(section.Key, kind.Value, limit)
        {
            Key = key,
            HeaderName = key == RateLimiterKey.Header ? name : null,
            TokensPerPeriod = tokensPerPeriod,
            Period = period,
            SegmentsPerWindow = segments,
            QueueLimit = queueLimit,
            NewestFirst = newestFirst,
            MaxPartitions = maxPartitions,
        };
    }

    private static int RequiredInt(ConfigReader reader, IConfiguration section, string key, int min)
    {
        if (reader.String(section, key) is null)
        {
            reader.Error(section.GetSection(key).Path, "required");
            return 0;
        }
        return reader.Int(section, key, 0, min: min);
    }

    private static string Milliseconds(TimeSpan value) =>
        value.TotalMilliseconds.ToString("0.###", System.Globalization.CultureInfo.InvariantCulture) + "ms";

    private static TimeSpan RequiredPeriod(ConfigReader reader, IConfiguration section, string key)
    {
        if (reader.String(section, key) is null)
        {
            reader.Error(section.GetSection(key).Path, "required");
            return TimeSpan.Zero;
        }
        var period = reader.Duration(section, key, TimeSpan.Zero, positive: true);
        if (period > TimeSpan.Zero && period < RateLimiterPolicyConfig.MinPeriod)
        {
            reader.Error(section.GetSection(key).Path,
                $"'{reader.String(section, key)}' is shorter than {Milliseconds(RateLimiterPolicyConfig.MinPeriod)}, the step at which limits replenish");
            return TimeSpan.Zero;
        }
        return period;
    }

    private static IReadOnlyList<string> ReadUpgrades(ConfigReader reader, IConfigurationSection section)
    {
        if (!section.GetSection("Upgrades").Exists())
        {
            return RouteConfig.DefaultUpgrades;
        }
        var upgrades = new List<string>();
        foreach (var (path, protocol) in reader.List(section, "Upgrades"))
        {
            if (!protocol.All(IsTokenChar))
            {
                reader.Error(path, "must be an upgrade protocol name (an HTTP token, such as websocket)");
                continue;
            }
            upgrades.Add(protocol.ToLowerInvariant());
        }
        return upgrades;
    }

    private static RouteMatchConfig ReadMatch(ConfigReader reader, IConfigurationSection section)
    {
        if (!section.Exists())
        {
            return RouteMatchConfig.Default;
        }

        reader.WarnUnknownKeys(section, MatchKeys);

        var hosts = new List<string>();
        foreach (var (path, host) in reader.List(section, "Hosts"))
        {
            if (ValidateHost(reader, path, host))
            {
                hosts.Add(host.ToLowerInvariant());
            }
        }

        var methods = new List<string>();
        foreach (var (path, method) in reader.List(section, "Methods"))
        {
            if (method.All(IsTokenChar))
            {
                // Methods are case-sensitive (RFC 9110 §9.1), but "get" in a config file means GET.
                methods.Add(HttpMethods.GetCanonicalizedValue(method));
            }
            else
            {
                reader.Error(path, $"'{method}' is not an HTTP method");
            }
        }

        var exact = ReadPath(reader, section, "Path");
        var prefix = ReadPath(reader, section, "PathPrefix");
        Routing.PathTemplate? template = null;
        if (exact is not null && Routing.PathTemplate.HasParameters(exact))
        {
            template = Routing.PathTemplate.Parse(exact, out var templateError);
            if (template is null)
            {
                reader.Error(section.GetSection("Path").Path, templateError!);
            }
        }
        if (exact is not null && prefix is not null)
        {
            reader.Error(section.Path, "Path and PathPrefix cannot both be set");
        }

        // "/api/" and "/api" match the same requests on segment boundaries; one spelling keeps comparisons simple.
        if (prefix is not null && prefix.Length > 1)
        {
            prefix = prefix.TrimEnd('/');
            prefix = prefix.Length == 0 ? "/" : prefix;
        }

        return new RouteMatchConfig(hosts, exact, prefix, methods.Distinct().ToArray()) { Template = template };
    }

    internal static string? ReadPath(ConfigReader reader, IConfigurationSection section, string key)
    {
        if (reader.String(section, key) is not { } path)
        {
            return null;
        }

        var fullPath = section.GetSection(key).Path;
        if (!path.StartsWith('/'))
        {
            reader.Error(fullPath, $"'{path}' must start with '/'");
            return null;
        }

        if (path.AsSpan().IndexOfAny('?', '#') >= 0)
        {
            reader.Error(fullPath, $"'{path}' must not contain '?' or '#' (routes match the path only)");
            return null;
        }

        return path;
    }

    private static string? ReadPathRemovePrefix(ConfigReader reader, IConfigurationSection section, RouteMatchConfig match)
    {
        var remove = ReadPath(reader, section, "PathRemovePrefix");
        if (remove is null)
        {
            return null;
        }

        var path = section.GetSection("PathRemovePrefix").Path;
        remove = remove.Length > 1 ? remove.TrimEnd('/') : remove;
        if (remove.Length <= 1)
        {
            reader.Error(path, "'/' removes nothing; a prefix to remove has at least one segment");
            return null;
        }

        // Stripping a prefix the matched path may not have would forward some requests unchanged and others not.
        var (matchKey, matchPath) = match.PathPrefix is not null ? ("PathPrefix", match.PathPrefix) : ("Path", match.Path);
        if (matchPath is null)
        {
            reader.Error(path, $"'{remove}' requires Match:PathPrefix (or Match:Path) starting with it");
            return null;
        }

        if (!IsSegmentPrefix(remove, matchPath))
        {
            reader.Error(path, $"'{remove}' is not a prefix of Match:{matchKey} '{matchPath}'");
            return null;
        }

        return remove;
    }

    private static bool IsSegmentPrefix(string prefix, string path) =>
        path.StartsWith(prefix, StringComparison.OrdinalIgnoreCase)
        && (path.Length == prefix.Length || path[prefix.Length] == '/');

    private static bool ValidateHost(ConfigReader reader, string path, string host)
    {
        if (host.StartsWith('[') && host.EndsWith(']'))
        {
            if (IPAddress.TryParse(host.AsSpan(1, host.Length - 2), out var address)
                && address.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6)
            {
                return true;
            }
        }
        else if (host.Contains(':'))
        {
            reader.Error(path, $"'{host}' must not include a port (hosts are matched without their port)");
            return false;
        }
        else
        {
            var name = host.StartsWith("*.", StringComparison.Ordinal) ? host[2..] : host;
            var labels = name.Split('.');
            if (labels.All(l => l.Length > 0 && l.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_')))
            {
                return true;
            }
        }

        reader.Error(path, $"'{host}' is not a host name (letters, digits, '-', '.', optionally a leading '*.')");
        return false;
    }

    // RFC 9110 §5.6.2 tchar.
    private static bool IsTokenChar(char c) =>
        char.IsAsciiLetterOrDigit(c) || "!#$%&'*+-.^_`|~".Contains(c);

    private static IReadOnlyList<string> ReadAllowedHosts(ConfigReader reader, IConfiguration section)
    {
        var hosts = new List<string>();
        foreach (var (path, host) in reader.List(section, "AllowedHosts"))
        {
            if (host != "*" && (host.Contains(':') || !host.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '.')))
            {
                reader.Error(path, "must be a host name without a port (letters, digits, - and .), or *");
                continue;
            }
            hosts.Add(host);
        }
        return hosts.Count == 0 ? AdminConfig.Default.AllowedHosts : hosts;
    }

    private static string? ReadAdminToken(ConfigReader reader, IConfiguration root)
    {
        var section = root.GetSection("Admin");
        var token = reader.String(section, "Token");
        // RFC 6750 §2.1 b64token: what a client can put after "Bearer " without quoting.
        if (token is not null && !token.All(c => char.IsAsciiLetterOrDigit(c) || "-._~+/=".Contains(c)))
        {
            reader.Error(section.GetSection("Token").Path, "must contain only letters, digits and -._~+/= (RFC 6750 b64token)");
            return null;
        }

        return token;
    }

    private static (AccessLogConfig AccessLog, MetricsConfig Metrics, TracingConfig Tracing) ReadObservability(ConfigReader reader, IConfiguration root)
    {
        var section = reader.Section(root, "AccessLog");
        reader.WarnUnknownKeys(section, AccessLogKeys);
        var defaults = AccessLogConfig.Default;
        var format = reader.Choice(section, "Format", defaults.Format, "an access log format",
            ("json", AccessLogFormat.Json), ("combined", AccessLogFormat.Combined));

        var accessLog = new AccessLogConfig(
            reader.Bool(section, "Enabled", defaults.Enabled),
            format,
            reader.String(section, "Path") ?? defaults.Path,
            reader.Int(section, "BufferSize", defaults.BufferSize, min: 1, max: 1 << 20));

        var metrics = reader.Section(root, "Metrics");
        reader.WarnUnknownKeys(metrics, TelemetryKeys);
        var tracing = reader.Section(root, "Tracing");
        reader.WarnUnknownKeys(tracing, TelemetryKeys);
        return (accessLog,
            new MetricsConfig(reader.Bool(metrics, "Enabled", MetricsConfig.Default.Enabled), ReadOtlp(reader, metrics)),
            new TracingConfig(reader.Bool(tracing, "Enabled", TracingConfig.Default.Enabled), ReadOtlp(reader, tracing)));
    }

    private static OtlpConfig? ReadOtlp(ConfigReader reader, IConfiguration parent)
    {
        var section = reader.Section(parent, "Otlp");
        reader.WarnUnknownKeys(section, OtlpKeys);
        var protocol = reader.Choice(section, "Protocol", OtlpProtocol.Grpc, "an OTLP protocol",
            ("grpc", OtlpProtocol.Grpc), ("http/protobuf", OtlpProtocol.HttpProtobuf));

        var interval = reader.Duration(section, "Interval", OtlpConfig.DefaultInterval, positive: true);
        var text = reader.String(section, "Endpoint");
        if (text is null)
        {
            return null;
        }

        if (!Uri.TryCreate(text, UriKind.Absolute, out var endpoint) || (endpoint.Scheme != Uri.UriSchemeHttp && endpoint.Scheme != Uri.UriSchemeHttps))
        {
            reader.Error(section.GetSection("Endpoint").Path, $"'{text}' is not an http or https URI");
            return null;
        }

        return new OtlpConfig(endpoint, protocol, interval);
    }
}
