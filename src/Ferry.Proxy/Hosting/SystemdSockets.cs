using System.Collections;
using System.Globalization;
using System.Net.Sockets;

namespace Ferry.Hosting;

/// <summary>
/// Listening sockets passed by systemd socket activation (sd_listen_fds(3)): LISTEN_PID names this process and
/// LISTEN_FDS counts the descriptors, which start at 3. Listeners adopt the one bound to their address
/// (<see cref="ListenSockets.Acquire"/>); systemd keeps its own copy, so connections queue while Ferry restarts.
/// </summary>
internal static class SystemdSockets
{
    private const int FirstDescriptor = 3;

    /// <summary>How many descriptors systemd passed to process <paramref name="pid"/>; 0 when none or not for it.</summary>
    public static int Count(IDictionary environment, int pid)
    {
        if (environment["LISTEN_PID"] is not string listenPid || environment["LISTEN_FDS"] is not string listenFds
            || !int.TryParse(listenPid, NumberStyles.None, CultureInfo.InvariantCulture, out var forPid) || forPid != pid
            || !int.TryParse(listenFds, NumberStyles.None, CultureInfo.InvariantCulture, out var count))
        {
            return 0;
        }
        return Math.Min(count, Unix.MaxDescriptors);
    }

    /// <summary>Takes the passed sockets (once: the variables are removed, as sd_listen_fds(1) does, so that no child
    /// process takes them for its own).</summary>
    public static List<Socket> Take()
    {
        var count = Unix.IsSupported ? Count(Environment.GetEnvironmentVariables(), Environment.ProcessId) : 0;
        Environment.SetEnvironmentVariable("LISTEN_PID", null);
        Environment.SetEnvironmentVariable("LISTEN_FDS", null);
        Environment.SetEnvironmentVariable("LISTEN_FDNAMES", null);
        var sockets = new List<Socket>(count);
        for (var fd = FirstDescriptor; fd < FirstDescriptor + count; fd++)
        {
            var socket = new Socket(new SafeSocketHandle(fd, ownsHandle: true));
            Unix.SetCloseOnExec(socket.SafeHandle);
            sockets.Add(socket);
        }
        return sockets;
    }
}
