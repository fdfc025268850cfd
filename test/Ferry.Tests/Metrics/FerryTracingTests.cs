using System.Diagnostics;
using Ferry.Configuration;
using Ferry.Errors;
using Ferry.Metrics;
using Ferry.Tests.Support;
using Microsoft.AspNetCore.Http;

namespace Ferry.Tests.Metrics;

public sealed class FerryTracingTests : IAsyncLifetime
{
    private const string ClientTraceParent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    private readonly TestRecords _records = new();
    private readonly List<Activity> _stopped = [];
    private readonly ActivityListener _listener;

    public FerryTracingTests()
    {
        _listener = new ActivityListener
        {
            ShouldListenTo = s => s.Name == FerryTracing.SourceName,
            Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllDataAndRecorded,
            ActivityStopped = a => { lock (_stopped) { _stopped.Add(a); } },
        };
        ActivitySource.AddActivityListener(_listener);
    }

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        _listener.Dispose();
        await _records.DisposeAsync();
    }

    private static HttpRequest Request()
    {
        var context = new DefaultHttpContext();
        context.Request.Method = "GET";
        context.Request.Path = "/items";
        context.Request.Host = new HostString("shop.example");
        context.Request.Headers["traceparent"] = ClientTraceParent;
        return context.Request;
    }

    [Fact]
    public void RequestSpan_ContinuesTheClientsTrace_AndTheAttemptsTraceParentNamesTheAttempt()
    {
        var tracing = new FerryTracing(TracingConfig.Default);

        using var request = tracing.StartRequest(Request());
        var attempt = tracing.StartAttempt(_records.A, "GET", reused: true);
        var traceParent = FerryTracing.TraceParent(attempt);
        FerryTracing.Stop(attempt, 502, ProxyError.ConnectionTerminated);

        Assert.NotNull(request);
        Assert.Equal(ActivityKind.Server, request.Kind);
        Assert.Equal("0af7651916cd43dd8448eb211c80319c", request.TraceId.ToHexString());
        Assert.Equal("b7ad6b7169203331", request.ParentSpanId.ToHexString());
        Assert.NotNull(attempt);
        Assert.Equal(ActivityKind.Client, attempt.Kind);
        Assert.Equal(request.SpanId, attempt.ParentSpanId);
        Assert.Equal($"00-0af7651916cd43dd8448eb211c80319c-{attempt.SpanId.ToHexString()}-01", traceParent);
        var stopped = Assert.Single(_stopped, a => a == attempt);
        Assert.Equal(502, stopped.GetTagItem("http.response.status_code"));
        Assert.Equal("connection_terminated", stopped.GetTagItem("error.type"));
        Assert.Equal(ActivityStatusCode.Error, stopped.Status);
        Assert.Equal("10.0.0.1", stopped.GetTagItem("server.address"));
    }

    [Fact]
    public void Disabled_CreatesNoActivity()
    {
        var tracing = new FerryTracing(TracingConfig.Default with { Enabled = false });

        Assert.Null(tracing.StartRequest(Request()));
        Assert.Null(tracing.StartAttempt(_records.A, "GET", reused: false));
        Assert.Null(FerryTracing.TraceParent(null));
    }
}
