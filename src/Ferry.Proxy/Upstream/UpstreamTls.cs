using System.Net.Security;
using System.Runtime.CompilerServices;
using System.Security.Authentication;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Ferry.Configuration;
using Ferry.Errors;

namespace Ferry.Upstream;

// TLS to one https destination: the handshake on a new pooled connection. The options object is built once and shared
// by every connection to the destination, so the runtime's TLS session cache (keyed by target host and options) can
// resume sessions instead of repeating full handshakes.
internal sealed class UpstreamTls
{
    private static readonly List<SslApplicationProtocol> s_http11 = [SslApplicationProtocol.Http11];

    // Why the last certificate check of a handshake failed, read back when AuthenticateAsClientAsync throws: the
    // exception alone does not say whether the certificate or the protocol failed.
    private readonly ConditionalWeakTable<SslStream, string> _rejected = [];
    private readonly TlsConfig _config;

    public UpstreamTls(TlsConfig config, string host, string? serverName)
    {
        _config = config;
        ServerName = serverName ?? config.ServerName ?? host;
        Options = new SslClientAuthenticationOptions
        {
            // An IP address as TargetHost sends no SNI (RFC 6066 forbids literal addresses) and is matched against the
            // certificate's IP SANs.
            TargetHost = ServerName,
            EnabledSslProtocols = SslProtocols.Tls12 | SslProtocols.Tls13,
            ApplicationProtocols = s_http11,
            ClientCertificateContext = config.ClientCertificate,
            CertificateRevocationCheckMode = X509RevocationMode.NoCheck,
            RemoteCertificateValidationCallback = Validate,
        };
        if (config.TrustedCertificates is { } trusted)
        {
            // The CA bundle replaces the system trust store for this cluster, like nginx's proxy_ssl_trusted_certificate.
            var policy = new X509ChainPolicy { TrustMode = X509ChainTrustMode.CustomRootTrust, RevocationMode = X509RevocationMode.NoCheck };
            policy.CustomTrustStore.AddRange(trusted);
            Options.CertificateChainPolicy = policy;
        }
        else if (!config.DangerousAcceptAnyServerCertificate)
        {
            WarmSystemTrustStore();
        }
    }

    private static int s_trustStoreWarmed;

    // The first certificate check against the system trust store reads every root from disk (0.5–1.7 s measured here
    // on a loaded machine; the runtime caches them afterwards). With Engine Loops the check runs on the loop that
    // serves the connection, which would stall every other connection of that loop meanwhile: the store is read on
    // the thread pool as soon as a cluster needs it. A handshake that comes sooner waits for the same read.
    private static void WarmSystemTrustStore()
    {
        if (Interlocked.Exchange(ref s_trustStoreWarmed, 1) != 0)
        {
            return;
        }
        _ = Task.Run(static () =>
        {
            try
            {
                using var store = new X509Store(StoreName.Root, StoreLocation.LocalMachine);
                store.Open(OpenFlags.ReadOnly);
                _ = store.Certificates.Count;
            }
            catch (CryptographicException)
            {
                // No readable system store: the handshakes will say so, with the certificate they could not check.
            }
        });
    }

    public string ServerName { get; }
    public SslClientAuthenticationOptions Options { get; }

    private bool Validate(object sender, X509Certificate? certificate, X509Chain? chain, SslPolicyErrors errors)
    {
        if (_config.DangerousAcceptAnyServerCertificate || errors == SslPolicyErrors.None)
        {
            return true;
        }
        var why = errors.HasFlag(SslPolicyErrors.RemoteCertificateNotAvailable) ? "the destination sent no certificate"
            : errors.HasFlag(SslPolicyErrors.RemoteCertificateNameMismatch) ? $"the certificate is not valid for '{ServerName}'"
            : $"the certificate chain is not trusted ({ChainStatus(chain)})";
        _rejected.AddOrUpdate((SslStream)sender, $"{why}; subject '{certificate?.Subject}'");
        return false;
    }

    private static string ChainStatus(X509Chain? chain) =>
        chain is null || chain.ChainStatus.Length == 0
            ? "no chain"
            : string.Join(", ", chain.ChainStatus.Select(s => s.Status.ToString()).Distinct());

    // Wraps a connected socket's stream. `timeout` bounds the handshake (the cluster's connect timeout, counted again).
    public async ValueTask<SslStream> HandshakeAsync(Stream transport, TimeSpan timeout, TimeProvider time, CancellationToken requestAborted)
    {
        var stream = new SslStream(transport, leaveInnerStreamOpen: false);
        using var timeoutCts = new CancellationTokenSource(timeout, time);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(timeoutCts.Token, requestAborted);
        try
        {
            await stream.AuthenticateAsClientAsync(Options, linked.Token);
            return stream;
        }
        catch (Exception ex)
        {
            var rejected = _rejected.TryGetValue(stream, out var why) ? why : null;
            await stream.DisposeAsync();
            if (requestAborted.IsCancellationRequested)
            {
                throw new ProxyException(ProxyError.ClientAborted, "client went away during the TLS handshake", ex);
            }
            if (timeoutCts.IsCancellationRequested)
            {
                throw new ProxyException(ProxyError.ConnectionTimeout, $"TLS handshake timed out after {timeout.TotalMilliseconds:0} ms", ex);
            }
            if (rejected is not null)
            {
                throw new ProxyException(ProxyError.TlsCertificateError, $"TLS handshake with '{ServerName}': {rejected}", ex);
            }
            throw new ProxyException(ProxyError.TlsProtocolError, $"TLS handshake with '{ServerName}' failed: {Describe(ex)}", ex);
        }
    }

    private static string Describe(Exception ex)
    {
        var messages = new List<string>();
        for (var e = ex; e is not null; e = e.InnerException)
        {
            messages.Add(e.Message);
        }
        return string.Join(" / ", messages.Distinct());
    }
}
