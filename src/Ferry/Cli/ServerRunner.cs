using System.Runtime.InteropServices;
using Ferry.Configuration;
using Ferry.Hosting;

namespace Ferry.Cli;

// What `run`, `proxy` and the demo share: report the configuration's problems, start, wait for a stop signal, drain.
internal static class ServerRunner
{
    public static bool Report(ConfigLoadResult result, TextWriter output, TextWriter error)
    {
        foreach (var warning in result.Warnings)
        {
            error.WriteLine($"warning: {warning}");
        }
        foreach (var problem in result.Errors)
        {
            error.WriteLine($"error: {problem}");
        }
        if (!result.IsValid)
        {
            error.WriteLine($"ferry: the configuration has {result.Errors.Count} error(s); nothing was started.");
            return false;
        }
        return true;
    }

    public static async Task<int> RunAsync(ConfigLoadResult result, Func<FerryServer, string>? banner, CancellationToken stop,
        FerryServerOptions? options = null)
    {
        if (!Report(result, Console.Out, Console.Error))
        {
            return 1;
        }
        FerryServer server;
        try
        {
            server = await FerryServer.StartAsync(result.Config!, options, stop);
        }
        catch (IOException ex)
        {
            // Kestrel reports an address in use or not available as an IOException.
            Console.Error.WriteLine($"ferry: cannot listen: {ex.Message}");
            return 2;
        }
        await using (server)
        {
            using var sighup = options?.Source is null ? null : ReloadOnSighup(server);
            foreach (var uri in server.ListenerUris)
            {
                Console.WriteLine($"ferry: proxying on {uri}");
            }
            if (server.AdminUri is { } admin)
            {
                Console.WriteLine($"ferry: admin on {admin} (status page at /, /status, /metrics, /healthz)");
            }
            if (banner is not null)
            {
                Console.WriteLine(banner(server));
            }
            try
            {
                await Task.Delay(Timeout.Infinite, stop);
            }
            catch (OperationCanceledException)
            {
                Console.WriteLine("ferry: stopping, draining requests in flight");
            }
            await server.StopAsync();
        }
        return 0;
    }

    // The one place SIGHUP reloads the configuration and the listeners' certificate files, as for nginx. The access log
    // also reopens its file on SIGHUP (AccessLogWriter.ListenForSighup): every registered handler runs.
    private static PosixSignalRegistration? ReloadOnSighup(FerryServer server)
    {
        if (OperatingSystem.IsWindows())
        {
            return null;
        }
        return PosixSignalRegistration.Create(PosixSignal.SIGHUP, context =>
        {
            // Handled: the default action of SIGHUP would end the process.
            context.Cancel = true;
            // Off the signal's thread: an exception there would end the process; a failed certificate is logged by the store.
            _ = Task.Run(server.Certificates.Reload);
            _ = server.Reloader.ReloadAsync("SIGHUP");
        });
    }
}
