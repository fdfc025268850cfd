using System.Buffers;
using System.Text;
using Ferry.AccessLog;
using Ferry.Configuration;
using Ferry.Errors;
using Ferry.Forwarding;
using Ferry.Tests.Support;

namespace Ferry.Tests.AccessLog;

public sealed class AccessLogFormatterTests : IAsyncLifetime
{
    private readonly TestRecords _records = new();

    public Task InitializeAsync() => Task.CompletedTask;

    public Task DisposeAsync() => _records.DisposeAsync().AsTask();

    private static string Format(AccessLogFormat format, RequestRecord record)
    {
        var buffer = new ArrayBufferWriter<byte>();
        AccessLogFormatter.Write(format, record, buffer);
        return Encoding.UTF8.GetString(buffer.WrittenSpan);
    }

    [Fact]
    public void Json_ReusedConnection()
    {
        Assert.Equal(
            """{"time":"2026-03-04T05:06:07.089Z","client":"192.0.2.10","method":"GET","target":"/items?id=7&q=\"x\"","protocol":"HTTP/1.1","host":"shop.example","status":200,"bytes_in":0,"bytes_out":1234,"duration_ms":3.456,"route":"r","cluster":"c","attempts":[{"destination":"a","address":"10.0.0.1:8080","status":200,"head_ms":2.100,"response_ms":3.250,"reused":true,"idle_ms":1500.000,"connection_requests":3,"replay":false}]}""" + "\n",
            Format(AccessLogFormat.Json, _records.Reused()));
    }

    [Fact]
    public void Json_Replay()
    {
        Assert.Equal(
            """{"time":"2026-03-04T05:06:07.089Z","client":"2001:db8::1","method":"PUT","target":"/orders/1","protocol":"HTTP/2","status":201,"bytes_in":512,"bytes_out":0,"duration_ms":12.000,"route":"r","cluster":"c","attempts":[{"destination":"a","address":"10.0.0.1:8080","status":0,"reused":true,"idle_ms":4000.000,"connection_requests":10,"replay":false,"error":"connection_terminated","error_details":"reused connection closed before any response byte"},{"destination":"a","address":"10.0.0.1:8080","status":201,"connect_ms":0.250,"head_ms":9.000,"response_ms":10.000,"reused":false,"replay":true}]}""" + "\n",
            Format(AccessLogFormat.Json, _records.Replayed()));
    }

    [Fact]
    public void Json_BadGatewayWithItsCause()
    {
        Assert.Equal(
            """{"time":"2026-03-04T05:06:07.089Z","client":"192.0.2.11","method":"GET","target":"/","protocol":"HTTP/1.1","status":502,"bytes_in":0,"bytes_out":39,"duration_ms":1.000,"route":"r","cluster":"c","error":"connection_refused","error_details":"connect to 10.0.0.2:8080 refused","attempts":[{"destination":"b","address":"10.0.0.2:8080","status":0,"reused":false,"replay":false,"error":"connection_refused","error_details":"connect to 10.0.0.2:8080 refused"}]}""" + "\n",
            Format(AccessLogFormat.Json, _records.BadGateway()));
    }

    // The JSON writer is kept per thread: a line must not depend on the lines or outputs that came before it.
    [Fact]
    public void Json_ConsecutiveLinesIntoDifferentOutputs_AreEachComplete()
    {
        var expected = Format(AccessLogFormat.Json, _records.Replayed());
        var first = new ArrayBufferWriter<byte>();
        AccessLogFormatter.WriteJson(_records.BadGateway(), first);
        AccessLogFormatter.WriteJson(_records.Replayed(), first);
        var second = new ArrayBufferWriter<byte>();
        AccessLogFormatter.WriteJson(_records.Replayed(), second);

        Assert.Equal(Format(AccessLogFormat.Json, _records.BadGateway()) + expected, Encoding.UTF8.GetString(first.WrittenSpan));
        Assert.Equal(expected, Encoding.UTF8.GetString(second.WrittenSpan));
    }

