using System.Net.Security;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using Microsoft.Extensions.Configuration;

namespace Ferry.Configuration;

/// <summary>
/// Where a listener certificate comes from: a PEM certificate (its chain may follow it in the same file) with its key in
/// <see cref="KeyPath"/> or in the same file, or a PKCS#12 file when <see cref="KeyPath"/> is absent and the file is not
/// PEM. <see cref="Password"/> decrypts an encrypted PEM key or the PKCS#12 file. <see cref="ConfigPath"/> names the
/// setting in messages ("Listeners:web:Certificate").
/// </summary>
internal sealed record CertificateSource(string ConfigPath, string Path, string? KeyPath, string? Password)
{
    // The files as read when the configuration was loaded; the server starts with it, so that what was validated is
    // exactly what is served even if a file changes between the load and the start.
    public LoadedCertificate? Initial { get; init; }

    public IEnumerable<string> Files => KeyPath is null ? [Path] : [Path, KeyPath];

    // The `{ Path, KeyPath, Password }` section under `key`, with file paths resolved against the configuration's
    // folder; null when the section is empty or has no Path (reported). Listener certificates and upstream client
    // certificates are written the same way.
    public static CertificateSource? Read(ConfigReader reader, IConfiguration parent, string key)
    {
        var section = reader.Section(parent, key);
        using var keys = reader.CheckKeys(section);
        if (!section.GetChildren().Any())
        {
            return null;
        }
        var path = reader.RequiredString(section, "Path");
        if (path is null)
        {
            reader.Known(section, "KeyPath", "Password");
            return null;
        }
        var keyPath = reader.String(section, "KeyPath");
        return new CertificateSource(section.Path, reader.FilePath(path), keyPath is null ? null : reader.FilePath(keyPath), reader.String(section, "Password"));
    }
}

/// <summary>A certificate ready for SslStream: the leaf with its private key and the chain sent along with it.</summary>
internal sealed class LoadedCertificate
{
    private const string ServerAuthOid = "1.3.6.1.5.5.7.3.1";

    private LoadedCertificate(X509Certificate2 leaf, X509Certificate2Collection intermediates, byte[] fingerprint)
    {
        Leaf = leaf;
        // offline: the chain is built from these certificates and the system store, never by fetching AIA URLs at start.
        Context = SslStreamCertificateContext.Create(leaf, intermediates, offline: true);
        Fingerprint = fingerprint;
    }

    public X509Certificate2 Leaf { get; }

    public SslStreamCertificateContext Context { get; }

    // SHA-256 of the files' contents: a reload only replaces the certificate when the bytes changed, whatever the
    // timestamps say (a rename keeps the old mtime; a Kubernetes secret update swaps a symlink).
    public byte[] Fingerprint { get; }

    public string Subject => Leaf.Subject;

    public DateTimeOffset NotBefore => new(Leaf.NotBefore.ToUniversalTime());

    public DateTimeOffset NotAfter => new(Leaf.NotAfter.ToUniversalTime());

    public string SerialNumber => Leaf.SerialNumber;

