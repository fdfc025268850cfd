namespace Ferry.FunctionalTests.Support;

internal static class Wait
{
    // Polls a condition that other threads make true (a socket event, a background loop), within a fixed bound.
    public static async Task Until(Func<bool> condition, TimeSpan? bound = null)
    {
        var deadline = DateTime.UtcNow + (bound ?? TimeSpan.FromSeconds(30));
        while (!condition())
        {
            Assert.True(DateTime.UtcNow < deadline, "condition not met in time");
            await Task.Delay(10);
        }
    }
}
