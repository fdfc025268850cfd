using System.Buffers;
using System.Buffers.Text;
using System.Globalization;
using System.Text;
using System.Text.Json;
using Ferry.Configuration;
using Ferry.Errors;
using Ferry.Forwarding;

namespace Ferry.AccessLog;

// Turns a finished RequestRecord into one access log line (with its '\n'). Runs on the background writer, never on
// the request path. Durations are milliseconds with microsecond precision: loopback requests take well under the
// millisecond that nginx's $request_time (seconds, 3 decimals) would round them to.
internal static class AccessLogFormatter
{
    private static readonly JsonWriterOptions JsonOptions = new()
    {
        // Targets and details come from clients and destinations: keep them readable ("/a?b=c&d") but still valid JSON.
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
        SkipValidation = true,
    };

    public static void Write(AccessLogFormat format, RequestRecord record, ArrayBufferWriter<byte> output)
    {
        if (format == AccessLogFormat.Json)
        {
            WriteJson(record, output);
        }
        else
        {
            WriteCombined(record, output);
        }
    }

    // One writer per thread, reset onto each output: a new Utf8JsonWriter per line was most of the log's allocations.
    // Property names are UTF-8 literals: a name given as a string is transcoded and checked for escaping on every line.
    [ThreadStatic]
    private static Utf8JsonWriter? t_json;

    public static void WriteJson(RequestRecord record, IBufferWriter<byte> output)
    {
        var json = t_json ??= new Utf8JsonWriter(output, JsonOptions);
        json.Reset(output);
        try
        {
            json.WriteStartObject();
            Span<byte> time = stackalloc byte[32];
            record.StartTime.UtcDateTime.TryFormat(time, out var timeLength, "yyyy-MM-dd'T'HH:mm:ss.fff'Z'", CultureInfo.InvariantCulture);
            json.WriteString("time"u8, time[..timeLength]);
            WriteOptional(json, "client"u8, record.ClientAddress);
            json.WriteString("method"u8, record.Method);
            json.WriteString("target"u8, record.Target);
            json.WriteString("protocol"u8, record.Protocol);
            WriteOptional(json, "tls"u8, record.ClientTls);
            WriteOptional(json, "host"u8, record.Host);
            json.WriteNumber("status"u8, record.Status);
            json.WriteNumber("bytes_in"u8, record.BytesIn);
            json.WriteNumber("bytes_out"u8, record.BytesOut);
            WriteMilliseconds(json, "duration_ms"u8, record.Duration);
            WriteOptional(json, "route"u8, record.RouteId);
            WriteOptional(json, "cluster"u8, record.ClusterId);
            if (record.Error != ProxyError.None)
            {
                json.WriteString("error"u8, ProxyErrorTable.Of(record.Error).Type);
                WriteOptional(json, "error_details"u8, record.ErrorDetails);
            }
            WriteOptional(json, "tunnel"u8, record.TunnelEnd);
            json.WriteStartArray("attempts"u8);
            foreach (var attempt in record.Attempts)
            {
                json.WriteStartObject();
                json.WriteString("destination"u8, attempt.Destination.Id);
                json.WriteString("address"u8, attempt.Destination.NextHop);
                json.WriteNumber("status"u8, attempt.Status);
                WriteMilliseconds(json, "connect_ms"u8, attempt.ConnectTime);
                WriteOptional(json, "tls"u8, attempt.TlsProtocol);
                WriteMilliseconds(json, "tls_handshake_ms"u8, attempt.TlsHandshakeTime);
                WriteMilliseconds(json, "head_ms"u8, attempt.HeadTime);
                WriteMilliseconds(json, "response_ms"u8, attempt.ResponseTime);
                json.WriteBoolean("reused"u8, attempt.Reused);
                if (attempt.Reused)
                {
                    WriteMilliseconds(json, "idle_ms"u8, attempt.IdleTime);
                    json.WriteNumber("connection_requests"u8, attempt.ConnectionRequests);
                }
                json.WriteBoolean("replay"u8, attempt.Replay);
                if (attempt.Error != ProxyError.None)
                {
                    json.WriteString("error"u8, ProxyErrorTable.Of(attempt.Error).Type);
                    WriteOptional(json, "error_details"u8, attempt.ErrorDetails);
                }
                json.WriteEndObject();
            }
            json.WriteEndArray();
            json.WriteEndObject();
            json.Flush();
        }
        finally
        {
            // Drops the reference to the output so that a thread's writer never keeps a caller's buffer alive.
            json.Reset(Stream.Null);
        }
        output.Write("\n"u8);
    }

