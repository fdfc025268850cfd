using System.CommandLine;

namespace Ferry.Cli;

internal static class FerryCommandLine
{
    public static Task<int> InvokeAsync(string[] args) => Build().Parse(args).InvokeAsync();

    public static RootCommand Build()
    {
        var root = new RootCommand(
            "Ferry: a reverse proxy and load balancer that does not produce intermittent 502s.\n" +
            "Without a command, starts the built-in demo: a listener proxying to two demo upstreams, with the admin page.");
        DemoCommand.Configure(root);
        root.Add(RunCommand.Create());
        root.Add(ProxyCommand.Create());
        root.Add(CheckCommand.Create());
        root.Add(ProbeCommand.Create());
        root.Add(LabCommand.Create());
        root.Add(DoctorCommand.Create());
        root.Add(ImportNginxCommand.Create());
        return root;
    }
}
