using System.Text.RegularExpressions;
using Ferry.Errors;
using Ferry.Forwarding;

namespace Ferry.Tests.Errors;

// The error table column by column, and against docs/errors.md, which tells clients and operators what it says.
public sealed partial class ProxyErrorTableTests
{
    // The proxy error types RFC 9209 §2.3 defines.
    private static readonly HashSet<string> Rfc9209Types =
    [
        "dns_timeout", "dns_error", "destination_not_found", "destination_unavailable", "destination_ip_prohibited",
        "destination_ip_unroutable", "connection_refused", "connection_terminated", "connection_timeout",
        "connection_read_timeout", "connection_write_timeout", "connection_limit_reached", "tls_protocol_error",
        "tls_certificate_error", "tls_alert_received", "http_request_error", "http_request_denied", "http_response_incomplete",
        "http_response_header_section_size", "http_response_header_size", "http_response_body_size",
        "http_response_trailer_section_size", "http_response_trailer_size", "http_response_transfer_coding",
        "http_response_content_coding", "http_response_timeout", "http_upgrade_failed", "http_protocol_error",
        "proxy_internal_response", "proxy_internal_error", "proxy_configuration_error", "proxy_loop_detected",
    ];

    private static IEnumerable<ProxyErrorInfo> Failures => ProxyErrorTable.All.Where(row => row.Error != ProxyError.None);

    public static TheoryData<string> Errors => new(Enum.GetNames<ProxyError>());

    [Fact]
    public void EveryValueHasItsOwnRow()
    {
        Assert.Equal(Enum.GetValues<ProxyError>().Length, ProxyErrorTable.All.Count);
        foreach (var error in Enum.GetValues<ProxyError>())
        {
            Assert.Equal(error, ProxyErrorTable.Of(error).Error);
        }
    }

    [Fact]
    public void None_IsNoFailure()
    {
        var none = ProxyErrorTable.Of(ProxyError.None);

        Assert.Equal(0, none.Status);
        Assert.Equal("", none.Type);
        Assert.Equal(FaultSide.None, none.Fault);
        Assert.Equal(HealthCount.Never, none.Health);
        Assert.False(none.ConnectFailure);
    }

    // client_aborted is Ferry's own name: no Proxy-Status carries it, the client being gone.
    [Fact]
    public void EveryType_IsRfc9209s_ButTheClientAbortNeverSent()
    {
        foreach (var row in Failures)
        {
            if (row.Error == ProxyError.ClientAborted)
            {
                Assert.Equal((499, "client_aborted"), (row.Status, row.Type));
            }
            else
            {
                Assert.Contains(row.Type, Rfc9209Types);
            }
        }
    }

    [Fact]
    public void FaultSide_AgreesWithTheStatus()
    {
        foreach (var row in Failures)
        {
            Assert.InRange(row.Status, 400, 599);
            Assert.NotEqual(FaultSide.None, row.Fault);
            // A 4xx is the client's to fix; 501 is the one 5xx that is: Ferry does not implement what it asked for.
            Assert.Equal(row.Status is < 500 or 501, row.Fault == FaultSide.Client);
            if (row.Fault == FaultSide.Destination)
            {
                Assert.Contains(row.Status, new[] { 502, 503, 504 });
            }
        }
    }

    [Fact]
    public void OnlyTheDestinationsFailuresCount_AndAllOfThemOnceAnAttemptWasMade()
    {
        foreach (var row in Failures)
        {
            if (row.Health != HealthCount.Never)
            {
                Assert.Equal(FaultSide.Destination, row.Fault);
            }
        }
        // With every destination out of rotation, no attempt was made that could count.
        Assert.Equal([ProxyError.DestinationUnavailable],
            Failures.Where(row => row.Fault == FaultSide.Destination && row.Health == HealthCount.Never).Select(row => row.Error));
    }

