using Ferry.Forwarding;
using Ferry.Tests.Support;

namespace Ferry.Tests.Forwarding;

public sealed class AttemptListTests
{
    [Fact]
    public async Task Attempts_KeepTheirOrder_BeyondTheOneKeptInTheRecord()
    {
        await using var records = new TestRecords();
        var record = new RequestRecord { Method = "GET", Target = "/", Protocol = "HTTP/1.1" };
        Assert.Equal(0, record.Attempts.Count);
        Assert.Empty(Collect(record.Attempts));
        Assert.Throws<ArgumentOutOfRangeException>(() => record.Attempts[0]);

        var attempts = new[]
        {
            new AttemptRecord { Destination = records.A, Status = 502 },
            new AttemptRecord { Destination = records.A, Replay = true, ErrorDetails = "reset" },
            new AttemptRecord { Destination = records.B, Status = 200 },
        };
        foreach (var attempt in attempts)
        {
            record.Attempts.Add(attempt);
        }

        Assert.Equal(3, record.Attempts.Count);
        Assert.Equal(attempts, Collect(record.Attempts));
        Assert.Same(attempts[2], record.Attempts[2]);
        Assert.Throws<ArgumentOutOfRangeException>(() => record.Attempts[3]);
        Assert.Same(attempts[1], record.Attempts.LastOrDefault(a => a.ErrorDetails is not null));
        Assert.Same(attempts[2], record.Attempts.LastOrDefault(a => a.Status != 0));
        Assert.Null(record.Attempts.LastOrDefault(a => a.Status == 404));
        Assert.True(record.Attempts.Exists(a => a.Replay));
        Assert.False(record.Attempts.Exists(a => a.Status == 404));
    }

    private static List<AttemptRecord> Collect(AttemptList attempts)
    {
        var list = new List<AttemptRecord>();
        foreach (var attempt in attempts)
        {
            list.Add(attempt);
        }
        return list;
    }
}
