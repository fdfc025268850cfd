using System.Net;
using Ferry.Configuration;
using Microsoft.AspNetCore.Connections;

namespace Ferry.Hosting;

/// <summary>
/// Which listener a connection came through and whether its peer is one of that listener's trusted proxies. Set once
/// per connection; requests see it through their feature collection, which falls back to the connection's.
/// </summary>
internal sealed class ListenerConnectionFeature(ListenerConfig listener, bool peerTrusted)
{
    public ListenerConfig Listener { get; } = listener;

    public bool PeerTrusted { get; } = peerTrusted;
}

/// <summary>
/// Kestrel connection middleware of every proxied listener: with ProxyProtocol on, reads and strips the PROXY header
/// before HTTP parsing starts and makes its source the connection's remote address; then records the listener.
/// </summary>
internal static partial class ListenerConnection
{
    // Long enough for a load balancer on a busy host, short enough that silent connections do not pile up before
    // Kestrel's own timeouts take over.
    public static readonly TimeSpan HeaderTimeout = TimeSpan.FromSeconds(10);

    public static void Use(Microsoft.AspNetCore.Server.Kestrel.Core.ListenOptions options, ListenerConfig listener, TimeProvider time, ILogger logger) =>
        options.Use(next => connection => OnConnectionAsync(connection, next, listener, time, logger));

    private static async Task OnConnectionAsync(ConnectionContext connection, ConnectionDelegate next, ListenerConfig listener, TimeProvider time, ILogger logger)
    {
        if (listener.ProxyProtocol && !await AcceptProxyHeaderAsync(connection, listener, time, logger))
        {
            return; // returning closes the connection
        }
        var peer = (connection.RemoteEndPoint as IPEndPoint)?.Address;
        connection.Features.Set(new ListenerConnectionFeature(listener, listener.Trusts(peer)));
        await next(connection);
    }

    private static async Task<bool> AcceptProxyHeaderAsync(ConnectionContext connection, ListenerConfig listener, TimeProvider time, ILogger logger)
    {
        var peer = connection.RemoteEndPoint as IPEndPoint;
        if (!listener.Trusts(peer?.Address))
        {
            // Only a trusted load balancer may say who the client is; anyone else could claim any address.
            LogRefused(logger, listener.Name, peer?.ToString(), "the peer is not in TrustedProxies");
            return false;
        }
        var input = connection.Transport.Input;
        using var timeout = new CancellationTokenSource(HeaderTimeout, time);
        try
        {
            while (true)
            {
                var read = await input.ReadAsync(timeout.Token);
                var status = ProxyProtocolParser.TryParse(read.Buffer, out var header, out var consumed, out var error);
                if (status == ProxyHeaderStatus.Complete)
                {
                    input.AdvanceTo(read.Buffer.GetPosition(consumed));
                    if (header.Source is { } source)
                    {
                        connection.RemoteEndPoint = source;
                    }
                    return true;
                }
                input.AdvanceTo(read.Buffer.Start, read.Buffer.End);
                if (status == ProxyHeaderStatus.Invalid)
                {
                    LogRefused(logger, listener.Name, peer?.ToString(), error!);
                    return false;
                }
                if (read.IsCompleted)
                {
                    LogRefused(logger, listener.Name, peer?.ToString(), "the connection ended before a complete PROXY protocol header");
                    return false;
                }
            }
        }
        catch (OperationCanceledException) when (timeout.IsCancellationRequested)
        {
            LogRefused(logger, listener.Name, peer?.ToString(), $"no complete PROXY protocol header within {HeaderTimeout.TotalSeconds:0} s");
            return false;
        }
        catch (Exception ex) when (ex is IOException or ConnectionResetException)
        {
            LogRefused(logger, listener.Name, peer?.ToString(), $"the connection failed before a complete PROXY protocol header: {ex.Message}");
            return false;
        }
    }

    [LoggerMessage(EventId = 40, Level = LogLevel.Warning, Message = "listener {Listener}: connection from {Peer} closed: {Reason}")]
    private static partial void LogRefused(ILogger logger, string listener, string? peer, string reason);
}
