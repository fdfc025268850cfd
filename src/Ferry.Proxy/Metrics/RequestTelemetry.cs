using Ferry.AccessLog;
using Ferry.Forwarding;

namespace Ferry.Metrics;

// The one place a finished request is reported: metrics, the status page's per-second stats and the access log.
// Never blocks: the access log only queues the record (or drops it when its writer is behind).
internal sealed class RequestTelemetry(FerryMetrics? metrics, RequestStats stats, AccessLogWriter? accessLog)
{
    public RequestStats Stats => stats;

    // Called once per client request when its response has ended (or failed). The record must not change afterwards:
    // the access log formats it later on its own thread.
    public void Complete(RequestRecord record)
    {
        metrics?.Record(record);
        stats.Record(record);
        accessLog?.Enqueue(record);
    }
}
