using Ferry.Configuration;
using Ferry.Routing;

namespace Ferry.Tests.Routing;

public sealed class RequestPathTests
{
    [Theory]
    [InlineData("/")]
    [InlineData("*")]
    [InlineData("/api/users?q=a%20b")]
    [InlineData("/a%20b/c")]
    [InlineData("/file.json")]
    [InlineData("/file%2ejson")]
    [InlineData("/...")]
    [InlineData("/.well-known/x")]
    [InlineData("/a/..b/c.")]
    [InlineData("/a?x=/../..//%2f")]
    public void UnambiguousTargets_AreForwardedAsSent(string raw)
    {
        foreach (var action in new[] { AmbiguousPaths.Reject, AmbiguousPaths.Normalize })
        {
            Assert.True(RequestPath.TryResolve(raw, action, out var target, out var changed, out var problem));
            Assert.Equal(raw, target);
            Assert.Null(changed);
            Assert.Null(problem);
        }
    }

    [Theory]
    [InlineData("/a/../b", "'.' or '..' segment")]
    [InlineData("/a/./b", "'.' or '..' segment")]
    [InlineData("/a/..", "'.' or '..' segment")]
    [InlineData("/a/.", "'.' or '..' segment")]
    [InlineData("/a/%2e%2E/b", "'.' or '..' segment")]
    [InlineData("/a/.%2e/b", "'.' or '..' segment")]
    [InlineData("/a/%2E/b", "'.' or '..' segment")]
    [InlineData("/a//b", "empty segment")]
    [InlineData("//a", "empty segment")]
    [InlineData("/a%2fb", "encoded slash")]
    [InlineData("/a%2F..%2Fb", "encoded slash")]
    [InlineData("/a%5cb", "encoded backslash")]
    [InlineData("/a\\b", "backslash")]
    [InlineData("http://h/a/../b", "'.' or '..' segment")]
    [InlineData("h/a", "neither a path")]
    public void AmbiguousTargets_AreRejected(string raw, string reason)
    {
        Assert.False(RequestPath.TryResolve(raw, AmbiguousPaths.Reject, out _, out _, out var problem));
        Assert.Contains(reason, problem);
    }

    [Theory]
    [InlineData("/a/../b", "/b")]
    [InlineData("/a/./b/", "/a/b/")]
    [InlineData("/a/b/..", "/a/")]
    [InlineData("/a/b/.", "/a/b/")]
    [InlineData("/../../b", "/b")]
    [InlineData("/..", "/")]
    [InlineData("//a///b//", "/a/b/")]
    [InlineData("/a/%2e%2e/b%20c?q=/../", "/b%20c?q=/../")]
    [InlineData("/x/.%2E/%2E/y", "/y")]
    [InlineData("http://h/a/../b?q", "/b?q")]
    [InlineData("http://h", "/")]
    [InlineData("http://h?q", "/?q")]
    public void Normalize_RemovesDotSegmentsAndMergesSlashes(string raw, string expected)
    {
        Assert.True(RequestPath.TryResolve(raw, AmbiguousPaths.Normalize, out var target, out var changed, out _));
        Assert.Equal(expected, target);
        var path = expected.Split('?')[0];
        Assert.Equal(Uri.UnescapeDataString(path), changed);
    }

    [Theory]
    [InlineData("/a/..%2fb")]
    [InlineData("/a/..%5Cb")]
    [InlineData("/a/..\\b")]
    public void Normalize_StillRejectsSeparatorLookalikes(string raw)
    {
        Assert.False(RequestPath.TryResolve(raw, AmbiguousPaths.Normalize, out _, out _, out var problem));
        Assert.NotNull(problem);
    }
}