    // nginx's "combined" ($remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer"
    // "$http_user_agent") so that existing parsers read the first part, then key=value fields. Per-attempt fields are
    // comma-separated lists, one item per attempt, like nginx's $upstream_addr and $upstream_status; "-" is "none".
    public static void WriteCombined(RequestRecord record, IBufferWriter<byte> output)
    {
        var line = new StringBuilder(256);
        line.Append(record.ClientAddress ?? "-").Append(" - - [")
            .Append(record.StartTime.ToUniversalTime().ToString("dd'/'MMM'/'yyyy':'HH':'mm':'ss' +0000'", CultureInfo.InvariantCulture))
            .Append("] \"");
        AppendEscaped(line, record.Method).Append(' ');
        AppendEscaped(line, record.Target).Append(' ');
        AppendEscaped(line, record.Protocol).Append("\" ");
        line.Append(record.Status.ToString(CultureInfo.InvariantCulture)).Append(' ')
            .Append(record.BytesOut.ToString(CultureInfo.InvariantCulture))
            .Append(" \"-\" \"-\"");
        line.Append(" in=").Append(record.BytesIn.ToString(CultureInfo.InvariantCulture));
        line.Append(" rt=");
        AppendMilliseconds(line, record.Duration);
        line.Append(" route=").Append(record.RouteId ?? "-");
        line.Append(" cluster=").Append(record.ClusterId ?? "-");
        line.Append(" error=").Append(record.Error == ProxyError.None ? "-" : ProxyErrorTable.Of(record.Error).Type);
        if (record.ClientTls is not null)
        {
            // Only on HTTPS listeners: plain-HTTP lines keep their fields.
            line.Append(" tls=").Append(record.ClientTls);
        }
        if (record.TunnelEnd is not null)
        {
            line.Append(" tunnel=").Append(record.TunnelEnd);
        }
        var attempts = record.Attempts;
        AppendList(line, " ups_addr=", attempts, static (l, a) => l.Append(a.Destination.NextHop));
        AppendList(line, " ups_status=", attempts, static (l, a) => l.Append(a.Status == 0 ? "-" : a.Status.ToString(CultureInfo.InvariantCulture)));
        AppendList(line, " ups_connect=", attempts, static (l, a) => AppendMilliseconds(l, a.ConnectTime));
        if (attempts.Exists(static a => a.TlsProtocol is not null))
        {
            // Only when an attempt opened a TLS connection: plain-HTTP lines keep their fields.
            AppendList(line, " ups_tls=", attempts, static (l, a) => l.Append(a.TlsProtocol ?? "-"));
            AppendList(line, " ups_tls_handshake=", attempts, static (l, a) => AppendMilliseconds(l, a.TlsHandshakeTime));
        }
        AppendList(line, " ups_head=", attempts, static (l, a) => AppendMilliseconds(l, a.HeadTime));
        AppendList(line, " ups_response=", attempts, static (l, a) => AppendMilliseconds(l, a.ResponseTime));
        AppendList(line, " ups_reused=", attempts, static (l, a) => l.Append(a.Reused ? '1' : '0'));
        AppendList(line, " ups_idle=", attempts, static (l, a) => AppendMilliseconds(l, a.Reused ? a.IdleTime : null));
        AppendList(line, " ups_reqs=", attempts, static (l, a) => l.Append(a.Reused ? a.ConnectionRequests.ToString(CultureInfo.InvariantCulture) : "-"));
        AppendList(line, " ups_replay=", attempts, static (l, a) => l.Append(a.Replay ? '1' : '0'));
        AppendList(line, " ups_error=", attempts, static (l, a) => l.Append(a.Error == ProxyError.None ? "-" : ProxyErrorTable.Of(a.Error).Type));
        var details = record.ErrorDetails ?? attempts.LastOrDefault(a => a.ErrorDetails is not null)?.ErrorDetails;
        line.Append(" details=\"");
        AppendEscaped(line, details ?? "-").Append("\"\n");

        var text = line.ToString();
        var span = output.GetSpan(Encoding.UTF8.GetMaxByteCount(text.Length));
        output.Advance(Encoding.UTF8.GetBytes(text, span));
    }

    private static void WriteOptional(Utf8JsonWriter json, ReadOnlySpan<byte> name, string? value)
    {
        if (value is not null)
        {
            json.WriteString(name, value);
        }
    }

    private static void WriteMilliseconds(Utf8JsonWriter json, ReadOnlySpan<byte> name, TimeSpan? value)
    {
        if (value is { } v)
        {
            // Written as a raw number so that 1.500 stays 1.500: fixed width makes columns comparable by eye.
            Span<byte> buffer = stackalloc byte[32];
            Utf8Formatter.TryFormat((decimal)Math.Round(v.TotalMilliseconds, 3), buffer, out var written, new StandardFormat('F', 3));
            json.WritePropertyName(name);
            json.WriteRawValue(buffer[..written], skipInputValidation: true);
        }
    }

    private static StringBuilder AppendMilliseconds(StringBuilder line, TimeSpan? value) =>
        value is { } v ? line.Append(v.TotalMilliseconds.ToString("F3", CultureInfo.InvariantCulture)) : line.Append('-');

    private static void AppendList(StringBuilder line, string key, AttemptList attempts, Action<StringBuilder, AttemptRecord> item)
    {
        line.Append(key);
        if (attempts.Count == 0)
        {
            line.Append('-');
            return;
        }
        for (var i = 0; i < attempts.Count; i++)
        {
            if (i > 0)
            {
                line.Append(',');
            }
            item(line, attempts[i]);
        }
    }

    // nginx escapes '"', '\' and bytes outside printable ASCII as \xHH in its text logs, so that a client cannot
    // forge a second line or break the quoting.
    private static StringBuilder AppendEscaped(StringBuilder line, string value)
    {
        foreach (var c in value)
        {
            if (c is '"' or '\\' || c < 0x20 || c >= 0x7f)
            {
                if (c > 0xff)
                {
                    foreach (var b in Encoding.UTF8.GetBytes(c.ToString()))
                    {
                        line.Append("\\x").Append(b.ToString("X2", CultureInfo.InvariantCulture));
                    }
                }
                else
                {
                    line.Append("\\x").Append(((int)c).ToString("X2", CultureInfo.InvariantCulture));
                }
            }
            else
            {
                line.Append(c);
            }
        }
        return line;
    }
}
