using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace Ferry.FunctionalTests.Support;

// Ports and readiness for servers that tests start as processes (real servers, nginx, HAProxy, openssl).
internal static class Loopback
{
    // A port the kernel just handed out on 127.0.0.1; free again once the probe socket closes.
    public static int FreePort()
    {
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return ((IPEndPoint)socket.LocalEndPoint!).Port;
    }

    // A port that refuses connections for as long as the returned socket lives: bound without listening, so no test
    // running beside this one can bind it (as it could a port from FreePort) and answer in its place.
    public static RefusingPort RefusingPort()
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return new RefusingPort(socket);
    }

    // Waits, within `bound`, until something accepts connections on the port; fails at once with `whyExited` when the
    // process ended first.
    public static async Task WaitListeningAsync(int port, Process process, TimeSpan bound, Func<Task<string>> whyExited)
    {
        var started = Stopwatch.GetTimestamp();
        while (true)
        {
            if (process.HasExited)
            {
                throw new InvalidOperationException(await whyExited());
            }
            using var probe = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            try
            {
                await probe.ConnectAsync(new IPEndPoint(IPAddress.Loopback, port));
                return;
            }
            catch (SocketException) when (Stopwatch.GetElapsedTime(started) < bound)
            {
                await Task.Delay(50);
            }
        }
    }
}

internal sealed class RefusingPort(Socket socket) : IDisposable
{
    public int Port { get; } = ((IPEndPoint)socket.LocalEndPoint!).Port;

    public Uri Uri => new($"http://127.0.0.1:{Port}/");

    public void Dispose() => socket.Dispose();
}
