using System.CommandLine;
using Ferry.Configuration;
using Ferry.Hosting;
using Microsoft.Extensions.Configuration;

namespace Ferry.Cli;

// `ferry proxy --listen A --to URL [--to URL...]`: a one-line proxy. It builds the same configuration keys a file would
// and goes through the same loader, so it has exactly the production defaults of a config-file cluster.
internal static class ProxyCommand
{
    public static Command Create()
    {
        var listen = new Option<string>("--listen", "-l")
        {
            Description = "address to listen on, e.g. 127.0.0.1:8080, or https://127.0.0.1:8443 with --cert", DefaultValueFactory = _ => "127.0.0.1:8080",
        };
        var to = new Option<string[]>("--to", "-t") { Description = "destination URL (repeat for several)", Required = true, AllowMultipleArgumentsPerToken = true };
        var admin = new Option<string?>("--admin") { Description = "admin listener address (default 127.0.0.1:9901)" };
        var noAdmin = new Option<bool>("--no-admin") { Description = "do not start the admin listener" };
        var ca = new Option<string?>("--ca") { Description = "PEM file of the CAs that https destinations' certificates must chain to (default: the system trust store)" };
        var insecure = new Option<bool>("--insecure") { Description = "accept any certificate from https destinations (tests only)" };
        var cert = new Option<string?>("--cert") { Description = "certificate of an https --listen: PEM (chain after the certificate), or PKCS#12 without --key" };
        var key = new Option<string?>("--key") { Description = "PEM private key of --cert, when not in the same file" };
        var command = new Command("proxy", "Proxy one listener to one or more destinations, without a configuration file.")
        {
            listen, to, admin, noAdmin, ca, insecure, cert, key,
        };
        command.TreatUnmatchedTokensAsErrors = false;
        command.SetAction((parse, stop) =>
        {
            var https = FerryConfigLoader.ProxyListenAddress(parse.GetValue(listen)!).Https;
            if (https != parse.GetValue(cert) is not null)
            {
                Console.Error.WriteLine(https
                    ? "ferry: --listen https://... needs --cert (and --key unless the key is in the same file or the file is PKCS#12)"
                    : "ferry: --cert needs an https listener: --listen https://address:port");
                return Task.FromResult(1);
            }
            if (parse.GetValue(key) is not null && parse.GetValue(cert) is null)
            {
                Console.Error.WriteLine("ferry: --key needs --cert");
                return Task.FromResult(1);
            }
            var settings = FerryConfigLoader.ProxyCommandSettings(parse.GetValue(listen)!, parse.GetRequiredValue(to), parse.GetValue(admin), !parse.GetValue(noAdmin),
                parse.GetValue(ca), parse.GetValue(insecure), parse.GetValue(cert), parse.GetValue(key));
            var configuration = new ConfigurationBuilder()
                .AddInMemoryCollection(settings)
                .AddConfiguration(FerryConfigLoader.Build(null, parse.UnmatchedTokens, Environment.GetEnvironmentVariables()))
                .Build();
            return ServerRunner.RunAsync(FerryConfigLoader.Load(configuration), null, stop, options: new FerryServerOptions { Configuration = configuration });
        });
        return command;
    }
}
