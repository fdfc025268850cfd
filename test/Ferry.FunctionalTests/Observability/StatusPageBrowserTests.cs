using System.Security.Cryptography.X509Certificates;
using Ferry.Configuration;
using Ferry.Errors;
using Ferry.Forwarding;
using Ferry.FunctionalTests.Support;
using Ferry.Lab;
using Microsoft.Extensions.Configuration;
using Xunit.Abstractions;

namespace Ferry.FunctionalTests.Observability;

public sealed class StatusPageBrowserTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);

    [ChromiumFact]
    public async Task StatusPage_ShowsDestinationsHealthAndAChart_ThatUpdateAfterTraffic()
    {
        await using var a = LabUpstream.Start(new LabUpstreamOptions { Name = "a" });
        await using var b = LabUpstream.Start(new LabUpstreamOptions { Name = "b" });
        var settings = ProxyHarness.Settings(("a", a.Uri), ("b", b.Uri));
        settings["AccessLog:Enabled"] = "false";
        await using var proxy = await ProxyHarness.StartAsync(settings, null, a, b);
        var config = FerryConfigLoader.Load(new ConfigurationBuilder().AddInMemoryCollection(settings).Build()).Config!;
        await using var host = await ObservabilityHost.StartAsync(config, proxy.Server.State);
        await using var browser = await Chromium.StartAsync();
        await browser.SendAsync("Emulation.setDeviceMetricsOverride", new { width = 1280, height = 900, deviceScaleFactor = 1, mobile = false });

        await browser.NavigateAsync(host.Uri.ToString());
        await browser.WaitForAsync("document.querySelectorAll('tr[data-destination]').length === 2", "both destinations");
        Assert.Equal("available", (string?)await browser.EvaluateAsync("document.querySelector('tr[data-destination=\"b\"]').dataset.health"));
        await browser.WaitForAsync("document.getElementById('chart').dataset.total === '0' && document.getElementById('chart').querySelector('path')", "an empty chart");

        // Traffic through the proxy (pools), its records (chart) and a destination taken out of rotation (health).
        for (var i = 0; i < 20; i++)
        {
            var response = await proxy.Client.GetAsync("/").WaitAsync(Bound);
            host.Telemetry.Complete(Record(proxy, i % 2 == 0 ? "a" : "b", (int)response.StatusCode, ProxyError.None));
        }
        host.Telemetry.Complete(Record(proxy, "b", 502, ProxyError.ConnectionRefused));
        host.Telemetry.Complete(Record(proxy, "b", 502, ProxyError.ConnectionTerminated));
        host.Telemetry.Complete(Record(proxy, "a", 503, ProxyError.None));
        proxy.Destination("b").ReportConnectFailure();

        await browser.WaitForAsync("document.getElementById('chart').dataset.total === '23'", "the chart to count the requests");
        await browser.WaitForAsync("document.querySelector('tr[data-destination=\"b\"]').dataset.health === 'unavailable'", "b to be shown down");
        Assert.Equal("3", (string?)await browser.EvaluateAsync("document.getElementById('chart').dataset.errors"));
        Assert.Equal(3, (int?)await browser.EvaluateAsync("document.querySelectorAll('#chart rect.err').length"));
        var legend = (string?)await browser.EvaluateAsync("document.getElementById('legend').textContent");
        Assert.Contains("connection_refused", legend);
        Assert.Contains("connection_terminated", legend);
        Assert.Contains("destination_5xx", legend);
        var row = (string?)await browser.EvaluateAsync("document.querySelector('tr[data-destination=\"a\"]').textContent");
        Assert.Contains("90%", row); // 10 requests on one connection: 1 opened, 9 reused
        Assert.Equal("1 / 2", (string?)await browser.EvaluateAsync("document.getElementById('up').textContent"));

        var screenshot = Path.Combine(AppContext.BaseDirectory, "status-page.png");
        await File.WriteAllBytesAsync(screenshot, await browser.ScreenshotAsync());
        output.WriteLine($"status page screenshot: {screenshot}");
    }

    [ChromiumFact]
    public async Task StatusPage_ShowsListenerCertificates_AndAFailedReload()
    {
        await using var a = LabUpstream.Start(new LabUpstreamOptions { Name = "a" });
        var directory = Directory.CreateTempSubdirectory("ferry-status-tls-").FullName;
        try
        {
            var cert = Path.Combine(directory, "server.pem");
            var key = Path.Combine(directory, "server.key");
            File.WriteAllText(cert, TestCertificates.Shared.Server.ExportCertificatePem());
            using (var ecdsa = TestCertificates.Shared.Server.GetECDsaPrivateKey()!)
            {
                File.WriteAllText(key, ecdsa.ExportPkcs8PrivateKeyPem());
            }
            var settings = ProxyHarness.Settings(("a", a.Uri));
            settings["Listeners:main:Certificate:Path"] = cert;
            settings["Listeners:main:Certificate:KeyPath"] = key;
            await using var proxy = await ProxyHarness.StartAsync(settings, null, a);
            await using var browser = await Chromium.StartAsync();

            await browser.NavigateAsync(proxy.Server.AdminUri!.ToString());
            await browser.WaitForAsync("document.querySelector('tr[data-listener=\"main\"]')", "the listener's certificate");
            var row = (string?)await browser.EvaluateAsync("document.querySelector('tr[data-listener=\"main\"]').textContent");
            Assert.Contains("CN=localhost", row);
            Assert.Contains("default", row);

            File.WriteAllText(cert, "not a certificate");
            proxy.Server.Certificates.Reload();
            await browser.WaitForAsync("document.querySelector('tr[data-listener=\"main\"]').textContent.includes('failure')", "the failed reload");
            Assert.Contains("holds no PEM certificate", (string?)await browser.EvaluateAsync("document.querySelector('tr[data-listener=\"main\"]').textContent"));
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    private static RequestRecord Record(ProxyHarness proxy, string destination, int status, ProxyError error)
    {
        var record = new RequestRecord
        {
            StartTime = DateTimeOffset.UtcNow,
            Method = "GET",
            Target = "/",
            Protocol = "HTTP/1.1",
            RouteId = "all",
            ClusterId = "c",
            Status = status,
            Error = error,
        };
        record.Attempts.Add(new AttemptRecord { Destination = proxy.Destination(destination), Status = status, Error = error });
        return record;
    }
}
