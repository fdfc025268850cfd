namespace Ferry.Probe;

/// <summary>Why a target could not be probed at all.</summary>
internal enum ProbeFailure
{
    /// <summary>The host name did not resolve.</summary>
    Dns,

    /// <summary>The connection was refused (nothing listens) or reset while connecting.</summary>
    Refused,

    /// <summary>The connection or the first response did not come in time.</summary>
    Timeout,

    /// <summary>The target answered with something that is not an HTTP/1.x response, or closed without answering.</summary>
    NotHttp,

    /// <summary>The network or host is unreachable, or another socket error happened while connecting.</summary>
    Unreachable,
}

/// <summary>The target cannot be measured; `ferry probe` reports it and exits with code 2.</summary>
internal sealed class ProbeException(ProbeFailure failure, string message, Exception? inner = null) : Exception(message, inner)
{
    public ProbeFailure Failure { get; } = failure;
}
