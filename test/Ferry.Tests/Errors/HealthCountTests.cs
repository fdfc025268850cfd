using Ferry.Errors;

namespace Ferry.Tests.Errors;

public sealed class HealthCountTests
{
    [Theory]
    [InlineData(nameof(ProxyError.ConnectionRefused), false, true)]
    [InlineData(nameof(ProxyError.ConnectionTimeout), false, true)]
    [InlineData(nameof(ProxyError.DnsError), false, true)]
    [InlineData(nameof(ProxyError.DestinationUnroutable), false, true)]
    [InlineData(nameof(ProxyError.ConnectionTerminated), false, true)]
    // An https destination whose certificate does not check out, or whose port does not speak TLS.
    [InlineData(nameof(ProxyError.TlsCertificateError), false, true)]
    [InlineData(nameof(ProxyError.TlsProtocolError), false, true)]
    [InlineData(nameof(ProxyError.ResponseTimeout), true, true)]
    [InlineData(nameof(ProxyError.ProtocolError), true, true)]
    [InlineData(nameof(ProxyError.ResponseIncomplete), true, true)]
    // A keep-alive race: the destination closed an idle connection as the request went out.
    [InlineData(nameof(ProxyError.ConnectionTerminated), true, false)]
    // EADDRNOTAVAIL, EMFILE: Ferry ran out of ports or descriptors.
    [InlineData(nameof(ProxyError.LocalResourcesExhausted), false, false)]
    [InlineData(nameof(ProxyError.ClientAborted), false, false)]
    [InlineData(nameof(ProxyError.ClientAborted), true, false)]
    [InlineData(nameof(ProxyError.ClientRequestBodyError), false, false)]
    [InlineData(nameof(ProxyError.RequestBodyTooLarge), false, false)]
    [InlineData(nameof(ProxyError.RateLimited), false, false)]
    [InlineData(nameof(ProxyError.ConnectionLimitReached), false, false)]
    [InlineData(nameof(ProxyError.DestinationUnavailable), false, false)]
    public void OnlyTheDestinationsOwnFailuresCount(string error, bool reused, bool counts) =>
        Assert.Equal(counts, ProxyErrorTable.Of(Enum.Parse<ProxyError>(error)).CountsAgainstDestination(reused));
}
