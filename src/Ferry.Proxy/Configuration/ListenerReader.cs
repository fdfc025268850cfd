using System.Net;
using Microsoft.Extensions.Configuration;

namespace Ferry.Configuration;

/// <summary>Reads Listeners and Admin: addresses, TLS certificates, HSTS, redirects and trusted proxies; refuses
/// addresses that cannot all be bound.</summary>
internal static class ListenerReader
{
    public static List<(ListenerConfig Config, string Path, string Text)> ReadAll(ConfigReader reader, IConfiguration root)
    {
        var listeners = new List<(ListenerConfig Config, string Path, string Text)>();
        foreach (var entry in reader.Entries(root, "Listeners"))
        {
            using var keys = reader.CheckKeys(entry);
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
            using var keys = reader.CheckKeys(entry);
            var certificateSetting = reader.Setting(entry, "Certificate");
            var host = entry.Key.TrimEnd('.').ToLowerInvariant();
            if (!IsSniHost(host))
            {
                reader.Error(entry.Path, $"'{entry.Key}' is not a server name (a DNS name, or '*.' and a DNS name); the listener's Certificate is the default for the others");
                continue;
            }
            if (!certificateSetting.Exists())
            {
                reader.Error(certificateSetting.Path, "required: the certificate for this server name (Path, KeyPath, Password)");
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
                    reader.Warning(certificateSetting.Path, $"the certificate ({loaded.Subject}) is not valid for '{host}': clients will refuse it");
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
        if (CertificateSource.Read(reader, parent, key) is not { } source)
        {
            return null;
        }
        try
        {
            return source with { Initial = LoadedCertificate.Load(source) };
        }
        catch (CertificateFileException ex)
        {
            reader.Error(source.ConfigPath, ex.Message);
            return null;
        }
    }

    private static HstsConfig? ReadHsts(ConfigReader reader, IConfiguration listener, bool https)
    {
        var section = reader.Section(listener, "Hsts");
        using var keys = reader.CheckKeys(section);
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
        using var keys = reader.CheckKeys(section);
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

    public static AdminConfig ReadAdmin(ConfigReader reader, IConfiguration root,
        IReadOnlyList<(ListenerConfig Config, string Path, string Text)> listeners)
    {
        var section = reader.Section(root, "Admin");
        using var keys = reader.CheckKeys(section);
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

        return admin with { Token = ReadAdminToken(reader, section) };
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

    private static string? ReadAdminToken(ConfigReader reader, IConfiguration section)
    {
        var token = reader.String(section, "Token");
        // RFC 6750 §2.1 b64token: what a client can put after "Bearer " without quoting.
        if (token is not null && !token.All(c => char.IsAsciiLetterOrDigit(c) || "-._~+/=".Contains(c)))
        {
            reader.Error(section.GetSection("Token").Path, "must contain only letters, digits and -._~+/= (RFC 6750 b64token)");
            return null;
        }

        return token;
    }
}
