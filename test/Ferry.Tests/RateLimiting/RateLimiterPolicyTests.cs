using Ferry.Configuration;
using Ferry.RateLimiting;
using Microsoft.Extensions.Time.Testing;
using Xunit.Abstractions;

namespace Ferry.Tests.RateLimiting;

public sealed class RateLimiterPolicyTests(ITestOutputHelper output)
{
    // One token an hour: nothing replenishes while a test runs, whatever the machine's speed.
    private static RateLimiterPolicyConfig OneAnHour(int maxPartitions = RateLimiterPolicyConfig.DefaultMaxPartitions) =>
        new("p", RateLimiterKind.TokenBucket, 1) { TokensPerPeriod = 1, Period = TimeSpan.FromHours(1), MaxPartitions = maxPartitions };

    private static bool Acquired(RateLimiterPolicy policy, string key)
    {
        var task = policy.AcquireAsync(key, CancellationToken.None);
        Assert.True(task.IsCompleted); // without a queue, the answer is immediate
        using var lease = task.Result;
        return lease.IsAcquired;
    }

    [Fact]
    public void FullOfBusyPartitions_NewKeysShareOneOverflowPartition()
    {
        using var policy = new RateLimiterPolicy(OneAnHour(maxPartitions: 3), new FakeTimeProvider());
        foreach (var key in new[] { "a", "b", "c" })
        {
            Assert.True(Acquired(policy, key));
        }
        Assert.False(policy.TakeOverflowStart());

        // Spent buckets are busy: nothing can be dropped, so "d" and "e" share the overflow partition's one token.
        Assert.True(Acquired(policy, "d"));
        Assert.False(Acquired(policy, "e"));
        Assert.False(Acquired(policy, "a"));

        Assert.Equal(3, policy.Partitions);
        Assert.True(policy.Overflowing);
        Assert.True(policy.TakeOverflowStart());
        Assert.False(policy.TakeOverflowStart());
    }

    [Fact]
    public void FullPolicy_DropsIdlePartitionsBeforeOverflowing_AtMostOnceASecond()
    {
        var clock = new FakeTimeProvider();
        var config = new RateLimiterPolicyConfig("p", RateLimiterKind.Concurrency, 1) { MaxPartitions = 2 };
        using var policy = new RateLimiterPolicy(config, clock);

        // "a" and "b" are done (idle); "c" takes the place they leave.
        Assert.True(Acquired(policy, "a"));
        Assert.True(Acquired(policy, "b"));
        var c = policy.AcquireAsync("c", CancellationToken.None).Result;
        Assert.True(c.IsAcquired);
        Assert.Equal(1, policy.Partitions);
        Assert.False(policy.Overflowing);

        // "d" fills the policy; "e" finds it full within the second of the last sweep and overflows.
        using var d = policy.AcquireAsync("d", CancellationToken.None).Result;
        c.Dispose();
        Assert.True(Acquired(policy, "e"));
        Assert.True(policy.Overflowing);
        Assert.Equal(2, policy.Partitions);

        // A second later, the full policy sweeps again: "c" is idle and dropped, "f" gets its own partition.
        clock.Advance(TimeSpan.FromSeconds(1));
        using var f = policy.AcquireAsync("f", CancellationToken.None).Result;
        Assert.True(f.IsAcquired);
        Assert.Equal(2, policy.Partitions);
        Assert.False(Acquired(policy, "d"));
        Assert.False(Acquired(policy, "f"));
    }

    // The limiters read their own clock: a wait longer than the period guarantees it has elapsed for them, and the
    // heartbeat (called here directly) gives the token back. Nothing is asserted about how long anything took.
    [Fact]
    public void Heartbeat_ReplenishesEveryPartition_OnceThePeriodHasElapsed()
    {
        var config = new RateLimiterPolicyConfig("p", RateLimiterKind.TokenBucket, 1) { TokensPerPeriod = 1, Period = RateLimiterPolicyConfig.MinPeriod };
        using var policy = new RateLimiterPolicy(config, new FakeTimeProvider());
        Assert.True(Acquired(policy, "a"));
        Assert.True(Acquired(policy, "b"));
        Assert.False(Acquired(policy, "a"));

        Thread.Sleep(RateLimiterPolicyConfig.MinPeriod * 2);
        policy.Tick();

        Assert.True(Acquired(policy, "a"));
        Assert.True(Acquired(policy, "b"));
    }

    [Fact]
    public void LongHeaderValuesAreKeyedByTheirHash()
    {
        Assert.Equal("", RateLimiterPolicy.HeaderKey(null));
        Assert.Equal("alice", RateLimiterPolicy.HeaderKey("alice"));
        var a = RateLimiterPolicy.HeaderKey(new string('a', 10_000));
        var b = RateLimiterPolicy.HeaderKey(new string('a', 9_999) + "b");
        Assert.StartsWith("sha256:", a);
        Assert.True(a.Length <= RateLimiterPolicy.MaxKeyLength);
        Assert.NotEqual(a, b);
        Assert.Equal(a, RateLimiterPolicy.HeaderKey(new string('a', 10_000)));
    }

    [Fact]
    public void PermitFromAnExistingPartition_AllocatesNothing()
    {
        var config = new RateLimiterPolicyConfig("p", RateLimiterKind.TokenBucket, 1_000_000) { TokensPerPeriod = 1, Period = TimeSpan.FromHours(1) };
        using var policy = new RateLimiterPolicy(config, new FakeTimeProvider());
        const string key = "198.51.100.7";
        Assert.True(Acquired(policy, key));

        var before = GC.GetAllocatedBytesForCurrentThread();
        for (var i = 0; i < 1000; i++)
        {
            using var lease = policy.AcquireAsync(key, CancellationToken.None).Result;
            Assert.True(lease.IsAcquired);
        }
        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
    }

    [Theory]
    [InlineData("TokenBucket")]
    [InlineData("FixedWindow")]
    [InlineData("SlidingWindow")]
    [InlineData("Concurrency")]
    public void MemoryPerPartition_IsBounded(string kindName)
    {
        var kind = Enum.Parse<RateLimiterKind>(kindName);
        const int count = 20_000;
        var config = new RateLimiterPolicyConfig("p", kind, 10)
        {
            TokensPerPeriod = 1, Period = TimeSpan.FromHours(1), SegmentsPerWindow = 6, MaxPartitions = count,
        };
        // Keys made first: a client address string is allocated for the access log anyway, whatever the policy.
        var keys = Enumerable.Range(0, count).Select(i => $"2001:db8::{i:x}").ToArray();
        using var policy = new RateLimiterPolicy(config, new FakeTimeProvider());
        var before = GC.GetAllocatedBytesForCurrentThread();
        foreach (var key in keys)
        {
            policy.Partition(key);
        }
        var perPartition = (GC.GetAllocatedBytesForCurrentThread() - before) / (double)count;

        Assert.Equal(count, policy.Partitions);
        // Limiter, its options, the dictionary's node and its share of the dictionary's arrays.
        output.WriteLine($"{kind}: {perPartition:0} bytes allocated per partition");
        Assert.InRange(perPartition, 1, 1024);
    }
}
