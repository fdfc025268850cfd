using System.Net.Sockets;
using System.Text;

namespace Ferry.Hosting;

/// <summary>
/// The conversation on the control socket (Restart:ControlSocket) by which a new Ferry process takes the listening
/// sockets over from the running one (docs/decisions/2026-12-02-zero-drop-restarts.md). One message each way per
/// step, on a SOCK_SEQPACKET Unix domain socket so that a message and the descriptors attached to it arrive whole:
/// <code>
/// new → old  "ferry-takeover 1"
/// old → new  "ferry-sockets PID" + every listening socket (SCM_RIGHTS)
///            the new process starts serving on them (and binds whatever it listens on besides)
/// new → old  "stop"
/// old        stops accepting, gives up the control socket's path
/// old → new  "stopped"; then it drains and exits, while the new one binds the path for the next restart
/// </code>
/// A new process that fails to start simply closes the connection: the old one never stopped accepting and goes on.
/// </summary>
internal static class Handover
{
    public const string Hello = "ferry-takeover 1";
    public const string SocketsPrefix = "ferry-sockets ";
    public const string Stop = "stop";
    public const string Stopped = "stopped";
    public const int MaxMessage = 256;

    public static Socket NewSocket() => new(AddressFamily.Unix, SocketType.Seqpacket, ProtocolType.Unspecified);

    /// <summary>Only the same user (or root) may take the sockets over or hand them out.</summary>
    public static string? RefusePeer(Socket connection)
    {
        var (pid, uid) = Unix.PeerCredentials(connection);
        var self = Unix.EffectiveUserId();
        return uid == self || uid == 0 ? null : $"process {pid} runs as uid {uid}, not {self} or root";
    }

    public static int? ParseSocketsMessage(string message) =>
        message.StartsWith(SocketsPrefix, StringComparison.Ordinal) && int.TryParse(message.AsSpan(SocketsPrefix.Length), out var pid) && pid > 0
            ? pid
            : null;

    public static string? NotSupported() =>
        Unix.IsSupported ? null : "taking over listening sockets needs Linux on a 64-bit processor";
}

/// <summary>The running process's side: listens on the control socket and hands its sockets to the first successor
/// that asks and then confirms.</summary>
internal sealed partial class HandoverServer : IAsyncDisposable
{
    // How long a successor may take from receiving the sockets to saying "stop": its whole start.
    private static readonly TimeSpan SuccessorStartTimeout = TimeSpan.FromSeconds(60);
    private static readonly TimeSpan MessageTimeout = TimeSpan.FromSeconds(10);

    private readonly string _path;
    private readonly Socket _listener;
    private readonly Func<IReadOnlyList<Socket>> _sockets;
    private readonly Func<Task> _stopAccepting;
    private readonly ILogger _logger;
    private readonly CancellationTokenSource _closed = new();
    private readonly TaskCompletionSource<int> _handedOver = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly Task _loop;
    private int _pathReleased;

    private HandoverServer(string path, Socket listener, Func<IReadOnlyList<Socket>> sockets, Func<Task> stopAccepting, ILogger logger)
    {
        _path = path;
        _listener = listener;
        _sockets = sockets;
        _stopAccepting = stopAccepting;
        _logger = logger;
        _loop = Task.Run(LoopAsync);
    }

    /// <summary>Completes with the successor's process id once it has taken over and this process stopped accepting.</summary>
    public Task<int> HandedOver => _handedOver.Task;

    public string Path => _path;

