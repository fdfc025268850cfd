using System.CommandLine;

namespace Ferry.Cli;

internal static class FerryCommandLine
{
    public static Task<int> InvokeAsync(string[] args)
    {
        var parse = Build().Parse(args);
        // The serving commands handle SIGTERM and SIGINT themselves (ServerRunner): System.CommandLine would end the
        // process two seconds after the signal, in the middle of the drain.
        var serves = parse.CommandResult.Command is RootCommand || parse.CommandResult.Command.Name is "run" or "proxy";
        return parse.InvokeAsync(serves ? new InvocationConfiguration { ProcessTerminationTimeout = null } : null);
    }

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
