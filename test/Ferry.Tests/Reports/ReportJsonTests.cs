using Ferry.Incidents;
using Ferry.Probe;

namespace Ferry.Tests.Reports;

/// <summary>The JSON of `ferry probe --json` and `ferry lab --json` is read by scripts: its names, nulls, enum spellings
/// and escaping are part of the command line's contract.</summary>
public sealed class ReportJsonTests
{
    private static ProbeReport Probe(double? idle, int? maxRequests) => new(
        Target: "http://127.0.0.1:8000/",
        Server: "nginx/1.22.1",
        Http11: new ProtocolAnswer("GET / HTTP/1.1", "HTTP/1.1 200 OK", 200, KeepAlive: true, Connection: null, KeepAliveHeader: "timeout=5, max=100"),
        Http10: new ProtocolAnswer("GET / HTTP/1.0", null, null, KeepAlive: false, Connection: "close", KeepAliveHeader: null),
        KeepsAlive: true,
        Announces: new Announcements(KeepAliveTimeoutSeconds: 5, KeepAliveMax: 100, LastRequestConnectionClose: null),
        IdleTimeoutSeconds: idle,
        IdleTimeoutUpperSeconds: null,
        IdleMethod: IdleMethod.CloseObserved,
        CloseKind: CloseKind.Fin,
        MaxRequests: maxRequests,
        MaxRequestsEnd: LimitEnd.NotReached,
        MaxRequestsCloseKind: CloseKind.None,
        MaxIdleSearchedSeconds: 120,
        MaxRequestsSearched: 1000,
        DurationSeconds: 12.25,
        Recommendations: new ProbeRecommendations(
            FerryIdleTimeout: "4s",
            FerryMaxRequests: 99,
            Ferry: ["\"IdleTimeout\": \"4s\""],
            Nginx: ["keepalive_timeout 4s;"],
            HaProxy: ["timeout http-keep-alive 4s"],
            Notes: ["the backend's <limit> & more"]));

    [Fact]
    public void ProbeReport_Json_KeepsItsShape()
    {
        Assert.Equal(
            """
            {
              "target": "http://127.0.0.1:8000/",
              "server": "nginx/1.22.1",
              "http11": {
                "request": "GET / HTTP/1.1",
                "response": "HTTP/1.1 200 OK",
                "status": 200,
                "keepAlive": true,
                "connection": null,
                "keepAliveHeader": "timeout=5, max=100"
              },
              "http10": {
                "request": "GET / HTTP/1.0",
                "response": null,
                "status": null,
                "keepAlive": false,
                "connection": "close",
                "keepAliveHeader": null
              },
              "keepsAlive": true,
              "announces": {
                "keepAliveTimeoutSeconds": 5,
                "keepAliveMax": 100,
                "lastRequestConnectionClose": null
              },
              "idleTimeoutSeconds": 4.5,
              "idleTimeoutUpperSeconds": null,
              "idleMethod": "close-observed",
              "closeKind": "fin",
              "maxRequests": null,
              "maxRequestsEnd": "not-reached",
              "maxRequestsCloseKind": "none",
              "maxIdleSearchedSeconds": 120,
              "maxRequestsSearched": 1000,
              "durationSeconds": 12.25,
              "recommendations": {
                "ferryIdleTimeout": "4s",
                "ferryMaxRequests": 99,
                "ferry": [
                  "\"IdleTimeout\": \"4s\""
                ],
                "nginx": [
                  "keepalive_timeout 4s;"
                ],
                "haProxy": [
                  "timeout http-keep-alive 4s"
                ],
                "notes": [
                  "the backend's <limit> & more"
                ]
              }
            }
            """,
            Probe(4.5, null).ToJson());
    }

    [Fact]
    public void ProbeReport_Json_ReadsBackWhatItWrote()
    {
        var report = Probe(4.5, 100);

        var read = ProbeReport.FromJson(report.ToJson());

        Assert.Equal(report.ToJson(), read.ToJson());
        Assert.Equal(IdleMethod.CloseObserved, read.IdleMethod);
        Assert.Equal(LimitEnd.NotReached, read.MaxRequestsEnd);
        Assert.Equal(100, read.MaxRequests);
        Assert.Equal(["keepalive_timeout 4s;"], read.Recommendations.Nginx);
    }

    [Fact]
    public void LabReport_Json_KeepsItsShape_AndLeavesOutNulls()
    {
        var withTimes = new IncidentResult("slow-upstream", "ferry", LatencyMs: 2.5, Requests: 10, Ok: 8, ServerErrors: 1, OtherStatus: 0,
            Errors: 1, Get: new MethodResult(6, 5, 1, 0, 0), Post: new MethodResult(4, 3, 0, 0, 1), UpstreamRequests: 9,
            UpstreamPosts: 3, UpstreamConnections: 2, Seconds: 1.5)
        { P50Ms = 1.25, P99Ms = 7 };
        var withoutTimes = withTimes with { Proxy = "nginx", P50Ms = null, P99Ms = null };

        Assert.Equal(
            """
            {
              "results": [
                {
                  "incident": "slow-upstream",
                  "proxy": "ferry",
                  "latencyMs": 2.5,
                  "requests": 10,
                  "ok": 8,
                  "serverErrors": 1,
                  "otherStatus": 0,
                  "errors": 1,
                  "get": {
                    "requests": 6,
                    "ok": 5,
                    "serverErrors": 1,
                    "otherStatus": 0,
                    "errors": 0
                  },
                  "post": {
                    "requests": 4,
                    "ok": 3,
                    "serverErrors": 0,
                    "otherStatus": 0,
                    "errors": 1
                  },
                  "upstreamRequests": 9,
                  "upstreamPosts": 3,
                  "upstreamConnections": 2,
                  "seconds": 1.5,
                  "p50Ms": 1.25,
                  "p99Ms": 7,
                  "postsOk": 3
                },
                {
                  "incident": "slow-upstream",
                  "proxy": "nginx",
                  "latencyMs": 2.5,
                  "requests": 10,
                  "ok": 8,
                  "serverErrors": 1,
                  "otherStatus": 0,
                  "errors": 1,
                  "get": {
                    "requests": 6,
                    "ok": 5,
                    "serverErrors": 1,
                    "otherStatus": 0,
                    "errors": 0
                  },
                  "post": {
                    "requests": 4,
                    "ok": 3,
                    "serverErrors": 0,
                    "otherStatus": 0,
                    "errors": 1
                  },
                  "upstreamRequests": 9,
                  "upstreamPosts": 3,
                  "upstreamConnections": 2,
                  "seconds": 1.5,
                  "postsOk": 3
                }
              ]
            }
            """,
            new LabReport([withTimes, withoutTimes], NginxSkipped: null).ToJson());
        Assert.Contains("\"nginxSkipped\": \"nginx was not found\"",
            new LabReport([], "nginx was not found").ToJson(), StringComparison.Ordinal);
    }
}
