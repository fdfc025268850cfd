// A minimal YARP reverse proxy in the shape bench/run gives Ferry: one route for every path, one cluster with one
// destination, HTTP/1.1 to the upstream, no logging (Ferry's access log is what ferry-nolog leaves out). bench/run
// measures it as the `yarp` target.
//
//   YarpBench --listen 127.0.0.1:PORT --to http://127.0.0.1:PORT [--cert cert.pem --key key.pem] [--ca ca.pem
//             --server-name NAME]
using System.Net;
using System.Security.Cryptography.X509Certificates;
using Yarp.ReverseProxy.Configuration;
using Yarp.ReverseProxy.Forwarder;

var options = new Dictionary<string, string>();
for (var i = 0; i + 1 < args.Length; i += 2)
{
    options[args[i]] = args[i + 1];
}

if (!options.TryGetValue("--listen", out var listen) || !options.TryGetValue("--to", out var to))
{
    Console.Error.WriteLine("usage: YarpBench --listen HOST:PORT --to URL [--cert PEM --key PEM] [--ca PEM --server-name NAME]");
    return 2;
}

var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { ContentRootPath = AppContext.BaseDirectory });
builder.Logging.ClearProviders();
var endpoint = IPEndPoint.Parse(listen);
builder.WebHost.ConfigureKestrel(kestrel => kestrel.Listen(endpoint, listenOptions =>
{
    if (options.TryGetValue("--cert", out var cert) && options.TryGetValue("--key", out var key))
    {
        listenOptions.UseHttps(X509Certificate2.CreateFromPemFile(cert, key));
    }
}));

var destination = new DestinationConfig { Address = to, Host = options.GetValueOrDefault("--server-name") };
var routes = new[] { new RouteConfig { RouteId = "all", ClusterId = "upstream", Match = new RouteMatch { Path = "{**catch-all}" } } };
var clusters = new[]
{
    new ClusterConfig
    {
        ClusterId = "upstream",
        Destinations = new Dictionary<string, DestinationConfig> { ["a"] = destination },
        HttpRequest = new ForwarderRequestConfig { Version = HttpVersion.Version11, VersionPolicy = HttpVersionPolicy.RequestVersionExact },
    },
};
var proxy = builder.Services.AddReverseProxy().LoadFromMemory(routes, clusters);
if (options.TryGetValue("--ca", out var ca))
{
    // The run's own certificate authority, trusted for the upstream alone, as Ferry's --ca does.
    var authority = X509Certificate2.CreateFromPem(File.ReadAllText(ca));
    proxy.ConfigureHttpClient((_, handler) =>
    {
        handler.SslOptions.CertificateChainPolicy = new X509ChainPolicy
        {
            TrustMode = X509ChainTrustMode.CustomRootTrust,
            RevocationMode = X509RevocationMode.NoCheck,
            CustomTrustStore = { authority },
        };
    });
}

var app = builder.Build();
app.MapReverseProxy();
app.Run();
return 0;
