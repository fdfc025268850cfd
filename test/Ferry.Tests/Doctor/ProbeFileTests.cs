using Ferry.Doctor;
using Ferry.Tests.Support;

namespace Ferry.Tests.Doctor;

public sealed class ProbeFileTests
{
    [Theory]
    [InlineData("""{ "destination": "http://10.0.0.1:8000", "idleTimeoutSeconds": 2.5 }""", 2500)]
    [InlineData("""{ "idleTimeoutSeconds": null }""", null)]
    [InlineData("""{ "destination": "http://10.0.0.1:8000" }""", null)]
    public void ReadsTheIdleTimeout(string json, int? milliseconds)
    {
        using var dir = new TempDirectory();
        var expected = milliseconds is { } ms ? TimeSpan.FromMilliseconds(ms) : (TimeSpan?)null;
        Assert.Equal(expected, ProbeFile.ReadIdleTimeout(dir.Write("probe.json", json)));
    }

    [Theory]
    [InlineData("""{ "idleTimeoutSeconds": "5s" }""")]
    [InlineData("""{ "idleTimeoutSeconds": -1 }""")]
    [InlineData("not json")]
    public void RejectsWhatIsNotAProbe(string json)
    {
        using var dir = new TempDirectory();
        Assert.Throws<InvalidDataException>(() => ProbeFile.ReadIdleTimeout(dir.Write("probe.json", json)));
    }
}
