namespace Ferry.Http1;

/// <summary>Bounds on what Ferry accepts from an upstream, so a hostile or broken upstream cannot make it buffer without end.</summary>
internal sealed class Http1Limits
{
    /// <summary>Status line, every field line and the final CRLF. 64 KiB is SocketsHttpHandler's
    /// MaxResponseHeadersLength default; nginx's proxy_buffer_size (one page, 4 or 8 KiB) is far stricter and a common
    /// source of "upstream sent too big header" 502s.</summary>
    public int MaxResponseHeaderBytes { get; init; } = 64 * 1024;

    /// <summary>Field lines in one response head; Kestrel's MaxRequestHeaderCount default is 100.</summary>
    public int MaxResponseHeaderCount { get; init; } = 100;

    /// <summary>One chunk-size line, extensions and CRLF included. A size needs at most 16 hex digits, so the rest is
    /// only extensions, which Ferry ignores; 4 KiB leaves room for any sane use.</summary>
    public int MaxChunkLineBytes { get; init; } = 4 * 1024;

    /// <summary>The trailer section after the last chunk, final CRLF included.</summary>
    public int MaxTrailerBytes { get; init; } = 16 * 1024;

    public static Http1Limits Default { get; } = new();
}
