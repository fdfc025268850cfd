namespace Ferry.FunctionalTests.Lab;

internal static class Poll
{
    /// <summary>Waits for a condition that another thread makes true, failing after the usual socket timeout.</summary>
    public static async Task UntilAsync(Func<bool> condition)
    {
        var deadline = DateTime.UtcNow + RawHttpConnection.Timeout;
        while (!condition())
        {
            Assert.True(DateTime.UtcNow < deadline, "condition not met in time");
            await Task.Delay(5);
        }
    }
}
