using System.Security.Authentication;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Ferry.Cli;
using Ferry.Configuration;
using Microsoft.Extensions.Configuration;
using static Ferry.Tests.Configuration.ConfigTestJson;

namespace Ferry.Tests.Configuration;

public sealed class ListenerTlsConfigTests : IDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("ferry-listener-tls-").FullName;

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    internal static X509Certificate2 Certificate(string name, DateTimeOffset? notBefore = null, DateTimeOffset? notAfter = null,
        string eku = "1.3.6.1.5.5.7.3.1", bool rsa = false)
    {
        using AsymmetricAlgorithm key = rsa ? RSA.Create(2048) : ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = key is RSA r
            ? new CertificateRequest($"CN={name}", r, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1)
            : new CertificateRequest($"CN={name}", (ECDsa)key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid(eku)], false));
        var san = new SubjectAlternativeNameBuilder();
        san.AddDnsName(name);
        request.CertificateExtensions.Add(san.Build());
        return request.CreateSelfSigned(notBefore ?? DateTimeOffset.UtcNow.AddDays(-1), notAfter ?? DateTimeOffset.UtcNow.AddDays(90));
    }

    private static string KeyPem(X509Certificate2 certificate) =>
        certificate.GetECDsaPrivateKey() is { } ec ? ec.ExportPkcs8PrivateKeyPem() : certificate.GetRSAPrivateKey()!.ExportPkcs8PrivateKeyPem();

    private (string Cert, string Key) WritePem(string name, X509Certificate2 certificate)
    {
        var cert = Write(name + ".pem", certificate.ExportCertificatePem());
        var key = Write(name + ".key", KeyPem(certificate));
        return (cert, key);
    }

    private string Write(string name, string text)
    {
        var path = Path.Combine(_directory, name);
        File.WriteAllText(path, text);
        return path;
    }

    private static string Json(string path) => path.Replace("\\", "\\\\", StringComparison.Ordinal);

    private static string Listener(string members) => $$"""
        {
          "Listeners": { "web": { "Address": "127.0.0.1:8443", {{members}} } },
          "Routes": { "all": { "ClusterId": "backend" } },
          "Clusters": { "backend": { "Destinations": { "a": { "Address": "http://127.0.0.1:9000" } } } }
        }
        """;

    private static string Cert(string cert, string? key = null, string? password = null) =>
        $$"""{ "Path": "{{Json(cert)}}" {{(key is null ? "" : $", \"KeyPath\": \"{Json(key)}\"")}} {{(password is null ? "" : $", \"Password\": \"{password}\"")}} }""";

    [Fact]
    public void PemCertificate_SniAndVersions_AreRead()
    {
        using var web = Certificate("web.example");
        using var api = Certificate("api.example");
        using var wild = Certificate("*.apps.example");
        var (webCert, webKey) = WritePem("web", web);
        var (apiCert, apiKey) = WritePem("api", api);
        var (wildCert, wildKey) = WritePem("wild", wild);

        var listener = LoadValid(Listener($$"""
            "Certificate": {{Cert(webCert, webKey)}},
            "Sni": { "API.example.": { "Certificate": {{Cert(apiCert, apiKey)}} }, "*.apps.example": { "Certificate": {{Cert(wildCert, wildKey)}} } },
            "SslProtocols": [ "Tls13" ],
            "Protocols": "Http1AndHttp2"
            """)).Listeners.Single();

        var tls = listener.Tls!;
        Assert.Equal(ListenerProtocols.Http1AndHttp2, listener.Protocols);
        Assert.Equal(SslProtocols.Tls13, tls.SslProtocols);
        Assert.Equal(web.SerialNumber, tls.Default!.Initial!.SerialNumber);
        Assert.Equal("Listeners:web:Certificate", tls.Default.ConfigPath);
        Assert.Equal(["*.apps.example", "api.example"], tls.Sni.Select(s => s.Host).Order(StringComparer.Ordinal));
        var apiSni = tls.Sni.Single(s => s.Host == "api.example");
        Assert.Equal(api.SerialNumber, apiSni.Certificate.Initial!.SerialNumber);
        Assert.Equal("Listeners:web:Sni:API.example.:Certificate", apiSni.Certificate.ConfigPath);
        Assert.Equal(wild.SerialNumber, tls.Sni.Single(s => s.Host == "*.apps.example").Certificate.Initial!.SerialNumber);
    }

    [Fact]
    public void Defaults_PlainListener_AndTls12And13WithACertificate()
    {
        Assert.Null(LoadValid(Minimal()).Listeners.Single().Tls);

        using var web = Certificate("web.example");
        var (cert, key) = WritePem("web", web);
        var listener = LoadValid(Listener($$""" "Certificate": {{Cert(cert, key)}} """)).Listeners.Single();

        Assert.Equal(SslProtocols.Tls12 | SslProtocols.Tls13, listener.Tls!.SslProtocols);
        Assert.Equal(ListenerProtocols.Http1, listener.Protocols);
        Assert.Empty(listener.Tls.Sni);
        Assert.Null(listener.Hsts);
        Assert.Null(listener.RedirectToHttps);
    }

    [Fact]
    public void CertificateAndKeyInOneFile_WithAChain_AndAnRsaKey()
    {
        using var leaf = Certificate("web.example", rsa: true);
        using var other = Certificate("intermediate.example");
        var file = Write("combined.pem", leaf.ExportCertificatePem() + "\n" + other.ExportCertificatePem() + "\n" + KeyPem(leaf));

        var loaded = LoadValid(Listener($$""" "Certificate": {{Cert(file)}} """)).Listeners.Single().Tls!.Default!.Initial!;

        Assert.Equal(leaf.SerialNumber, loaded.SerialNumber);
        Assert.True(loaded.Leaf.HasPrivateKey);
    }

    [Fact]
    public void Pkcs12_WithPassword_Loads_AndAWrongOrMissingPasswordIsNamed()
    {
        using var web = Certificate("web.example");
        var pfx = Path.Combine(_directory, "web.pfx");
        File.WriteAllBytes(pfx, web.Export(X509ContentType.Pkcs12, "right"));

        Assert.Equal(web.SerialNumber, LoadValid(Listener($$""" "Certificate": {{Cert(pfx, password: "right")}} """)).Listeners.Single().Tls!.Default!.Initial!.SerialNumber);
        Assert.Equal([$"Listeners:web:Certificate: '{pfx}' cannot be decrypted: the Password is wrong"],
            Load(Listener($$""" "Certificate": {{Cert(pfx, password: "wrong")}} """)).Errors);
        Assert.Equal([$"Listeners:web:Certificate: '{pfx}' cannot be decrypted: it needs a Password"],
            Load(Listener($$""" "Certificate": {{Cert(pfx)}} """)).Errors);
    }

    [Fact]
    public void FileProblems_AreErrorsWithTheirPath()
    {
        using var web = Certificate("web.example");
        using var other = Certificate("other.example");
        var (cert, key) = WritePem("web", web);
        var (_, otherKey) = WritePem("other", other);
        var missing = Path.Combine(_directory, "missing.pem");
        var notPem = Write("garbage.crt", "this is not a certificate");
        var noCertificate = Write("empty.pem", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n");
        var broken = Write("broken.pem", "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n");

        string Error(string certificate) => Assert.Single(Load(Listener($$""" "Certificate": {{certificate}} """)).Errors);

        Assert.Equal($"Listeners:web:Certificate: '{missing}' does not exist", Error(Cert(missing, key)));
        Assert.Equal($"Listeners:web:Certificate: '{Path.Combine(_directory, "missing.key")}' does not exist", Error(Cert(cert, Path.Combine(_directory, "missing.key"))));
        Assert.StartsWith($"Listeners:web:Certificate: '{notPem}' is neither PEM nor PKCS#12", Error(Cert(notPem)));
        Assert.Equal($"Listeners:web:Certificate: '{noCertificate}' holds no PEM certificate", Error(Cert(noCertificate, key)));
        var brokenError = Error(Cert(broken, key));
        Assert.True(brokenError.StartsWith($"Listeners:web:Certificate: '{broken}' holds a PEM certificate that does not parse", StringComparison.Ordinal), brokenError);
        Assert.Equal($"Listeners:web:Certificate: '{cert}' holds no private key; set KeyPath to the key's file", Error(Cert(cert)));
        Assert.Equal($"Listeners:web:Certificate: '{otherKey}' holds the key of another certificate: it does not match the certificate in '{cert}'",
            Error(Cert(cert, otherKey)));
        Assert.Equal("Listeners:web:Certificate:Path: required", Error("""{ "KeyPath": "x.key" }"""));
    }

    [Fact]
    public void EncryptedPemKey_NeedsTheRightPassword()
    {
        using var web = Certificate("web.example");
        var cert = Write("web.pem", web.ExportCertificatePem());
        var key = Write("web.key", web.GetECDsaPrivateKey()!.ExportEncryptedPkcs8PrivateKeyPem("right",
            new PbeParameters(PbeEncryptionAlgorithm.Aes256Cbc, HashAlgorithmName.SHA256, 1000)));

        Assert.Equal(web.SerialNumber, LoadValid(Listener($$""" "Certificate": {{Cert(cert, key, "right")}} """)).Listeners.Single().Tls!.Default!.Initial!.SerialNumber);
        Assert.Equal($"Listeners:web:Certificate: '{key}' holds an encrypted private key: it needs a Password",
            Assert.Single(Load(Listener($$""" "Certificate": {{Cert(cert, key)}} """)).Errors));
        Assert.StartsWith($"Listeners:web:Certificate: '{key}' cannot be decrypted: the Password is wrong",
            Assert.Single(Load(Listener($$""" "Certificate": {{Cert(cert, key, "wrong")}} """)).Errors));
    }

    [Fact]
    public void ClientOnlyCertificate_IsRefusedForAListener()
    {
        using var client = Certificate("client", eku: "1.3.6.1.5.5.7.3.2");
        var (cert, key) = WritePem("client", client);

        Assert.Equal($"Listeners:web:Certificate: '{cert}': the certificate's extended key usage does not include server authentication",
            Assert.Single(Load(Listener($$""" "Certificate": {{Cert(cert, key)}} """)).Errors));
    }

    [Fact]
    public void SettingProblems_AreErrorsOrWarnings()
    {
        using var web = Certificate("web.example");
        var (cert, key) = WritePem("web", web);
        var certificate = $$""" "Certificate": {{Cert(cert, key)}} """;

        Assert.Equal(["Listeners:web:SslProtocols:0: 'Tls11' is not offered: TLS 1.0 and 1.1 are deprecated (RFC 8996); use Tls12 and Tls13",
                      "Listeners:web:SslProtocols:1: 'Tls14' is not a TLS version (Tls12, Tls13)"],
            Load(Listener(certificate + """, "SslProtocols": [ "Tls11", "Tls14" ] """)).Errors);
        Assert.StartsWith("Listeners:web:Protocols: Http1AndHttp2 needs TLS",
            Assert.Single(Load(Listener(""" "Protocols": "Http1AndHttp2" """)).Errors));
        Assert.StartsWith("Listeners:web:Sni:*: '*' is not a server name",
            Assert.Single(Load(Listener($$""" "Sni": { "*": { "Certificate": {{Cert(cert, key)}} } } """)).Errors));
        Assert.Equal("Listeners:web:Sni:a.example:Certificate: required: the certificate for this server name (Path, KeyPath, Password)",
            Assert.Single(Load(Listener(""" "Sni": { "a.example": { "Cert": { "Path": "x" } } } """)).Errors));
        Assert.Equal("Listeners:web:RedirectToHttps: a listener with a Certificate cannot redirect to https: it is https already",
            Assert.Single(Load(Listener(certificate + """, "RedirectToHttps": { "Enabled": true } """)).Errors));

        var mismatch = Load(Listener($$""" "Sni": { "other.example": { "Certificate": {{Cert(cert, key)}} } } """));
        Assert.True(mismatch.IsValid);
        Assert.Equal(["Listeners:web:Sni:other.example:Certificate: the certificate (CN=web.example) is not valid for 'other.example': clients will refuse it"],
            mismatch.Warnings);
        Assert.Equal(["Listeners:web:SslProtocols: has no effect: the listener has no Certificate or Sni"],
            Load(Listener(""" "SslProtocols": [ "Tls13" ] """)).Warnings);
        Assert.Equal(["Listeners:web:Hsts: has no effect: the listener has no Certificate or Sni, and browsers ignore HSTS over plain HTTP"],
            Load(Listener(""" "Hsts": { "Enabled": true } """)).Warnings);
        Assert.Equal(["Listeners:web:Hsts:Preload: preload lists require IncludeSubDomains and a MaxAge of at least one year (8760h)"],
            Load(Listener(certificate + """, "Hsts": { "Enabled": true, "Preload": true } """)).Warnings);
        Assert.Equal(["Listeners:web:Certificate:Pasword: unknown setting (did you mean 'Password'?)"],
            Load(Listener($$""" "Certificate": { "Path": "{{Json(cert)}}", "KeyPath": "{{Json(key)}}", "Pasword": "x" } """)).Warnings);
    }

    [Fact]
    public void HstsAndRedirect_AreOffByDefault_AndReadWhenEnabled()
    {
        using var web = Certificate("web.example");
        var (cert, key) = WritePem("web", web);

        var hsts = LoadValid(Listener($$""" "Certificate": {{Cert(cert, key)}}, "Hsts": { "Enabled": true, "IncludeSubDomains": true, "Preload": true } """))
            .Listeners.Single().Hsts!;
        Assert.Equal("max-age=31536000; includeSubDomains; preload", hsts.HeaderValue);
        Assert.Equal("max-age=600", LoadValid(Listener($$""" "Certificate": {{Cert(cert, key)}}, "Hsts": { "Enabled": true, "MaxAge": "10m" } """))
            .Listeners.Single().Hsts!.HeaderValue);
        Assert.Null(LoadValid(Listener($$""" "Certificate": {{Cert(cert, key)}}, "Hsts": { "MaxAge": "10m" } """)).Listeners.Single().Hsts);

        Assert.Equal(443, LoadValid(Listener(""" "RedirectToHttps": { "Enabled": true } """)).Listeners.Single().RedirectToHttps!.Port);
        Assert.Equal(8443, LoadValid(Listener(""" "RedirectToHttps": { "Enabled": true, "Port": 8443 } """)).Listeners.Single().RedirectToHttps!.Port);
        Assert.Null(LoadValid(Listener(""" "RedirectToHttps": { "Port": 8443 } """)).Listeners.Single().RedirectToHttps);
    }

    [Fact]
    public void RelativePaths_AreRelativeToTheConfigurationFile()
    {
        using var web = Certificate("web.example");
        Directory.CreateDirectory(Path.Combine(_directory, "tls"));
        WritePem(Path.Combine("tls", "web"), web);
        var file = Write("ferry.json", Listener(""" "Certificate": { "Path": "tls/web.pem", "KeyPath": "tls/web.key" } """));

        var result = FerryConfigLoader.Load(FerryConfigLoader.Build(file, [], new Dictionary<string, string>()));

        Assert.Equal([], result.Errors);
        Assert.Equal(Path.Combine(_directory, "tls", "web.pem"), result.Config!.Listeners.Single().Tls!.Default!.Path);
    }

    [Fact]
    public void ProxyCommand_HttpsListenAddress_BecomesTheListenerCertificate()
    {
        var settings = FerryConfigLoader.ProxyCommandSettings("https://127.0.0.1:8443/", ["http://127.0.0.1:9000"], certificate: "cert.pem", key: "key.pem");

        Assert.Equal("127.0.0.1:8443", settings["Listeners:proxy:Address"]);
        Assert.Equal("cert.pem", settings["Listeners:proxy:Certificate:Path"]);
        Assert.Equal("key.pem", settings["Listeners:proxy:Certificate:KeyPath"]);
        Assert.Equal("127.0.0.1:8080", FerryConfigLoader.ProxyCommandSettings("http://127.0.0.1:8080", ["http://x"])["Listeners:proxy:Address"]);
        Assert.Equal(("127.0.0.1:8443", true), FerryConfigLoader.ProxyListenAddress("HTTPS://127.0.0.1:8443"));
    }

    private sealed class FixedTime(DateTimeOffset now) : TimeProvider
    {
        public override DateTimeOffset GetUtcNow() => now;
    }

    [Fact]
    public void Check_RefusesExpiredOrNotYetValidCertificates_AndWarnsTwoWeeksAhead()
    {
        var notBefore = new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);
        var notAfter = new DateTimeOffset(2026, 4, 1, 0, 0, 0, TimeSpan.Zero);
        using var web = Certificate("web.example", notBefore, notAfter);
        var (cert, key) = WritePem("web", web);
        var file = new FileInfo(Write("ferry.json", Listener($$""" "Certificate": {{Cert(cert, key)}} """)));

        (int Exit, string Output, string Error) Check(DateTimeOffset now)
        {
            var output = new StringWriter();
            var error = new StringWriter();
            var exit = CheckCommand.Run(file, [], output, error, new FixedTime(now));
            return (exit, output.ToString(), error.ToString());
        }

        var valid = Check(new DateTimeOffset(2026, 2, 1, 0, 0, 0, TimeSpan.Zero));
        Assert.Equal((0, ""), (valid.Exit, valid.Error));
        Assert.Contains("configuration is valid", valid.Output);

        var soon = Check(new DateTimeOffset(2026, 3, 22, 0, 0, 0, TimeSpan.Zero));
        Assert.Equal(0, soon.Exit);
        Assert.Contains($"warning: Listeners:web:Certificate: '{cert}' expires on 2026-04-01 00:00:00Z, in 10 days (CN=web.example)", soon.Error);

        var expired = Check(new DateTimeOffset(2026, 4, 2, 0, 0, 0, TimeSpan.Zero));
        Assert.Equal(1, expired.Exit);
        Assert.Contains($"error: Listeners:web:Certificate: '{cert}' expired on 2026-04-01 00:00:00Z (CN=web.example)", expired.Error);

        var early = Check(new DateTimeOffset(2025, 12, 1, 0, 0, 0, TimeSpan.Zero));
        Assert.Equal(1, early.Exit);
        Assert.Contains($"error: Listeners:web:Certificate: '{cert}' is not valid before 2026-01-01 00:00:00Z (CN=web.example)", early.Error);
    }
}
