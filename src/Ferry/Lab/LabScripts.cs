using System.Text;

namespace Ferry.Lab;

/// <summary>
/// Ready-made misbehaviours, each usable as <see cref="LabUpstreamOptions.Script"/>. Each one reproduces a way a
/// real upstream makes a proxy answer 502 or 504; the comment says which.
/// </summary>
internal static class LabScripts
{
    /// <summary>RST right after reading the request head: a crashed worker, or a keep-alive race lost to an RST.</summary>
    public static Func<LabExchange, CancellationToken, Task> ResetBeforeHead { get; } = (exchange, _) =>
    {
        exchange.Reset();
        return Task.CompletedTask;
    };

    /// <summary>FIN right after reading the request head, no response byte: the classic keep-alive race
    /// seen from the proxy (the upstream closed an idle connection as the request arrived).</summary>
    public static Func<LabExchange, CancellationToken, Task> CloseBeforeHead { get; } = (exchange, _) =>
    {
        exchange.Close();
        return Task.CompletedTask;
    };

    /// <summary>An unparsable status line ("HTTP/1.1 abc"), then FIN.</summary>
    public static Func<LabExchange, CancellationToken, Task> GarbageHead { get; } =
        WriteThenClose("HTTP/1.1 abc\r\nContent-Length: 0\r\n\r\n");

    /// <summary>Bytes that are not HTTP at all (a TLS or SSH server on the HTTP port), then FIN.</summary>
    public static Func<LabExchange, CancellationToken, Task> NonHttpResponse { get; } =
        WriteThenClose("SSH-2.0-OpenSSH_9.6\r\n");

    /// <summary>A head with both Content-Length and Transfer-Encoding (RFC 9112 §6.1: a smuggling vector), then FIN.</summary>
    public static Func<LabExchange, CancellationToken, Task> ContentLengthAndChunked { get; } =
        WriteThenClose("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n");

    /// <summary>A chunked body whose chunk size is not hexadecimal, then FIN.</summary>
    public static Func<LabExchange, CancellationToken, Task> BadChunk { get; } =
        WriteThenClose("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nxyz\r\n\r\n");

    /// <summary>A response head larger than any proxy's buffer (64 KB of one header, nginx's default limit is 4-8 KB).</summary>
    public static Func<LabExchange, CancellationToken, Task> OversizedHead { get; } =
        WriteThenClose("HTTP/1.1 200 OK\r\nX-Big: " + new string('a', 64 * 1024) + "\r\nContent-Length: 0\r\n\r\n");

    /// <summary>Reads the request and never answers, until the upstream is disposed: a hung backend.</summary>
    public static Func<LabExchange, CancellationToken, Task> Stall { get; } = (exchange, ct) => exchange.StallAsync(ct);

    /// <summary>Sends a complete response head and part of the body, then hangs: a backend stuck mid-response.</summary>
    public static Func<LabExchange, CancellationToken, Task> StallMidBody { get; } = async (exchange, ct) =>
    {
        await exchange.WriteRawAsync(Ascii("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789"), ct);
        await exchange.StallAsync(ct);
    };

    /// <summary>Reads the whole request body, then RST without answering: the request was received and perhaps
    /// acted on, so a proxy must not replay a non-idempotent one.</summary>
    public static Func<LabExchange, CancellationToken, Task> ReadBodyThenReset { get; } = async (exchange, ct) =>
    {
        await exchange.DrainBodyAsync(ct);
        exchange.Reset();
    };

    /// <summary>Reads the whole request body, then FIN without answering.</summary>
    public static Func<LabExchange, CancellationToken, Task> ReadBodyThenClose { get; } = async (exchange, ct) =>
    {
        await exchange.DrainBodyAsync(ct);
        exchange.Close();
    };

    /// <summary>A head with Content-Length: 1000 and 10 body bytes, then FIN: the upstream died mid-body.</summary>
    public static Func<LabExchange, CancellationToken, Task> PartialBodyThenClose { get; } =
        WriteThenClose("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789");

    /// <summary>A head with Content-Length: 1000 and 10 body bytes, then RST.</summary>
    public static Func<LabExchange, CancellationToken, Task> PartialBodyThenReset { get; } = async (exchange, ct) =>
    {
        await exchange.WriteRawAsync(Ascii("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789"), ct);
        exchange.Reset();
    };

    /// <summary>A chunked body cut off after its first chunk (no last chunk), then FIN.</summary>
    public static Func<LabExchange, CancellationToken, Task> TruncatedChunkedThenClose { get; } =
        WriteThenClose("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n");

    /// <summary>
    /// The first request of each connection is served by the built-in routes, later ones get
    /// <paramref name="misbehaviour"/>: a keep-alive race on demand, e.g. <c>OnReusedConnection(CloseBeforeHead)</c>.
    /// </summary>
    public static Func<LabExchange, CancellationToken, Task> OnReusedConnection(Func<LabExchange, CancellationToken, Task> misbehaviour) =>
        (exchange, ct) => exchange.ConnectionRequestIndex == 1 ? LabRoutes.HandleAsync(exchange, ct) : misbehaviour(exchange, ct);

    /// <summary>The first <paramref name="count"/> requests the upstream receives (over all connections) get
    /// <paramref name="misbehaviour"/>, the rest are served by the built-in routes: "fails, then recovers" for retries.</summary>
    public static Func<LabExchange, CancellationToken, Task> FirstRequests(int count, Func<LabExchange, CancellationToken, Task> misbehaviour)
    {
        int seen = 0;
        return (exchange, ct) => Interlocked.Increment(ref seen) <= count ? misbehaviour(exchange, ct) : LabRoutes.HandleAsync(exchange, ct);
    }

    /// <summary>Writes <paramref name="response"/> byte for byte, then FIN.</summary>
    public static Func<LabExchange, CancellationToken, Task> WriteThenClose(string response)
    {
        byte[] bytes = Ascii(response);
        return async (exchange, ct) =>
        {
            await exchange.WriteRawAsync(bytes, ct);
            exchange.Close();
        };
    }

    private static byte[] Ascii(string text) => Encoding.ASCII.GetBytes(text);
}