    [Theory]
    [MemberData(nameof(Errors))]
    public void CountsAgainstDestination_FollowsTheHealthColumn(string name)
    {
        var row = ProxyErrorTable.Of(Enum.Parse<ProxyError>(name));

        Assert.Equal(row.Health != HealthCount.Never, row.CountsAgainstDestination(reusedConnection: false));
        Assert.Equal(row.Health == HealthCount.Always, row.CountsAgainstDestination(reusedConnection: true));
    }

    [Fact]
    public void ConnectFailures_AreTheDestinationsAndAlwaysCount()
    {
        var connect = Failures.Where(row => row.ConnectFailure).ToList();

        Assert.Equal(
            [ProxyError.DnsError, ProxyError.DestinationUnroutable, ProxyError.ConnectionRefused, ProxyError.ConnectionTimeout,
                ProxyError.TlsProtocolError, ProxyError.TlsCertificateError],
            connect.Select(row => row.Error));
        Assert.All(connect, row => Assert.Equal((FaultSide.Destination, HealthCount.Always), (row.Fault, row.Health)));
    }

    // A keep-alive race is replayed and never counted: the two rules name the same failures.
    [Theory]
    [MemberData(nameof(Errors))]
    public void WhatReplayPolicyReplays_IsWhatCountsOnlyOnANewConnection(string name)
    {
        var error = Enum.Parse<ProxyError>(name);
        var failure = new ProxyException(error, "test") { BeforeResponse = true };

        Assert.Equal(ProxyErrorTable.Of(error).Health == HealthCount.NewConnectionOnly,
            new ReplayDecision(MethodAllows: true, BodyReplayable: true, BufferLength: 0).CanReplay(failure, reused: true, replayedBefore: false));
    }

    [Fact]
    public void DocsErrorsMd_DocumentsEveryTypeWithItsStatus()
    {
        var documented = ErrorsMdRows();
        Assert.NotEmpty(documented);

        // Every documented type and status is one Ferry answers with.
        foreach (var (type, status) in documented)
        {
            Assert.True(Failures.Any(row => row.Type == type && (status is null || row.Status == status)),
                $"docs/errors.md documents {type} with {status?.ToString() ?? "no status"}, which no error has");
        }
        // Every failure is documented, with its status or as never answered (the client connection is aborted or gone).
        foreach (var row in Failures)
        {
            Assert.True(documented.Any(doc => doc.Type == row.Type && (doc.Status == row.Status || doc.Status is null)),
                $"docs/errors.md has no row for {row.Error} ({row.Type}, {row.Status})");
        }
    }

    // The rows of the table in docs/errors.md (situation | error= | status) whose error cell starts with a type; the
    // status is null where no response is sent.
    private static List<(string Type, int? Status)> ErrorsMdRows()
    {
        var lines = File.ReadAllLines(FindDoc("errors.md"));
        var header = Array.FindIndex(lines, line => line.StartsWith("| situation |", StringComparison.Ordinal));
        Assert.True(header >= 0, "docs/errors.md has no error table");
        var rows = new List<(string, int?)>();
        foreach (var line in lines.Skip(header + 2).TakeWhile(line => line.StartsWith('|')))
        {
            var cells = line.Trim('|').Split('|');
            Assert.True(cells.Length == 3, $"not a three-cell row: {line}");
            var error = cells[1].Trim();
            if (LeadingType().Match(error) is not { Success: true } type)
            {
                // Kestrel's own refusals and a client going away: no type of Ferry's.
                continue;
            }
            rows.Add((type.Groups[1].Value, int.TryParse(cells[2].Trim(), out var status) ? status : null));
        }
        return rows;
    }

    private static string FindDoc(string name)
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            var candidate = Path.Combine(dir.FullName, "docs", name);
            if (File.Exists(candidate))
            {
                return candidate;
            }
        }
        throw new FileNotFoundException($"docs/{name} not found above {AppContext.BaseDirectory}");
    }

    [GeneratedRegex(@"^`([a-z0-9_]+)`")]
    private static partial Regex LeadingType();
}