    /// <summary>
    /// Binds <paramref name="path"/> (mode 0600). A leftover file nobody answers on is replaced; a live one means
    /// another Ferry serves there, which is an error: this process was meant to take over from it (--takeover).
    /// </summary>
    [System.Runtime.Versioning.SupportedOSPlatform("linux")]
    public static HandoverServer Start(string path, Func<IReadOnlyList<Socket>> sockets, Func<Task> stopAccepting, ILogger logger)
    {
        var endPoint = new UnixDomainSocketEndPoint(path);
        if (File.Exists(path))
        {
            using var probe = Handover.NewSocket();
            try
            {
                probe.Connect(endPoint);
                throw new IOException($"another process serves the control socket {path}; start with --takeover to take over from it");
            }
            catch (SocketException)
            {
                File.Delete(path);
            }
        }
        var listener = Handover.NewSocket();
        try
        {
            listener.Bind(endPoint);
            File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite);
            listener.Listen(4);
        }
        catch (Exception ex) when (ex is SocketException or UnauthorizedAccessException)
        {
            listener.Dispose();
            throw new IOException($"cannot listen on the control socket {path}: {ex.Message}", ex);
        }
        return new HandoverServer(path, listener, sockets, stopAccepting, logger);
    }

    private async Task LoopAsync()
    {
        while (!_closed.IsCancellationRequested)
        {
            Socket connection;
            try
            {
                connection = await _listener.AcceptAsync(_closed.Token);
            }
            catch (Exception ex) when (ex is OperationCanceledException or ObjectDisposedException or SocketException)
            {
                return;
            }
            using (connection)
            {
                try
                {
                    if (await TryHandOverAsync(connection))
                    {
                        return;
                    }
                }
                catch (Exception ex) when (ex is SocketException or IOException or OperationCanceledException)
                {
                    LogAbandoned(_logger, ex.Message);
                }
            }
        }
    }

    private async Task<bool> TryHandOverAsync(Socket connection)
    {
        if (Handover.RefusePeer(connection) is { } refused)
        {
            LogRefused(_logger, refused);
            return false;
        }
        var (pid, _) = Unix.PeerCredentials(connection);
        var hello = await ReceiveAsync(connection, MessageTimeout);
        if (hello != Handover.Hello)
        {
            LogRefused(_logger, $"process {pid} sent '{hello}', not '{Handover.Hello}'");
            return false;
        }
        var sockets = _sockets();
        Unix.SendWithDescriptors(connection, Encoding.ASCII.GetBytes($"{Handover.SocketsPrefix}{Environment.ProcessId}"), sockets);
        LogOffered(_logger, sockets.Count, pid);
        var answer = await ReceiveAsync(connection, SuccessorStartTimeout);
        if (answer != Handover.Stop)
        {
            // The successor failed to start (or went away): it closed the connection, and this process never stopped.
            LogAbandoned(_logger, answer is null ? $"process {pid} went away before taking over" : $"process {pid} sent '{answer}'");
            return false;
        }
        // From here on the successor serves: whatever happens to this connection, this process drains and exits.
        try
        {
            await _stopAccepting();
            ReleasePath();
            await connection.SendAsync(Encoding.ASCII.GetBytes(Handover.Stopped));
        }
        finally
        {
            LogHandedOver(_logger, pid);
            _handedOver.TrySetResult(pid);
        }
        return true;
    }

    private static async Task<string?> ReceiveAsync(Socket connection, TimeSpan timeout)
    {
        using var cancel = new CancellationTokenSource(timeout);
        var buffer = new byte[Handover.MaxMessage];
        var read = await connection.ReceiveAsync(buffer, SocketFlags.None, cancel.Token);
        return read == 0 ? null : Encoding.ASCII.GetString(buffer, 0, read);
    }

    // Closing the listener and removing the file before answering "stopped" lets the successor bind the same path.
    private void ReleasePath()
    {
        if (Interlocked.Exchange(ref _pathReleased, 1) == 0)
        {
            _closed.Cancel();
            _listener.Dispose();
            try
            {
                File.Delete(_path);
            }
            catch (IOException)
            {
                // Already gone: nothing to release.
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        ReleasePath();
        await _loop;
        _handedOver.TrySetCanceled();
        _closed.Dispose();
    }

    [LoggerMessage(EventId = 60, Level = LogLevel.Information, Message = "handover: offered {Count} listening socket(s) to process {Pid}")]
    private static partial void LogOffered(ILogger logger, int count, int pid);

    [LoggerMessage(EventId = 61, Level = LogLevel.Warning, Message = "handover abandoned, still serving: {Reason}")]
    private static partial void LogAbandoned(ILogger logger, string reason);

    [LoggerMessage(EventId = 62, Level = LogLevel.Warning, Message = "handover refused: {Reason}")]
    private static partial void LogRefused(ILogger logger, string reason);

    [LoggerMessage(EventId = 63, Level = LogLevel.Information, Message = "handover: process {Pid} took over; stopped accepting, draining")]
    private static partial void LogHandedOver(ILogger logger, int pid);
}

/// <summary>The new process's side: receives the running process's listening sockets, and once serving on them tells
/// it to stop. Disposing without <see cref="CompleteAsync"/> leaves the old process serving.</summary>
internal sealed class HandoverClient : IDisposable
{
    private readonly Socket _connection;

    private HandoverClient(Socket connection, int predecessor, List<Socket> sockets)
    {
        _connection = connection;
        PredecessorPid = predecessor;
        Sockets = sockets;
    }

    public int PredecessorPid { get; }

    /// <summary>This process's descriptors for the predecessor's listening sockets (hand them to ListenSockets).</summary>
    public IReadOnlyList<Socket> Sockets { get; }

    public static HandoverClient Connect(string path, TimeSpan timeout)
    {
        if (Handover.NotSupported() is { } why)
        {
            throw new IOException(why);
        }
        var connection = Handover.NewSocket();
        try
        {
            connection.Connect(new UnixDomainSocketEndPoint(path));
            if (Handover.RefusePeer(connection) is { } refused)
            {
                throw new IOException($"the control socket {path} belongs to another user: {refused}");
            }
            connection.Send(Encoding.ASCII.GetBytes(Handover.Hello));
            if (!connection.Poll(timeout, SelectMode.SelectRead))
            {
                throw new IOException($"no answer on the control socket {path} within {timeout.TotalSeconds:0} s");
            }
            var (data, sockets) = Unix.ReceiveWithDescriptors(connection, Handover.MaxMessage);
            var message = Encoding.ASCII.GetString(data);
            if (Handover.ParseSocketsMessage(message) is not { } pid)
            {
                foreach (var socket in sockets)
                {
                    socket.Dispose();
                }
                throw new IOException(data.Length == 0
                    ? $"the process on {path} closed the control connection (is a takeover already under way?)"
                    : $"unexpected answer on the control socket {path}: '{message}'");
            }
            return new HandoverClient(connection, pid, sockets);
        }
        catch (SocketException ex)
        {
            connection.Dispose();
            throw new IOException($"cannot take over through {path}: {ex.Message}", ex);
        }
        catch
        {
            connection.Dispose();
            throw;
        }
    }

    /// <summary>Tells the predecessor to stop accepting, and waits until it has (and has released the control socket's path).</summary>
    public void Complete(TimeSpan timeout)
    {
        _connection.Send(Encoding.ASCII.GetBytes(Handover.Stop));
        if (!_connection.Poll(timeout, SelectMode.SelectRead))
        {
            throw new IOException($"process {PredecessorPid} did not confirm it stopped accepting within {timeout.TotalSeconds:0} s");
        }
        var buffer = new byte[Handover.MaxMessage];
        var read = _connection.Receive(buffer);
        var answer = Encoding.ASCII.GetString(buffer, 0, read);
        if (answer != Handover.Stopped)
        {
            throw new IOException($"process {PredecessorPid} answered '{answer}' instead of '{Handover.Stopped}'");
        }
    }

    public void Dispose() => _connection.Dispose();
}
