namespace Ferry.Tests.Doctor;

/// <summary>nginx error log lines in nginx's exact format (ngx_log_error_core + ngx_http_log_error).</summary>
internal static class ErrorLogSamples
{
    public static string Line(string time, string level, string message, string upstream = "http://10.0.1.5:8080/api") =>
        $"2024/03/05 {time} [{level}] 1234#1234: *5678 {message}, client: 10.0.0.1, server: example.com, " +
        $"request: \"GET /api HTTP/1.1\", upstream: \"{upstream}\", host: \"example.com\"";

    public const string KeepAliveRace = "upstream prematurely closed connection while reading response header from upstream";
    public const string Timeout = "upstream timed out (110: Connection timed out) while reading response header from upstream";
    public const string Refused = "connect() failed (111: Connection refused) while connecting to upstream";

    public static readonly string Log = string.Join('\n',
        Line("14:01:02", "error", KeepAliveRace),
        Line("14:01:07", "error", "recv() failed (104: Connection reset by peer) while reading response header from upstream"),
        Line("14:01:31", "error", "writev() failed (32: Broken pipe) while sending request to upstream", "http://10.0.1.6:8080/api/orders"),
        Line("14:02:10", "crit", "connect() to 10.0.1.5:8080 failed (99: Cannot assign requested address) while connecting to upstream"),
        Line("14:02:30", "error", Timeout),
        Line("14:02:31", "error", Refused, "http://10.0.1.8:8080/"),
        Line("14:02:32", "error", "no live upstreams while connecting to upstream", "http://backend/"),
        Line("14:02:59", "warn", "an upstream response is buffered to a temporary file /var/cache/nginx/proxy_temp/1/00/0000000001 while reading upstream"),
        "this is not an nginx line",
        "2024/03/05 14:03:00 [error] garbage without pid",
        "",
        "2024/03/05 14:03:01 [error] 1234#0: *9 open() \"/srv/www/favicon.ico\" failed (2: No such file or directory), client: 10.0.0.9, server: example.com, request: \"GET /favicon.ico HTTP/1.1\", host: \"example.com\"") + "\n";
}