    /// <summary>Hash of the files as they are now; throws <see cref="CertificateFileException"/> when one cannot be read.</summary>
    public static byte[] HashFiles(CertificateSource source)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        foreach (var file in source.Files)
        {
            hash.AppendData(ReadFile(file));
        }
        return hash.GetHashAndReset();
    }

    /// <summary>
    /// Reads and checks the files; every problem is a <see cref="CertificateFileException"/> whose message says which
    /// file and what is wrong with it (missing, not a certificate, wrong password, key of another certificate).
    /// </summary>
    public static LoadedCertificate Load(CertificateSource source)
    {
        var certBytes = ReadFile(source.Path);
        var keyBytes = source.KeyPath is null ? null : ReadFile(source.KeyPath);
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        hash.AppendData(certBytes);
        if (keyBytes is not null)
        {
            hash.AppendData(keyBytes);
        }
        var fingerprint = hash.GetHashAndReset();

        var certText = Encoding.UTF8.GetString(certBytes);
        var isPem = certText.Contains("-----BEGIN", StringComparison.Ordinal);
        var (leaf, intermediates) = keyBytes is null && !isPem
            ? LoadPkcs12(source, certBytes)
            : LoadPem(source, certText, keyBytes is null ? certText : Encoding.UTF8.GetString(keyBytes));

        // Kestrel refuses such a certificate for the same reason: clients reject it for a server (RFC 5280 §4.2.1.12).
        foreach (var extension in leaf.Extensions)
        {
            if (extension is X509EnhancedKeyUsageExtension eku && eku.EnhancedKeyUsages.Count > 0
                && !eku.EnhancedKeyUsages.Cast<Oid>().Any(o => o.Value == ServerAuthOid))
            {
                throw new CertificateFileException($"'{source.Path}': the certificate's extended key usage does not include server authentication");
            }
        }
        return new LoadedCertificate(leaf, intermediates, fingerprint);
    }

    private static byte[] ReadFile(string path)
    {
        try
        {
            return File.ReadAllBytes(path);
        }
        catch (Exception ex) when (ex is FileNotFoundException or DirectoryNotFoundException)
        {
            throw new CertificateFileException($"'{path}' does not exist");
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new CertificateFileException($"'{path}' cannot be read: {ex.Message}");
        }
    }

    private static (X509Certificate2 Leaf, X509Certificate2Collection Intermediates) LoadPkcs12(CertificateSource source, byte[] bytes)
    {
        X509Certificate2Collection all;
        try
        {
            all = X509CertificateLoader.LoadPkcs12Collection(bytes, source.Password);
        }
        catch (CryptographicException ex)
        {
            // The runtime says "password may be incorrect" both for a wrong password and for bytes that are not
            // PKCS#12 at all; telling the two apart needs the password-less parse to succeed structurally.
            throw new CertificateFileException(LooksLikePkcs12(bytes)
                ? $"'{source.Path}' cannot be decrypted: {(source.Password is null ? "it needs a Password" : "the Password is wrong")}"
                : $"'{source.Path}' is neither PEM nor PKCS#12 ({ex.Message})");
        }
        var leaf = all.FirstOrDefault(c => c.HasPrivateKey)
            ?? throw new CertificateFileException($"'{source.Path}' holds no certificate with a private key");
        var intermediates = new X509Certificate2Collection();
        foreach (var certificate in all)
        {
            if (!ReferenceEquals(certificate, leaf))
            {
                intermediates.Add(certificate);
            }
        }
        return (leaf, intermediates);
    }

    // A PKCS#12 file is a DER SEQUENCE whose first element is the version INTEGER 3 (RFC 7292 §4).
    private static bool LooksLikePkcs12(byte[] bytes)
    {
        try
        {
            var reader = new System.Formats.Asn1.AsnReader(bytes, System.Formats.Asn1.AsnEncodingRules.BER);
            var sequence = reader.ReadSequence();
            return sequence.TryReadInt32(out var version) && version == 3;
        }
        catch (System.Formats.Asn1.AsnContentException)
        {
            return false;
        }
    }

    private static (X509Certificate2 Leaf, X509Certificate2Collection Intermediates) LoadPem(CertificateSource source, string certText, string keyText)
    {
        var all = new X509Certificate2Collection();
        try
        {
            all.ImportFromPem(certText);
        }
        catch (CryptographicException ex)
        {
            throw new CertificateFileException($"'{source.Path}' holds a PEM certificate that does not parse: {ex.Message}");
        }
        if (all.Count == 0)
        {
            // ImportFromPem skips a block whose base64 does not decode, as if it were not there.
            throw new CertificateFileException(certText.Contains("-----BEGIN CERTIFICATE-----", StringComparison.Ordinal)
                ? $"'{source.Path}' holds a PEM certificate that does not parse"
                : $"'{source.Path}' holds no PEM certificate");
        }
        var keyFile = source.KeyPath ?? source.Path;
        // The leaf comes first in a chain file (fullchain.pem, RFC 8446 §4.4.2), the intermediates after it.
        var certificate = all[0];
        var intermediates = new X509Certificate2Collection();
        for (var i = 1; i < all.Count; i++)
        {
            intermediates.Add(all[i]);
        }
        if (!keyText.Contains("PRIVATE KEY-----", StringComparison.Ordinal))
        {
            throw new CertificateFileException(source.KeyPath is null
                ? $"'{source.Path}' holds no private key; set KeyPath to the key's file"
                : $"'{keyFile}' holds no PEM private key");
        }
        var encrypted = keyText.Contains("-----BEGIN ENCRYPTED PRIVATE KEY-----", StringComparison.Ordinal);
        if (encrypted && source.Password is null)
        {
            throw new CertificateFileException($"'{keyFile}' holds an encrypted private key: it needs a Password");
        }
        X509Certificate2? leaf;
        try
        {
            leaf = certificate.GetKeyAlgorithm() switch
            {
                "1.2.840.113549.1.1.1" => WithKey(certificate, RSA.Create(), keyText, encrypted ? source.Password : null),
                "1.2.840.10045.2.1" => WithKey(certificate, ECDsa.Create(), keyText, encrypted ? source.Password : null),
                var oid => throw new CertificateFileException($"'{source.Path}': the certificate's key algorithm ({oid}) is not RSA or ECDSA"),
            };
        }
        catch (CryptographicException ex) when (encrypted)
        {
            throw new CertificateFileException($"'{keyFile}' cannot be decrypted: the Password is wrong ({ex.Message})");
        }
        catch (Exception ex) when (ex is CryptographicException or ArgumentException)
        {
            throw new CertificateFileException($"'{keyFile}' holds no private key usable with the certificate in '{source.Path}': {ex.Message}");
        }
        if (leaf is null)
        {
            throw new CertificateFileException($"'{keyFile}' holds the key of another certificate: it does not match the certificate in '{source.Path}'");
        }
        if (OperatingSystem.IsWindows())
        {
            // SChannel cannot use an ephemeral key; a PKCS#12 round trip gives it a key container.
            using var ephemeral = leaf;
            leaf = X509CertificateLoader.LoadPkcs12(ephemeral.Export(X509ContentType.Pkcs12), null);
        }
        return (leaf, intermediates);
    }

    // Null when the key is not the certificate's.
    private static X509Certificate2? WithKey<T>(X509Certificate2 certificate, T key, string keyText, string? password)
        where T : AsymmetricAlgorithm
    {
        using (key)
        {
            if (password is null)
            {
                key.ImportFromPem(keyText);
            }
            else
            {
                key.ImportFromEncryptedPem(keyText, password);
            }
            if (!PublicKeyMatches(certificate, key))
            {
                return null;
            }
            return key switch
            {
                RSA rsa => certificate.CopyWithPrivateKey(rsa),
                ECDsa ecdsa => certificate.CopyWithPrivateKey(ecdsa),
                _ => null,
            };
        }
    }

    private static bool PublicKeyMatches(X509Certificate2 certificate, AsymmetricAlgorithm key) =>
        certificate.PublicKey.ExportSubjectPublicKeyInfo().AsSpan().SequenceEqual(key.ExportSubjectPublicKeyInfo());
}

/// <summary>A certificate file that cannot be used; the message names the file and the problem.</summary>
internal sealed class CertificateFileException(string message) : Exception(message);
