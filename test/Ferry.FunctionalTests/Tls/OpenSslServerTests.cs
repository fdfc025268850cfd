using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Ferry.FunctionalTests.Support;

namespace Ferry.FunctionalTests.Tls;

// `openssl s_server` as the destination: OpenSSL's own alerts, which a .NET server does not send the same way.
public sealed class OpenSslServerTests
{
    private const string OpenSsl = OpenSslFactAttribute.OpenSsl;
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);

    [OpenSslFact]
    public async Task MissingClientCertificate_RejectedByATls13Server_Is502TlsProtocolError()
    {
        // With TLS 1.3 the client's handshake completes before the server checks its certificate: the refusal is an
        // alert ("certificate required") that arrives in place of the response.
        var certificates = TestCertificates.Shared;
        var port = Loopback.FreePort();
        var start = new ProcessStartInfo(OpenSsl) { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
        foreach (var argument in new[] { "s_server", "-accept", $"127.0.0.1:{port}", "-cert", certificates.ServerCertificateFile,
                     "-key", certificates.ServerKeyFile, "-CAfile", certificates.CaFile, "-Verify", "1", "-www", "-tls1_3" })
        {
            start.ArgumentList.Add(argument);
        }
        using var server = Process.Start(start)!;
        try
        {
            await Loopback.WaitListeningAsync(port, server, Bound, async () => $"openssl exited with code {server.ExitCode}: {await server.StandardError.ReadToEndAsync()}");
            var settings = ProxyHarness.Settings(("ossl", new Uri($"https://127.0.0.1:{port}/")));
            settings["Clusters:c:Tls:CaFile"] = certificates.CaFile;
            await using var proxy = await ProxyHarness.StartAsync(settings, null);

            using var response = await proxy.Client.GetAsync("/").WaitAsync(Bound);

            Assert.Equal(HttpStatusCode.BadGateway, response.StatusCode);
            var status = response.Headers.GetValues("Proxy-Status").Single();
            Assert.StartsWith("ferry; error=tls_protocol_error", status);
            Assert.Contains("certificate required", status, StringComparison.Ordinal);
        }
        finally
        {
            server.Kill(entireProcessTree: true);
            await server.WaitForExitAsync().WaitAsync(Bound);
        }
    }
}