    [Fact]
    public void NewTlsConnection_ShowsItsProtocolAndHandshakeTime_InBothFormats()
    {
        var record = _records.Replayed();
        record.Attempts[1].TlsProtocol = "TLSv1.3";
        record.Attempts[1].TlsHandshakeTime = TimeSpan.FromMilliseconds(1.5);

        Assert.Contains(""","connect_ms":0.250,"tls":"TLSv1.3","tls_handshake_ms":1.500,"head_ms":9.000,""", Format(AccessLogFormat.Json, record));
        Assert.Contains(" ups_connect=-,0.250 ups_tls=-,TLSv1.3 ups_tls_handshake=-,1.500 ups_head=-,9.000 ", Format(AccessLogFormat.Combined, record));
    }

    [Fact]
    public void HttpsListener_ShowsTheClientTlsVersion_InBothFormats()
    {
        var original = _records.Reused();
        var record = new Ferry.Forwarding.RequestRecord
        {
            StartTime = original.StartTime,
            Method = original.Method,
            Target = original.Target,
            Protocol = original.Protocol,
            ClientTls = "TLSv1.3",
        };

        Assert.Contains(""","protocol":"HTTP/1.1","tls":"TLSv1.3",""", Format(AccessLogFormat.Json, record));
        Assert.Contains(" error=- tls=TLSv1.3 ", Format(AccessLogFormat.Combined, record));
        Assert.DoesNotContain("tls", Format(AccessLogFormat.Combined, original));
        Assert.DoesNotContain("\"tls\"", Format(AccessLogFormat.Json, original));
    }

    [Fact]
    public void Combined_ReusedConnection()
    {
        Assert.Equal(
            """192.0.2.10 - - [04/Mar/2026:05:06:07 +0000] "GET /items?id=7&q=\x22x\x22 HTTP/1.1" 200 1234 "-" "-" in=0 rt=3.456 route=r cluster=c error=- ups_addr=10.0.0.1:8080 ups_status=200 ups_connect=- ups_head=2.100 ups_response=3.250 ups_reused=1 ups_idle=1500.000 ups_reqs=3 ups_replay=0 ups_error=- details="-" """.TrimEnd() + "\n",
            Format(AccessLogFormat.Combined, _records.Reused()));
    }

    [Fact]
    public void Combined_Replay()
    {
        Assert.Equal(
            """2001:db8::1 - - [04/Mar/2026:05:06:07 +0000] "PUT /orders/1 HTTP/2" 201 0 "-" "-" in=512 rt=12.000 route=r cluster=c error=- ups_addr=10.0.0.1:8080,10.0.0.1:8080 ups_status=-,201 ups_connect=-,0.250 ups_head=-,9.000 ups_response=-,10.000 ups_reused=1,0 ups_idle=4000.000,- ups_reqs=10,- ups_replay=0,1 ups_error=connection_terminated,- details="reused connection closed before any response byte" """.TrimEnd() + "\n",
            Format(AccessLogFormat.Combined, _records.Replayed()));
    }

    [Fact]
    public void Combined_BadGatewayWithItsCause()
    {
        Assert.Equal(
            """192.0.2.11 - - [04/Mar/2026:05:06:07 +0000] "GET / HTTP/1.1" 502 39 "-" "-" in=0 rt=1.000 route=r cluster=c error=connection_refused ups_addr=10.0.0.2:8080 ups_status=- ups_connect=- ups_head=- ups_response=- ups_reused=0 ups_idle=- ups_reqs=- ups_replay=0 ups_error=connection_refused details="connect to 10.0.0.2:8080 refused" """.TrimEnd() + "\n",
            Format(AccessLogFormat.Combined, _records.BadGateway()));
    }

    [Fact]
    public void Combined_EscapesQuotesControlAndNonAsciiBytes()
    {
        var record = _records.Reused();
        var forged = new RequestRecord
        {
            StartTime = record.StartTime,
            Method = "GET",
            Target = "/a\"b\n\u00e9",
            Protocol = "HTTP/1.1",
            Status = 404,
            Error = ProxyError.NoRoute,
        };

        var line = Format(AccessLogFormat.Combined, forged);

        Assert.StartsWith("""- - - [04/Mar/2026:05:06:07 +0000] "GET /a\x22b\x0A\xE9 HTTP/1.1" 404 0""", line);
        Assert.Single(line.Split('\n', StringSplitOptions.RemoveEmptyEntries));
    }
}
