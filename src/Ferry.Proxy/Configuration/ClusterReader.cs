using System.Net.Security;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Microsoft.Extensions.Configuration;

namespace Ferry.Configuration;

/// <summary>Reads Clusters:&lt;id&gt;: destinations, connection reuse, timeouts, limits, forwarding, replay, DNS and
/// upstream TLS; health, limits on connections, retries and hashing are in <see cref="HealthReader"/>.</summary>
internal static class ClusterReader
{
    // 1000 keeps smooth weighted round robin's running sums small and is already finer than any real capacity ratio.
    private const int MaxWeight = 1000;

    public static ClusterConfig Read(ConfigReader reader, IConfigurationSection section)
    {
        using var keys = reader.CheckKeys(section);
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
            HealthCheck = HealthReader.ReadHealthCheck(reader, section),
            SlowStart = reader.Duration(section, "SlowStart", TimeSpan.Zero),
            Panic = HealthReader.ReadPanic(reader, section),
            ConnectionLimit = HealthReader.ReadConnectionLimit(reader, section),
            Retry = HealthReader.ReadRetry(reader, section),
            Hash = HealthReader.ReadHash(reader, section, policy),
            SourceAddresses = ReadSourceAddresses(reader, section),
            Dns = ReadDns(reader, section),
            Tls = ReadTls(reader, section, destinations.Any(d => d.IsHttps)),
        };
    }

    private static TlsConfig ReadTls(ConfigReader reader, IConfiguration cluster, bool anyHttps)
    {
        var section = reader.Section(cluster, "Tls");
        using var keys = reader.CheckKeys(section);
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
        if (CertificateSource.Read(reader, tls, "ClientCertificate") is not { } source)
        {
            return null;
        }
        var (path, keyPath, password) = (source.Path, source.KeyPath, source.Password);
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
                reader.Error($"{source.ConfigPath}:Path", $"'{path}' has no private key");
                return null;
            }
            // One context for every connection of the cluster: the chain is built once, and the TLS session cache
            // sees the same client credentials each time.
            return SslStreamCertificateContext.Create(certificate, additionalCertificates: null, offline: true);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or CryptographicException or ArgumentException)
        {
            reader.Error(source.ConfigPath, $"the client certificate cannot be loaded: {ex.Message}");
            return null;
        }
    }

    private static DnsConfig ReadDns(ConfigReader reader, IConfiguration cluster)
    {
        var section = reader.Section(cluster, "Dns");
        using var keys = reader.CheckKeys(section);
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

    private static DestinationConfig? ReadDestination(ConfigReader reader, IConfigurationSection section)
    {
        using var keys = reader.CheckKeys(section);
        var weight = reader.Int(section, "Weight", DestinationConfig.DefaultWeight, 1, MaxWeight);
        var backup = reader.Bool(section, "Backup", defaultValue: false);
        if (ReadAddress(reader, section) is not { } uri)
        {
            reader.Known(section, "Tls");
            return null;
        }

        // Uri.Host keeps IPv6 brackets; DnsSafeHost removes them, which is what IPAddress.Parse and DNS expect.
        var host = uri.HostNameType == UriHostNameType.IPv6 ? uri.DnsSafeHost : uri.IdnHost;
        var tls = reader.Section(section, "Tls");
        using var tlsKeys = reader.CheckKeys(tls);
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

    private static Uri? ReadAddress(ConfigReader reader, IConfigurationSection section)
    {
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

        return uri;
    }

    private static KeepAliveConfig ReadKeepAlive(ConfigReader reader, IConfiguration cluster)
    {
        var section = reader.Section(cluster, "KeepAlive");
        using var keys = reader.CheckKeys(section);
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
        using var keys = reader.CheckKeys(section);
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
        using var keys = reader.CheckKeys(section);
        var defaults = LimitsConfig.Default;
        return new LimitsConfig(
            MaxResponseHeaderBytes: reader.Int(section, "MaxResponseHeaderBytes", defaults.MaxResponseHeaderBytes, min: 1),
            MaxResponseHeaderCount: reader.Int(section, "MaxResponseHeaderCount", defaults.MaxResponseHeaderCount, min: 1));
    }

    private static ForwardingConfig ReadForwarding(ConfigReader reader, IConfiguration cluster)
    {
        var section = reader.Section(cluster, "Forwarding");
        using var keys = reader.CheckKeys(section);
        var defaults = ForwardingConfig.Default;
        return new ForwardingConfig(
            PreserveHost: reader.Bool(section, "PreserveHost", defaults.PreserveHost),
            XForwarded: reader.Bool(section, "XForwarded", defaults.XForwarded));
    }

    private static ReplayConfig ReadReplay(ConfigReader reader, IConfiguration cluster)
    {
        var section = reader.Section(cluster, "Replay");
        using var keys = reader.CheckKeys(section);
        var defaults = ReplayConfig.Default;
        return new ReplayConfig(
            MaxBodySize: reader.Int(section, "MaxBodySize", defaults.MaxBodySize, min: 0),
            NonIdempotent: reader.Bool(section, "NonIdempotent", defaults.NonIdempotent));
    }
}
