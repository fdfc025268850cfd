namespace Ferry.Doctor;

internal enum FindingSeverity
{
    Info,
    Warning,
    Error,
}

/// <summary>
/// A pitfall found in an nginx configuration. <see cref="Code"/> is stable (documented in docs/doctor.md) so that
/// scripts can filter on it; <see cref="Ferry"/> says how Ferry handles the same concern.
/// </summary>
internal sealed record NginxFinding(string Code, FindingSeverity Severity, string File, int Line, string Message, string Fix, string Ferry);

/// <summary>What is known about the backends behind nginx; null = unknown.</summary>
/// <param name="BackendIdleTimeout">How long the backend keeps an idle connection open (--backend-timeout, or a probe).</param>
/// <param name="BackendMaxRequests">Requests the backend serves per connection before closing it.</param>
/// <param name="Concurrency">Expected peak concurrent requests per nginx worker to one upstream.</param>
internal sealed record NginxAuditConfig(TimeSpan? BackendIdleTimeout, int? BackendMaxRequests, int? Concurrency)
{
    public static NginxAuditConfig Unknown { get; } = new(null, null, null);
}
