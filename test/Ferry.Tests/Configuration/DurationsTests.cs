using Ferry.Configuration;

namespace Ferry.Tests.Configuration;

public sealed class DurationsTests
{
    [Theory]
    [InlineData("250ms", 250)]
    [InlineData("5s", 5_000)]
    [InlineData("1.5s", 1_500)]
    [InlineData("2m", 120_000)]
    [InlineData("1h", 3_600_000)]
    [InlineData("00:00:05", 5_000)]
    [InlineData("01:02:03", 3_723_000)]
    [InlineData("1.00:00:00", 86_400_000)]
    [InlineData("7", 7_000)]
    [InlineData("0.25", 250)]
    [InlineData("0", 0)]
    [InlineData(" 10 s ", 10_000)]
    [InlineData("10S", 10_000)]
    [InlineData("-1s", -1_000)]
    public void Parses(string text, long milliseconds)
    {
        Assert.True(Durations.TryParse(text, out var value));
        Assert.Equal(TimeSpan.FromMilliseconds(milliseconds), value);
    }

    [Theory]
    [InlineData("")]
    [InlineData("s")]
    [InlineData("5 sec")]
    [InlineData("5d")]
    [InlineData("1,5s")]
    [InlineData("abc")]
    [InlineData("1e3")]
    [InlineData("99999999999999999999999999h")]
    [InlineData("25:99:00")]
    public void Rejects(string text) => Assert.False(Durations.TryParse(text, out _));
}
