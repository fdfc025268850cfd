using System.Globalization;

namespace Ferry.Doctor;

/// <summary>
/// One nginx error log line: <c>2024/03/05 14:01:02 [error] 1234#1234: *5678 message while action, client: ...,
/// server: ..., request: "...", upstream: "http://10.0.1.5:8080/api", host: "..."</c>. The layout is
/// ngx_log_error_core's (time, level, pid#tid, optional *connection) followed by ngx_http_log_error's context fields.
/// </summary>
internal readonly record struct ErrorLogLine(DateTime Time, string Level, string Message, string? Upstream)
{
    private const string TimeFormat = "yyyy/MM/dd HH:mm:ss";
    private const string ClientField = ", client: ";
    private const string UpstreamField = ", upstream: \"";

    /// <summary>Whether the line starts like an nginx error log line (used to tell a log from a configuration).</summary>
    public static bool LooksLikeErrorLog(string line) =>
        line.Length > TimeFormat.Length + 2 && line[TimeFormat.Length] == ' ' && line[TimeFormat.Length + 1] == '['
        && DateTime.TryParseExact(line.AsSpan(0, TimeFormat.Length), TimeFormat, CultureInfo.InvariantCulture, DateTimeStyles.None, out _);

    public static bool TryParse(string line, out ErrorLogLine parsed)
    {
        parsed = default;
        if (!LooksLikeErrorLog(line))
        {
            return false;
        }

        var time = DateTime.ParseExact(line.AsSpan(0, TimeFormat.Length), TimeFormat, CultureInfo.InvariantCulture);
        var levelStart = TimeFormat.Length + 2;
        var levelEnd = line.IndexOf("] ", levelStart, StringComparison.Ordinal);
        if (levelEnd <= levelStart)
        {
            return false;
        }

        var level = line[levelStart..levelEnd];

        // "1234#1234: " — process id and thread id.
        var pidStart = levelEnd + 2;
        var pidEnd = line.IndexOf(": ", pidStart, StringComparison.Ordinal);
        if (pidEnd < 0 || !IsPidTid(line.AsSpan(pidStart, pidEnd - pidStart)))
        {
            return false;
        }

        var messageStart = pidEnd + 2;
        // "*5678 " — the connection number, present when the error concerns a connection.
        if (messageStart < line.Length && line[messageStart] == '*')
        {
            var space = line.IndexOf(' ', messageStart);
            if (space < 0 || !IsDigits(line.AsSpan(messageStart + 1, space - messageStart - 1)))
            {
                return false;
            }

            messageStart = space + 1;
        }

        var clientAt = line.IndexOf(ClientField, messageStart, StringComparison.Ordinal);
        var message = clientAt < 0 ? line[messageStart..] : line[messageStart..clientAt];
        string? upstream = null;
        if (clientAt >= 0)
        {
            var upstreamAt = line.IndexOf(UpstreamField, clientAt, StringComparison.Ordinal);
            if (upstreamAt >= 0)
            {
                var valueStart = upstreamAt + UpstreamField.Length;
                var valueEnd = line.IndexOf('"', valueStart);
                upstream = UpstreamAddress(valueEnd < 0 ? line[valueStart..] : line[valueStart..valueEnd]);
            }
        }

        parsed = new ErrorLogLine(time, level, message, upstream);
        return true;
    }

    /// <summary>"http://10.0.1.5:8080/api?x" → "10.0.1.5:8080"; the request URI is noise when grouping by backend.</summary>
    private static string UpstreamAddress(string url)
    {
        var schemeEnd = url.IndexOf("://", StringComparison.Ordinal);
        var hostStart = schemeEnd < 0 ? 0 : schemeEnd + 3;
        // "http://unix:/run/app.sock:/api": the socket path ends at the colon before the URI.
        var pathStart = url.AsSpan(hostStart).StartsWith("unix:")
            ? url.IndexOf(':', hostStart + "unix:".Length)
            : url.IndexOf('/', hostStart);
        return pathStart < 0 ? url[hostStart..] : url[hostStart..pathStart];
    }

    private static bool IsPidTid(ReadOnlySpan<char> s)
    {
        var hash = s.IndexOf('#');
        return hash > 0 && IsDigits(s[..hash]) && IsDigits(s[(hash + 1)..]);
    }

    private static bool IsDigits(ReadOnlySpan<char> s) => s.Length > 0 && !s.ContainsAnyExceptInRange('0', '9');
}
