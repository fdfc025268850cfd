using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Ferry.Configuration;
using Microsoft.Extensions.Configuration;
using static Ferry.Tests.Configuration.ConfigTestJson;

namespace Ferry.Tests.Configuration;

public sealed class TlsConfigTests : IDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("ferry-tls-config-").FullName;

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    private static string Https(string cluster = "", string destination = "") =>
        Minimal(cluster: cluster, destination: destination).Replace("http://127.0.0.1:9000", "https://api.internal", StringComparison.Ordinal);

    private string Write(string name, string text)
    {
        var path = Path.Combine(_directory, name);
        File.WriteAllText(path, text);
        return path;
    }

    private static X509Certificate2 SelfSigned(ECDsa key)
    {
        var request = new CertificateRequest("CN=test", key, HashAlgorithmName.SHA256);
        return request.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(1));
    }

    private static string Json(string path) => path.Replace("\\", "\\\\", StringComparison.Ordinal);

    [Fact]
    public void HttpsDestination_IsAccepted_WithPort443_AndTheSystemTrustStore()
    {
        var cluster = LoadValid(Https()).Clusters["backend"];

        var destination = cluster.Destinations.Single();
        Assert.True(destination.IsHttps);
        Assert.Equal(443, destination.Port);
        Assert.Equal("api.internal", destination.Authority);
        Assert.Same(TlsConfig.Default, cluster.Tls);
    }

    [Fact]
    public void TlsSettings_AreRead_CaBundleAndClientCertificateAtLoadTime()
    {
        using var caKey = ECDsa.Create();
        using var ca = SelfSigned(caKey);
        using var clientKey = ECDsa.Create();
        using var client = SelfSigned(clientKey);
        var caFile = Write("ca.pem", ca.ExportCertificatePem());
        var certFile = Write("client.pem", client.ExportCertificatePem());
        var keyFile = Write("client.key", clientKey.ExportPkcs8PrivateKeyPem());

        var config = LoadValid(Https(
            cluster: $$"""
                "Tls": { "ServerName": "api.example", "CaFile": "{{Json(caFile)}}",
                         "ClientCertificate": { "Path": "{{Json(certFile)}}", "KeyPath": "{{Json(keyFile)}}" } }
                """,
            destination: """ "Tls": { "ServerName": "a.api.example" } """));

        var cluster = config.Clusters["backend"];
        Assert.Equal("api.example", cluster.Tls.ServerName);
        Assert.Equal(ca.Thumbprint, Assert.Single(cluster.Tls.TrustedCertificates!).Thumbprint);
        Assert.Equal(client.Thumbprint, cluster.Tls.ClientCertificate!.TargetCertificate.Thumbprint);
        Assert.False(cluster.Tls.DangerousAcceptAnyServerCertificate);
        Assert.Equal("a.api.example", cluster.Destinations.Single().ServerName);
    }

    [Fact]
    public void UnreadableCaFile_IsAConfigurationError()
    {
        var missing = Path.Combine(_directory, "missing.pem");
        var result = Load(Https(cluster: $$""" "Tls": { "CaFile": "{{Json(missing)}}" } """));

        Assert.False(result.IsValid);
        Assert.StartsWith($"Clusters:backend:Tls:CaFile: '{missing}' cannot be read as a PEM CA bundle", Assert.Single(result.Errors));
    }

    [Fact]
    public void CaFileWithoutCertificates_IsAConfigurationError()
    {
        var empty = Write("empty.pem", "not a certificate\n");
        var result = Load(Https(cluster: $$""" "Tls": { "CaFile": "{{Json(empty)}}" } """));

        Assert.Equal([$"Clusters:backend:Tls:CaFile: '{empty}' holds no PEM certificate"], result.Errors);
    }

    [Fact]
    public void ClientCertificateWithoutKey_IsAConfigurationError()
    {
        using var key = ECDsa.Create();
        using var certificate = SelfSigned(key);
        var certFile = Write("only-cert.pem", certificate.ExportCertificatePem());

        var result = Load(Https(cluster: $$""" "Tls": { "ClientCertificate": { "Path": "{{Json(certFile)}}" } } """));

        Assert.False(result.IsValid);
        Assert.StartsWith("Clusters:backend:Tls:ClientCertificate: the client certificate cannot be loaded", Assert.Single(result.Errors));
    }

    [Fact]
    public void TlsSection_OnAPlainHttpCluster_IsAWarning()
    {
        var result = Load(Minimal(cluster: """ "Tls": { "ServerName": "x.example" } """));

        Assert.True(result.IsValid);
        Assert.Equal(["Clusters:backend:Tls: has no effect: no destination of this cluster is https"], result.Warnings);
    }

    [Fact]
    public void DangerousAcceptAnyServerCertificate_IsAccepted_WithAWarning()
    {
        var result = Load(Https(cluster: """ "Tls": { "DangerousAcceptAnyServerCertificate": true } """));

        Assert.True(result.Config!.Clusters["backend"].Tls.DangerousAcceptAnyServerCertificate);
        Assert.Contains(result.Warnings, w => w.StartsWith("Clusters:backend:Tls:DangerousAcceptAnyServerCertificate:", StringComparison.Ordinal));
    }

    [Fact]
    public void ProxyCommand_CaAndInsecure_BecomeTheClusterTlsKeys()
    {
        var settings = FerryConfigLoader.ProxyCommandSettings("127.0.0.1:8080", ["https://127.0.0.1:8443"], caFile: "/etc/ca.pem", insecure: true);

        Assert.Equal("/etc/ca.pem", settings["Clusters:proxy:Tls:CaFile"]);
        Assert.Equal("true", settings["Clusters:proxy:Tls:DangerousAcceptAnyServerCertificate"]);
        Assert.DoesNotContain(FerryConfigLoader.ProxyCommandSettings("127.0.0.1:8080", ["http://x"]).Keys, k => k.Contains(":Tls:", StringComparison.Ordinal));
    }
}
