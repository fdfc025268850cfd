using System.Net;
using System.Net.Sockets;
using Ferry.Errors;
using Ferry.Loops;

namespace Ferry.Upstream;

// A connected socket, the address it reached, and the loop's stream over it when an event loop serves it.
internal readonly record struct Connected(Socket Socket, LoopStream? Loop, EndPoint Remote);

internal static class Connector
{
    // Linux's IP_BIND_ADDRESS_NO_PORT (SOL_IP, include/uapi/linux/in.h).
    private const int IpBindAddressNoPort = 24;

    // `source`: the local address to connect from (Clusters:<id>:SourceAddresses); null lets the kernel choose.
    public static async ValueTask<Socket> ConnectAsync(EndPoint endPoint, TimeSpan timeout, TimeProvider time, CancellationToken requestAborted,
        IPAddress? source = null) =>
        (await OpenAsync(endPoint, timeout, time, requestAborted, source, loop: null)).Socket;

    // `loop`: the event loop the connection is served by (Engine: Loops), where the request's client is; null: .NET's
    // socket engine.
    public static async ValueTask<Connected> OpenAsync(EndPoint endPoint, TimeSpan timeout, TimeProvider time, CancellationToken requestAborted,
        IPAddress? source, EventLoop? loop)
    {
        var socket = endPoint is IPEndPoint ip
            ? new Socket(ip.AddressFamily, SocketType.Stream, ProtocolType.Tcp)
            : source is not null
                ? new Socket(source.AddressFamily, SocketType.Stream, ProtocolType.Tcp)
                : new Socket(SocketType.Stream, ProtocolType.Tcp);
        // Request heads and small bodies are written in one flush; Nagle would only add latency to them.
        socket.NoDelay = true;
        using var timeoutCts = new CancellationTokenSource(timeout, time);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(timeoutCts.Token, requestAborted);
        // Once a loop has the socket it closes it, on its own thread, whatever happens: closing it here could free the
        // descriptor's number while the loop's epoll still holds it.
        var owned = true;
        try
        {
            if (source is not null)
            {
                if (OperatingSystem.IsLinux())
                {
                    // Without it, bind() picks the local port before the destination is known, so each port serves one
                    // connection per source address instead of one per destination (nginx's proxy_bind and HAProxy's
                    // `source` set it for the same reason).
                    socket.SetRawSocketOption((int)SocketOptionLevel.IP, IpBindAddressNoPort, BitConverter.GetBytes(1));
                }
                socket.Bind(new IPEndPoint(source, 0));
            }
            if (loop is not null && endPoint is IPEndPoint)
            {
                owned = false;
                return new Connected(socket, await LoopStream.ConnectAsync(loop, socket, endPoint, linked.Token), endPoint);
            }
            await socket.ConnectAsync(endPoint, linked.Token);
            return new Connected(socket, null, socket.RemoteEndPoint ?? endPoint);
        }
        catch (Exception ex)
        {
            if (owned)
            {
                socket.Dispose();
            }
            if (requestAborted.IsCancellationRequested)
            {
                throw new ProxyException(ProxyError.ClientAborted, "client went away while connecting", ex);
            }
            if (timeoutCts.IsCancellationRequested)
            {
                throw new ProxyException(ProxyError.ConnectionTimeout, $"connect timed out after {timeout.TotalMilliseconds:0} ms", ex);
            }
            throw Classify(ex);
        }
    }

    private static ProxyException Classify(Exception ex)
    {
        if (ex is not SocketException se)
        {
            return new ProxyException(ProxyError.ConnectionRefused, ex.Message, ex);
        }
        var error = se.SocketErrorCode switch
        {
            SocketError.ConnectionRefused or SocketError.ConnectionReset => ProxyError.ConnectionRefused,
            SocketError.TimedOut => ProxyError.ConnectionTimeout,
            // EADDRNOTAVAIL: no free local port for this 4-tuple space; EMFILE/ENFILE: out of descriptors.
            SocketError.AddressNotAvailable or SocketError.TooManyOpenSockets or SocketError.NoBufferSpaceAvailable
                => ProxyError.LocalResourcesExhausted,
            SocketError.HostNotFound or SocketError.TryAgain or SocketError.NoData => ProxyError.DnsError,
            SocketError.NetworkUnreachable or SocketError.HostUnreachable => ProxyError.DestinationUnroutable,
            _ => ProxyError.ConnectionRefused,
        };
        var details = error == ProxyError.LocalResourcesExhausted
            ? $"local resources exhausted ({se.SocketErrorCode}): Ferry could not open a connection"
            : $"connect failed: {se.SocketErrorCode}";
        return new ProxyException(error, details, se);
    }
}
