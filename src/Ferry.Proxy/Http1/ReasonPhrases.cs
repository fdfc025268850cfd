using System.Text;

namespace Ferry.Http1;

/// <summary>Cached reason phrases for the status codes upstreams send most, so parsing "200 OK" allocates nothing.</summary>
internal static class ReasonPhrases
{
    private static readonly (byte[] Bytes, string Text)[] s_common = Build(
        "OK", "Created", "Accepted", "No Content", "Partial Content", "Moved Permanently", "Found", "See Other",
        "Not Modified", "Temporary Redirect", "Permanent Redirect", "Bad Request", "Unauthorized", "Forbidden",
        "Not Found", "Method Not Allowed", "Conflict", "Too Many Requests", "Internal Server Error",
        "Bad Gateway", "Service Unavailable", "Gateway Timeout", "Continue", "Switching Protocols");

    public static string Get(ReadOnlySpan<byte> reason)
    {
        if (reason.IsEmpty)
        {
            return string.Empty;
        }

        foreach ((byte[] bytes, string text) in s_common)
        {
            if (reason.SequenceEqual(bytes))
            {
                return text;
            }
        }

        return Http1Syntax.DecodeLatin1(reason);
    }

    private static (byte[], string)[] Build(params string[] phrases) =>
        phrases.Select(p => (Encoding.ASCII.GetBytes(p), p)).ToArray();
}
