using System.Buffers;
using System.Text;

namespace Ferry.Lab;

/// <summary>A parsed HTTP/1.x request head (RFC 9112 §3 and §5).</summary>
internal sealed class LabRequestHead
{
    /// <summary>Bound on the whole head. Kestrel's default MaxRequestHeadersTotalSize is 32 KB.</summary>
    public const int MaxHeadBytes = 32 * 1024;

    private LabRequestHead(string method, string target, int minorVersion, List<KeyValuePair<string, string>> headers, string raw)
    {
        Method = method;
        Target = target;
        MinorVersion = minorVersion;
        Headers = headers;
        Raw = raw;
        int query = target.IndexOf('?');
        Path = query < 0 ? target : target[..query];
    }

    public string Method { get; }
    public string Target { get; }
    /// <summary>Target without its query.</summary>
    public string Path { get; }
    /// <summary>0 for HTTP/1.0, 1 for HTTP/1.1.</summary>
    public int MinorVersion { get; }
    public IReadOnlyList<KeyValuePair<string, string>> Headers { get; }
    /// <summary>The head as received, request line and header lines, ending with the empty line.</summary>
    public string Raw { get; }

    public string? Header(string name)
    {
        foreach (var (key, value) in Headers)
        {
            if (string.Equals(key, name, StringComparison.OrdinalIgnoreCase))
            {
                return value;
            }
        }
        return null;
    }

    /// <summary>Whether a comma-separated header (Connection, Upgrade, Transfer-Encoding) lists this token,
    /// across every field line with that name (RFC 9110 §5.3).</summary>
    public bool HasToken(string name, string token)
    {
        foreach (var (key, value) in Headers)
        {
            if (!string.Equals(key, name, StringComparison.OrdinalIgnoreCase))
            {
                continue;
            }
            foreach (var item in value.Split(',', StringSplitOptions.TrimEntries))
            {
                if (string.Equals(item, token, StringComparison.OrdinalIgnoreCase))
                {
                    return true;
                }
            }
        }
        return false;
    }

    /// <summary>HTTP/1.1 defaults to persistent connections, HTTP/1.0 only with "Connection: keep-alive" (RFC 9112 §9.3).</summary>
    public bool WantsKeepAlive =>
        !HasToken("Connection", "close") && (MinorVersion == 1 || HasToken("Connection", "keep-alive"));

    /// <summary>
    /// Parses a head from the start of <paramref name="buffer"/>. Returns false when more bytes are needed;
    /// on success <paramref name="buffer"/> is sliced past the head. Empty lines before the request line are
    /// skipped (RFC 9112 §2.2).
    /// </summary>
    /// <exception cref="LabBadRequestException">The bytes cannot be a valid head, or it is larger than <see cref="MaxHeadBytes"/>.</exception>
    public static bool TryParse(ref ReadOnlySequence<byte> buffer, out LabRequestHead? head)
    {
        head = null;
        var reader = new SequenceReader<byte>(buffer);
        while (reader.IsNext("\r\n"u8, advancePast: true))
        {
        }
        var start = reader.Position;
        if (!reader.TryReadTo(out ReadOnlySequence<byte> headBytes, "\r\n\r\n"u8, advancePastDelimiter: true))
        {
            if (reader.Remaining > MaxHeadBytes)
            {
                throw new LabBadRequestException(431, "request head too large");
            }
            buffer = buffer.Slice(start);
            return false;
        }
        if (headBytes.Length + 4 > MaxHeadBytes)
        {
            throw new LabBadRequestException(431, "request head too large");
        }
        head = Parse(Encoding.Latin1.GetString(headBytes));
        buffer = buffer.Slice(reader.Position);
        return true;
    }

    private static LabRequestHead Parse(string text)
    {
        string[] lines = text.Split("\r\n");
        string[] requestLine = lines[0].Split(' ');
        if (requestLine.Length != 3 || requestLine[0].Length == 0 || requestLine[1].Length == 0
            || !IsToken(requestLine[0]) || requestLine[1].Any(c => c <= ' ' || c >= '\x7f'))
        {
            throw new LabBadRequestException(400, "malformed request line");
        }
        int minor = requestLine[2] switch
        {
            "HTTP/1.1" => 1,
            "HTTP/1.0" => 0,
            _ => throw new LabBadRequestException(requestLine[2].StartsWith("HTTP/", StringComparison.Ordinal) ? 505 : 400, "unsupported protocol version"),
        };
        var headers = new List<KeyValuePair<string, string>>(lines.Length - 1);
        for (int i = 1; i < lines.Length; i++)
        {
            string line = lines[i];
            int colon = line.IndexOf(':');
            // No whitespace before the colon (RFC 9112 §5.1) and no obs-fold (§5.2): both are request smuggling vectors.
            if (colon <= 0 || !IsToken(line.AsSpan(0, colon)))
            {
                throw new LabBadRequestException(400, "malformed header line");
            }
            string value = line[(colon + 1)..].Trim(' ', '\t');
            if (value.Any(c => c is '\r' or '\n' or '\0'))
            {
                throw new LabBadRequestException(400, "invalid character in header value");
            }
            headers.Add(new(line[..colon], value));
        }
        return new LabRequestHead(requestLine[0], requestLine[1], minor, headers, text + "\r\n\r\n");
    }

    private static bool IsToken(ReadOnlySpan<char> s)
    {
        foreach (char c in s)
        {
            if (!(char.IsAsciiLetterOrDigit(c) || "!#$%&'*+-.^_`|~".Contains(c)))
            {
                return false;
            }
        }
        return true;
    }
}

/// <summary>A request the Lab refuses; <see cref="StatusCode"/> is what the client is told before the connection closes.</summary>
internal sealed class LabBadRequestException(int statusCode, string reason) : Exception(reason)
{
    public int StatusCode { get; } = statusCode;
}
