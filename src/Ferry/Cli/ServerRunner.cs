using System.Runtime.InteropServices;
using Ferry.Admin;
using Ferry.Configuration;
using Ferry.Hosting;

namespace Ferry.Cli;

// What `run`, `proxy` and the demo share: report the configuration's problems, start (taking the listeners over from
// a running process if asked), wait for a stop signal or a successor, drain.
internal static class ServerRunner
{
    // Both bound the handover's two round trips on the control socket; the predecessor's side waits longer, for the
    // whole start of its successor.
    private static readonly TimeSpan HandoverTimeout = TimeSpan.FromSeconds(10);

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

    /// <param name="takeover">The control socket of the running process to take the listeners over from, or null.</param>
    public static async Task<int> RunAsync(ConfigLoadResult result, Func<FerryServer, string>? banner, CancellationToken stop, string? takeover = null,
        FerryServerOptions? options = null)
    {
        if (!Report(result, Console.Out, Console.Error))
        {
            return 1;
        }
        var config = result.Config!;
        using var signals = new StopSignals(stop);
        var inherited = SystemdSockets.Take();
        HandoverClient? predecessor = null;
        if (takeover is not null)
        {
            try
            {
                predecessor = HandoverClient.Connect(takeover, HandoverTimeout);
                inherited.AddRange(predecessor.Sockets);
            }
            catch (IOException ex)
            {
                Console.Error.WriteLine($"ferry: cannot take over: {ex.Message}");
                inherited.ForEach(s => s.Dispose());
                return 2;
            }
        }
        FerryServer server;
        try
        {
            server = await FerryServer.StartAsync(config, (options ?? new FerryServerOptions()) with
            {
                ShutdownTimeout = config.Restart.ShutdownTimeout,
                DrainGrace = config.Restart.DrainGrace,
                InheritedSockets = inherited,
                Admin = AdminEndpoints.Handler,
            }, signals.Token);
        }
        catch (IOException ex)
        {
            // Kestrel reports an address in use or not available as an IOException. A predecessor sees the control
            // connection close and goes on serving.
            Console.Error.WriteLine($"ferry: cannot listen: {ex.Message}");
            predecessor?.Dispose();
            return 2;
        }
        await using (server)
        {
            using var sighup = options?.Source is null ? null : ReloadOnSighup(server);
            if (predecessor is not null)
            {
                using (predecessor)
                {
                    try
                    {
                        predecessor.Complete(HandoverTimeout);
                        Console.WriteLine($"ferry: took over the listeners of process {predecessor.PredecessorPid}; it drains and exits");
                    }
                    catch (Exception ex) when (ex is IOException or System.Net.Sockets.SocketException)
                    {
                        // Serving regardless: two processes accepting from the same sockets lose nothing.
                        Console.Error.WriteLine($"ferry: warning: {ex.Message}");
                    }
                }
            }
            HandoverServer? control = null;
            if (config.Restart.ControlSocket is { } path)
            {
                try
                {
                    control = StartControl(path, server);
                }
                catch (IOException ex)
                {
                    Console.Error.WriteLine($"ferry: {ex.Message}");
                    if (predecessor is null)
                    {
                        await server.StopAsync();
                        return 2;
                    }
                    // After a takeover the listeners are this process's now: keep serving, without a control socket.
                }
            }
            foreach (var uri in server.ListenerUris)
            {
                Console.WriteLine($"ferry: proxying on {uri}");
            }
            if (server.AdminUri is { } admin)
            {
                Console.WriteLine($"ferry: admin on {admin} (status page at /, /status, /metrics, /healthz)");
            }
            if (control is not null)
            {
                Console.WriteLine($"ferry: control socket {control.Path} (`ferry run --takeover` hands the listeners over)");
            }
            if (banner is not null)
            {
                Console.WriteLine(banner(server));
            }
            var stopped = Task.Delay(Timeout.Infinite, signals.Token);
            var handedOver = control?.HandedOver ?? new TaskCompletionSource<int>().Task;
            var tookOver = await Task.WhenAny(stopped, handedOver) == handedOver;
            // Draining has begun (/healthz says so) by the time the line is written.
            var drained = server.DrainAsync();
            Console.WriteLine(tookOver
                ? $"ferry: process {await handedOver} took over the listeners; draining requests in flight"
                : "ferry: stopping, draining requests in flight");
            if (control is not null)
            {
                await control.DisposeAsync();
            }
            await drained;
            Console.WriteLine("ferry: stopped");
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

    private static HandoverServer StartControl(string path, FerryServer server)
    {
        if (!OperatingSystem.IsLinux() || Handover.NotSupported() is not null)
        {
            throw new IOException($"Restart:ControlSocket: {Handover.NotSupported() ?? "Linux only"}");
        }
        var logger = server.Services.GetRequiredService<ILoggerFactory>().CreateLogger(typeof(HandoverServer).FullName!);
        return HandoverServer.Start(path, () => server.ListeningSockets, server.StopAcceptingAsync, logger);
    }

    // SIGTERM (systemd, Kubernetes, docker stop) and SIGINT (Ctrl+C) start the drain; a second one ends the process at once.
    private sealed class StopSignals : IDisposable
    {
        private readonly CancellationTokenSource _stop;
        private readonly PosixSignalRegistration[] _registrations;
        private int _received;

        public StopSignals(CancellationToken stop)
        {
            _stop = CancellationTokenSource.CreateLinkedTokenSource(stop);
            _registrations = [PosixSignalRegistration.Create(PosixSignal.SIGTERM, OnSignal), PosixSignalRegistration.Create(PosixSignal.SIGINT, OnSignal)];
        }

        public CancellationToken Token => _stop.Token;

        private void OnSignal(PosixSignalContext context)
        {
            if (Interlocked.Increment(ref _received) == 1)
            {
                context.Cancel = true;
                _stop.Cancel();
            }
        }

        public void Dispose()
        {
            foreach (var registration in _registrations)
            {
                registration.Dispose();
            }
            _stop.Dispose();
        }
    }
}
