using System.Diagnostics.Metrics;
using System.Net;
using Ferry.Configuration;
using Ferry.Metrics;
using Microsoft.AspNetCore.Connections;

namespace Ferry.Hosting;

/// <summary>
/// Which listener a connection came through and whether its peer is one of that listener's trusted proxies. Set once
/// per connection; requests see it through their feature collection, which falls back to the connection's.
/// </summary>
internal sealed class ListenerConnectionFeature(ListenerConfig listener, bool peerTrusted, DrainState drain, Loops.EventLoop? loop = null)
{
    public ListenerConfig Listener { get; } = listener;

    // The event loop serving the connection (Engine: Loops): its requests' upstream connections are served there too.
    public Loops.EventLoop? Loop { get; } = loop;

    // Begun when a reload retires the listener: its responses ask HTTP/1.x clients to close.
    public DrainState Drain { get; } = drain;

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

    public static void Use(Microsoft.AspNetCore.Server.Kestrel.Core.ListenOptions options, ListenerConfig listener, DrainState drain, TimeProvider time,
        ILogger logger, IMeterFactory? meters)
    {
        var refused = new Refusals(listener.Name, logger, meters?.Create(FerryMetrics.MeterName).CreateCounter<long>(
            "ferry.listener.connections.refused", "{connection}",
            "Connections closed before HTTP because their PROXY protocol header was missing, invalid, late, or sent by a peer not in TrustedProxies."));
        options.Use(next => connection => OnConnectionAsync(connection, next, listener, drain, time, refused));
    }

    private sealed class Refusals(string listener, ILogger logger, Counter<long>? counter)
    {
        public void Add(System.Net.EndPoint? peer, string reason, string details)
        {
            LogRefused(logger, listener, peer?.ToString(), details);
            counter?.Add(1, new KeyValuePair<string, object?>("ferry.listener", listener), new KeyValuePair<string, object?>("reason", reason));
        }
    }

    private static async Task OnConnectionAsync(ConnectionContext connection, ConnectionDelegate next, ListenerConfig listener, DrainState drain,
        TimeProvider time, Refusals refused)
    {
        if (listener.ProxyProtocol && !await AcceptProxyHeaderAsync(connection, listener, time, refused))
        {
            return; // returning closes the connection
        }
        var peer = (connection.RemoteEndPoint as IPEndPoint)?.Address;
        connection.Features.Set(new ListenerConnectionFeature(listener, listener.Trusts(peer), drain, (connection as Loops.LoopConnection)?.Loop));
        await next(connection);
    }

    private static async Task<bool> AcceptProxyHeaderAsync(ConnectionContext connection, ListenerConfig listener, TimeProvider time, Refusals refused)
    {
        var peer = connection.RemoteEndPoint as IPEndPoint;
        if (!listener.Trusts(peer?.Address))
        {
            // Only a trusted load balancer may say who the client is; anyone else could claim any address.
            refused.Add(peer, "untrusted_peer", "the peer is not in TrustedProxies");
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
                    refused.Add(peer, "invalid_header", error!);
                    return false;
                }
                if (read.IsCompleted)
                {
                    refused.Add(peer, "closed", "the connection ended before a complete PROXY protocol header");
                    return false;
                }
            }
        }
        catch (OperationCanceledException) when (timeout.IsCancellationRequested)
        {
            refused.Add(peer, "timeout", $"no complete PROXY protocol header within {HeaderTimeout.TotalSeconds:0} s");
            return false;
        }
        catch (Exception ex) when (ex is IOException or ConnectionResetException)
        {
            refused.Add(peer, "closed", $"the connection failed before a complete PROXY protocol header: {ex.Message}");
            return false;
        }
    }

    [LoggerMessage(EventId = 40, Level = LogLevel.Warning, Message = "listener {Listener}: connection from {Peer} closed: {Reason}")]
    private static partial void LogRefused(ILogger logger, string listener, string? peer, string reason);
}
