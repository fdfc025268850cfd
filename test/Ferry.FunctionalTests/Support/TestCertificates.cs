using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Ferry.FunctionalTests.Support;

// A private CA made for the test run, a server certificate for 127.0.0.1 and localhost, and a client certificate, all
// signed by it; plus a second, unrelated CA for the "untrusted" cases. The CA is also written as a PEM file, which is
// what Tls:CaFile takes.
internal sealed class TestCertificates
{
    private static readonly Lazy<TestCertificates> s_shared = new(() => new TestCertificates());

    private readonly string _directory;

    private TestCertificates()
    {
        _directory = Directory.CreateTempSubdirectory("ferry-tls-").FullName;
        AppDomain.CurrentDomain.ProcessExit += (_, _) => Directory.Delete(_directory, recursive: true);
        Ca = CreateCa("Ferry Test CA");
        OtherCa = CreateCa("Unrelated Test CA");
        Server = Issue(Ca, "localhost", server: true, names: ["localhost"], addresses: [IPAddress.Loopback]);
        OtherName = Issue(Ca, "other.example", server: true, names: ["other.example"], addresses: []);
        Client = Issue(Ca, "ferry-client", server: false, names: [], addresses: []);
        CaFile = Write("ca.pem", Ca.ExportCertificatePem());
        OtherCaFile = Write("other-ca.pem", OtherCa.ExportCertificatePem());
        ClientCertificateFile = Write("client.pem", Client.ExportCertificatePem());
        using var key = Client.GetECDsaPrivateKey()!;
        ClientKeyFile = Write("client.key", key.ExportPkcs8PrivateKeyPem());
        ServerCertificateFile = Write("server.pem", Server.ExportCertificatePem());
        using var serverKey = Server.GetECDsaPrivateKey()!;
        ServerKeyFile = Write("server.key", serverKey.ExportPkcs8PrivateKeyPem());
    }

    public static TestCertificates Shared => s_shared.Value;

    public X509Certificate2 Ca { get; }
    public X509Certificate2 OtherCa { get; }
    public X509Certificate2 Server { get; }       // CN=localhost, SAN localhost and 127.0.0.1
    public X509Certificate2 OtherName { get; }    // valid chain, but only for other.example
    public X509Certificate2 Client { get; }
    public string CaFile { get; }
    public string OtherCaFile { get; }
    public string ClientCertificateFile { get; }
    public string ClientKeyFile { get; }
    public string ServerCertificateFile { get; }  // Server, for real servers that read PEM files
    public string ServerKeyFile { get; }

    private string Write(string name, string pem)
    {
        var path = Path.Combine(_directory, name);
        File.WriteAllText(path, pem);
        return path;
    }

    private static X509Certificate2 CreateCa(string name)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest($"CN={name}", key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
        request.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(request.PublicKey, false));
        return request.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(30));
    }

    // A server certificate for listener tests, signed by the shared CA, with a fresh serial each time.
    public X509Certificate2 IssueServer(string name, params string[] names) => Issue(Ca, name, server: true, names, []);

    internal static X509Certificate2 Issue(X509Certificate2 ca, string name, bool server, string[] names, IPAddress[] addresses)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest($"CN={name}", key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, false));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature, true));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension(
            [new Oid(server ? "1.3.6.1.5.5.7.3.1" : "1.3.6.1.5.5.7.3.2")], false));
        if (names.Length + addresses.Length > 0)
        {
            var san = new SubjectAlternativeNameBuilder();
            foreach (var n in names)
            {
                san.AddDnsName(n);
            }
            foreach (var a in addresses)
            {
                san.AddIpAddress(a);
            }
            request.CertificateExtensions.Add(san.Build());
        }
        var serial = new byte[8];
        RandomNumberGenerator.Fill(serial);
        using var issued = request.Create(ca, DateTimeOffset.UtcNow.AddHours(-1), DateTimeOffset.UtcNow.AddDays(7), serial);
        // Through PKCS#12 so that the key is usable by the TLS stack like a loaded certificate's.
        using var withKey = issued.CopyWithPrivateKey(key);
        return X509CertificateLoader.LoadPkcs12(withKey.Export(X509ContentType.Pkcs12), null);
    }
}
