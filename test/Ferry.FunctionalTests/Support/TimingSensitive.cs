namespace Ferry.FunctionalTests.Support;

// Tests that measure real elapsed time against a tolerance (the probe times a backend's idle close) run alone, after
// the parallel ones: a saturated thread pool would otherwise delay their timers by more than the tolerance.
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class TimingSensitive
{
    public const string Name = "timing-sensitive";
}
