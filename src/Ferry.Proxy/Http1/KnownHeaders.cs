using System.Text;

namespace Ferry.Http1;

/// <summary>Fields whose value changes how Ferry frames or reuses the connection.</summary>
internal enum FramingHeader
{
    None,
    ContentLength,
    TransferEncoding,
    Connection,
    KeepAlive,
}

/// <summary>Cached name strings for the fields upstreams send most, so a response head costs no allocation per
/// well-known name. Both the canonical spelling and the lower-case one (HTTP/2-minded frameworks send lower case)
/// are cached; any other spelling is matched case-insensitively (RFC 9110 §5.1) but allocated.</summary>
internal static class KnownHeaders
{
    private sealed class Entry(string canonical, FramingHeader framing)
    {
        public string Canonical { get; } = canonical;
        public string Lower { get; } = canonical.ToLowerInvariant();
        public byte[] CanonicalBytes { get; } = Encoding.ASCII.GetBytes(canonical);
        public byte[] LowerBytes { get; } = Encoding.ASCII.GetBytes(canonical.ToLowerInvariant());
        public FramingHeader Framing { get; } = framing;
    }

    // Indexed by name length: a lookup compares against a handful of candidates at most.
    private static readonly Entry[][] s_byLength = Build(
    [
        new("Accept-Ranges", FramingHeader.None),
        new("Access-Control-Allow-Credentials", FramingHeader.None),
        new("Access-Control-Allow-Headers", FramingHeader.None),
        new("Access-Control-Allow-Methods", FramingHeader.None),
        new("Access-Control-Allow-Origin", FramingHeader.None),
        new("Access-Control-Expose-Headers", FramingHeader.None),
        new("Access-Control-Max-Age", FramingHeader.None),
        new("Age", FramingHeader.None),
        new("Allow", FramingHeader.None),
        new("Alt-Svc", FramingHeader.None),
        new("Cache-Control", FramingHeader.None),
        new("Connection", FramingHeader.Connection),
        new("Content-Disposition", FramingHeader.None),
        new("Content-Encoding", FramingHeader.None),
        new("Content-Language", FramingHeader.None),
        new("Content-Length", FramingHeader.ContentLength),
        new("Content-Location", FramingHeader.None),
        new("Content-Range", FramingHeader.None),
        new("Content-Security-Policy", FramingHeader.None),
        new("Content-Type", FramingHeader.None),
        new("Date", FramingHeader.None),
        new("ETag", FramingHeader.None),
        new("Expires", FramingHeader.None),
        new("Keep-Alive", FramingHeader.KeepAlive),
        new("Last-Modified", FramingHeader.None),
        new("Link", FramingHeader.None),
        new("Location", FramingHeader.None),
        new("Pragma", FramingHeader.None),
        new("Proxy-Authenticate", FramingHeader.None),
        new("Proxy-Connection", FramingHeader.None),
        new("Referrer-Policy", FramingHeader.None),
        new("Retry-After", FramingHeader.None),
        new("Server", FramingHeader.None),
        new("Set-Cookie", FramingHeader.None),
        new("Strict-Transport-Security", FramingHeader.None),
        new("TE", FramingHeader.None),
        new("Trailer", FramingHeader.None),
        new("Transfer-Encoding", FramingHeader.TransferEncoding),
        new("Upgrade", FramingHeader.None),
        new("Vary", FramingHeader.None),
        new("Via", FramingHeader.None),
        new("WWW-Authenticate", FramingHeader.None),
        new("X-Content-Type-Options", FramingHeader.None),
        new("X-Frame-Options", FramingHeader.None),
        new("X-Powered-By", FramingHeader.None),
    ]);

    /// <summary>The name as received: a cached instance when it is a known name in canonical or lower case.</summary>
    public static string GetName(ReadOnlySpan<byte> name, out FramingHeader framing)
    {
        Entry? entry = Find(name);
        if (entry is null)
        {
            framing = FramingHeader.None;
            return Http1Syntax.DecodeLatin1(name);
        }

        framing = entry.Framing;
        if (name.SequenceEqual(entry.CanonicalBytes))
        {
            return entry.Canonical;
        }

        return name.SequenceEqual(entry.LowerBytes) ? entry.Lower : Http1Syntax.DecodeLatin1(name);
    }

    /// <summary>The lower-case form of a token, cached when it is a known name (Connection usually names
    /// Keep-Alive, Upgrade or TE).</summary>
    public static string GetLowerCase(ReadOnlySpan<byte> token)
    {
        Entry? entry = Find(token);
        if (entry is not null)
        {
            return entry.Lower;
        }

        return string.Create(token.Length, token, static (chars, bytes) =>
        {
            for (int i = 0; i < bytes.Length; i++)
            {
                byte b = bytes[i];
                // Only ASCII letters fold: names are ASCII tokens, other bytes can never name a field.
                chars[i] = (char)(b is >= (byte)'A' and <= (byte)'Z' ? b + ('a' - 'A') : b);
            }
        });
    }

    private static Entry? Find(ReadOnlySpan<byte> name)
    {
        if (name.Length >= s_byLength.Length)
        {
            return null;
        }

        foreach (Entry entry in s_byLength[name.Length])
        {
            if (Ascii.EqualsIgnoreCase(name, entry.CanonicalBytes))
            {
                return entry;
            }
        }

        return null;
    }

    private static Entry[][] Build(Entry[] entries)
    {
        int maxLength = entries.Max(e => e.CanonicalBytes.Length);
        var byLength = new Entry[maxLength + 1][];
        for (int length = 0; length <= maxLength; length++)
        {
            byLength[length] = entries.Where(e => e.CanonicalBytes.Length == length).ToArray();
        }

        return byLength;
    }
}
