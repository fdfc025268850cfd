using System.Buffers;
using System.Globalization;

namespace Ferry.Lab;

/// <summary>The built-in routes of a Lab upstream, used when no script is set (and by scripts that fall back to them).</summary>
internal static class LabRoutes
{
    /// <summary>Largest slice of the byte pattern written at once (and the largest chunk of <c>/chunked/{n}</c>).</summary>
    private const int PatternSlice = 16 * 1024;

    private static readonly byte[] Pattern = CreatePattern();

    /// <summary>The byte at <paramref name="offset"/> of every <c>/bytes/{n}</c> and <c>/chunked/{n}</c> body:
    /// the alphabet repeated, so a shifted or truncated body is visible.</summary>
    public static byte PatternByte(long offset) => (byte)('a' + (int)(offset % 26));

    public static async Task HandleAsync(LabExchange exchange, CancellationToken ct)
    {
        if (exchange.Header("Upgrade") is not null || exchange.Path == "/ws")
        {
            await LabWebSocket.HandleAsync(exchange, ct);
            return;
        }
        string path = exchange.Path;
        if (path == "/")
        {
            await exchange.WriteResponseAsync(200, $"hello from {exchange.Options.Name}\n", ct: ct);
        }
        else if (TryParameter(path, "/bytes/", out long count))
        {
            await WritePatternAsync(exchange, count, chunked: false, ct);
        }
        else if (TryParameter(path, "/chunked/", out count))
        {
            await WritePatternAsync(exchange, count, chunked: true, ct);
        }
        else if (path == "/echo")
        {
            await EchoAsync(exchange, ct);
        }
        else if (path == "/sink")
        {
            long received = await exchange.DrainBodyAsync(ct);
            await exchange.WriteResponseAsync(200, FormattableString.Invariant($"received {received}\n"), ct: ct);
        }
        else if (TryParameter(path, "/status/", out long status) && status is >= 200 and <= 599)
        {
            await exchange.WriteResponseAsync((int)status, FormattableString.Invariant($"status {status}\n"), ct: ct);
        }
        else if (TryParameter(path, "/delay/", out long milliseconds))
        {
            await Task.Delay(TimeSpan.FromMilliseconds(milliseconds), exchange.Options.TimeProvider, ct);
            await exchange.WriteResponseAsync(200, FormattableString.Invariant($"delayed {milliseconds} ms\n"), ct: ct);
        }
        else if (path == "/headers")
        {
            await exchange.WriteResponseAsync(200, exchange.RawHead, ct: ct);
        }
        else if (path == "/early-hints")
        {
            await exchange.WriteInterimAsync(103, [new("Link", "</style.css>; rel=preload; as=style")], ct);
            await exchange.WriteResponseAsync(200, "early hints sent\n", [new("Link", "</style.css>; rel=preload; as=style")], ct);
        }
        else
        {
            await exchange.WriteResponseAsync(404, $"no route for {path}\n", ct: ct);
        }
    }

    private static bool TryParameter(string path, string prefix, out long value)
    {
        value = 0;
        return path.StartsWith(prefix, StringComparison.Ordinal)
               && long.TryParse(path.AsSpan(prefix.Length), NumberStyles.None, CultureInfo.InvariantCulture, out value);
    }

    /// <summary>Generates the body slice by slice from one shared buffer, so <c>/bytes/{n}</c> never allocates n bytes.</summary>
    private static async Task WritePatternAsync(LabExchange exchange, long count, bool chunked, CancellationToken ct)
    {
        await exchange.WriteHeadAsync(200, [new("Content-Type", "application/octet-stream")], chunked ? null : count, ct);
        // Small chunked bodies still come in several chunks, so chunk boundaries are always exercised.
        int sliceLength = chunked ? (int)Math.Clamp((count + 3) / 4, 1, PatternSlice) : PatternSlice;
        for (long offset = 0; offset < count;)
        {
            int length = (int)Math.Min(sliceLength, count - offset);
            await exchange.WriteBodyAsync(Pattern.AsMemory((int)(offset % 26), length), ct);
            offset += length;
        }
        await exchange.CompleteResponseAsync(ct);
    }

    /// <summary>Streams the request body back as it arrives, with the framing the request used.</summary>
    private static async Task EchoAsync(LabExchange exchange, CancellationToken ct)
    {
        byte[] buffer = ArrayPool<byte>.Shared.Rent(PatternSlice);
        try
        {
            // Reading first lets a client that sent "Expect: 100-continue" get its 100 before the final head.
            int read = await exchange.ReadBodyAsync(buffer.AsMemory(), ct);
            string? contentType = exchange.Header("Content-Type");
            await exchange.WriteHeadAsync(200, [new("Content-Type", contentType ?? "application/octet-stream")],
                exchange.HasChunkedBody ? null : exchange.ContentLength ?? 0, ct);
            while (read > 0)
            {
                await exchange.WriteBodyAsync(buffer.AsMemory(0, read), ct);
                read = await exchange.ReadBodyAsync(buffer.AsMemory(), ct);
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
        await exchange.CompleteResponseAsync(ct);
    }

    private static byte[] CreatePattern()
    {
        // One spare alphabet so a slice can start at any offset modulo 26.
        var pattern = new byte[PatternSlice + 26];
        for (int i = 0; i < pattern.Length; i++)
        {
            pattern[i] = PatternByte(i);
        }
        return pattern;
    }
}
