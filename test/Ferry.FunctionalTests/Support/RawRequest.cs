using System.Net.Sockets;
using System.Text;

namespace Ferry.FunctionalTests.Support;

internal static class RawRequest
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);

    // Sends the bytes as written, which HttpClient would not (bad targets, HTTP/1.0, pipelining), on a new connection,
    // and returns all that arrives until the peer closes it.
    public static async Task<string> SendAsync(Uri proxy, string request)
    {
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await socket.ConnectAsync(proxy.Host, proxy.Port).WaitAsync(Bound);
        return await SendAsync(socket, request);
    }

    // The same on a socket already connected.
    public static async Task<string> SendAsync(Socket socket, string request)
    {
        await socket.SendAsync(Encoding.ASCII.GetBytes(request));
        var received = new MemoryStream();
        var buffer = new byte[8192];
        int n;
        while ((n = await socket.ReceiveAsync(buffer.AsMemory()).AsTask().WaitAsync(Bound)) > 0)
        {
            received.Write(buffer, 0, n);
        }
        return Encoding.Latin1.GetString(received.ToArray());
    }
}
