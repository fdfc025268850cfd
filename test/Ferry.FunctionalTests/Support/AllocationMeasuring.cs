namespace Ferry.FunctionalTests.Support;

// Tests that count the bytes the whole process allocates run alone, after the parallel ones: another test's
// allocations would otherwise be counted as theirs.
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class AllocationMeasuring
{
    public const string Name = "allocation-measuring";
}
