using System.Buffers;
using System.Text;
using BenchmarkDotNet.Attributes;
using Ferry.AccessLog;
using Ferry.Forwarding;
using Ferry.Http1;

namespace Ferry.Benchmarks;

// The per-request pieces of the upstream engine and the access log, one operation = one request. The figures that
// matter are in the Allocated column: the bench/profile total (bytes per request for the whole process) minus these
// is what Kestrel, hosting and the async machinery cost (docs/decisions/2026-11-22-hot-path-2.md).
[MemoryDiagnoser]
public class HotPathBenchmarks
{
    // nginx's answer in the bench's small scenario, byte for byte.
    private static readonly byte[] NginxResponse = Encoding.ASCII.GetBytes(
        "HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sun, 22 Nov 2026 02:14:00 GMT\r\nContent-Type: text/plain\r\n"
        + "Content-Length: 6\r\nConnection: keep-alive\r\n\r\nhello\n");

    private readonly ResponseHeadParser _parser = new(Http1Limits.Default);
    private readonly ResponseHead _head = new();
    private readonly ArrayBufferWriter<byte> _output = new(4096);
    private ProxyStateHolder _state = null!;
    private RequestRecord _record = null!;

    [GlobalSetup]
    public void Setup()
    {
        _state = SampleRequests.State();
        _record = SampleRequests.Record(_state);
    }

    [GlobalCleanup]
    public void Cleanup() => _state.Current.DisposeAsync().AsTask().GetAwaiter().GetResult();

    // Steady state on a reused connection: the head is parsed into the connection's ResponseHead again and again.
    [Benchmark]
    public int ParseResponseHead()
    {
        var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(NginxResponse));
        _parser.TryParse(ref reader, _head);
        return _head.StatusCode;
    }

    // The request head of `wrk http://host/`: request line, Host, and the X-Forwarded-* Ferry appends.
    [Benchmark]
    public int WriteRequestHead()
    {
        _output.ResetWrittenCount();
        RequestHeadWriter.WriteRequestLine(_output, "GET", "/");
        RequestHeadWriter.WriteHeader(_output, "Host", "127.0.0.1:8080");
        RequestHeadWriter.WriteHeader(_output, "X-Forwarded-For", "127.0.0.1");
        RequestHeadWriter.WriteHeader(_output, "X-Forwarded-Proto", "http");
        RequestHeadWriter.WriteHeader(_output, "X-Forwarded-Host", "127.0.0.1:8000");
        RequestHeadWriter.WriteEnd(_output);
        return _output.WrittenCount;
    }

    [Benchmark]
    public int AccessLogJsonLine()
    {
        _output.ResetWrittenCount();
        AccessLogFormatter.WriteJson(_record, _output);
        return _output.WrittenCount;
    }

    [Benchmark]
    public int AccessLogCombinedLine()
    {
        _output.ResetWrittenCount();
        AccessLogFormatter.WriteCombined(_record, _output);
        return _output.WrittenCount;
    }
}
