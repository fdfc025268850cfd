using System.CommandLine;
using Ferry.Configuration;
using Ferry.Lab;
using Microsoft.Extensions.Configuration;

namespace Ferry.Cli;

// The built-in demo (the root command without a subcommand): two Lab upstreams on loopback behind a Ferry listener,
// so that `dotnet run --project src/Ferry` shows a working proxy and its admin page with nothing else installed.
internal static class DemoCommand
{
    public static void Configure(RootCommand root)
    {
        var listen = new Option<string>("--listen") { Description = "demo listener address", DefaultValueFactory = _ => "127.0.0.1:8080" };
        var admin = new Option<string>("--admin") { Description = "demo admin address", DefaultValueFactory = _ => "127.0.0.1:9901" };
        root.Add(listen);
        root.Add(admin);
        root.SetAction(async (parse, stop) =>
        {
            await using var a = LabUpstream.Start(new LabUpstreamOptions { Name = "demo-a" });
            await using var b = LabUpstream.Start(new LabUpstreamOptions { Name = "demo-b" });
            var configuration = new ConfigurationBuilder()
                .AddInMemoryCollection(Settings(parse.GetValue(listen)!, parse.GetValue(admin)!, a.Uri, b.Uri))
                .Build();
            return await ServerRunner.RunAsync(FerryConfigLoader.Load(configuration), server =>
                $"ferry: demo upstreams demo-a at {a.Uri} and demo-b at {b.Uri}\n" +
                $"ferry: try   curl -i {server.ListenerUris[0]}   (answers alternate between demo-a and demo-b)\n" +
                $"ferry:       open {server.AdminUri} for the status page", stop);
        });
    }

    internal static Dictionary<string, string?> Settings(string listen, string admin, Uri a, Uri b) => new()
    {
        ["Listeners:demo:Address"] = listen,
        ["Admin:Address"] = admin,
        ["Routes:demo:ClusterId"] = "demo",
        ["Routes:demo:Match:PathPrefix"] = "/",
        ["Clusters:demo:Destinations:demo-a:Address"] = a.ToString(),
        ["Clusters:demo:Destinations:demo-b:Address"] = b.ToString(),
    };
}
