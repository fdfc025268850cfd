using Ferry.Loops;

namespace Ferry.Benchmarks;

// `deadline-cpu`: the CPU time one request's deadlines cost the thread that sets them, as UpstreamConnection sets them:
// three 60 s deadlines (send, response head, body), each from a clock read, and the clear at the end, on 64
// connections in turn. Through an ITimer of TimeProvider.System (the runtime's timer queue) and through a loop's
// TimerWheel, which also pays for the loop's Advance and TimeoutMs once per batch: a batch per request, as on a quiet
// loop, and one per 8. Thread CPU time, not wall time, median of several rounds
// (docs/decisions/2026-12-03-loop-timer-wheel.md).
internal static class DeadlineCpu
{
    private const int Rounds = 15;
    private const int PerRound = 200_000;
    private const int Connections = 64;
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(60);

    public static int Run()
    {
        var timers = Enumerable.Range(0, Connections)
            .Select(_ => TimeProvider.System.CreateTimer(static _ => { }, null, System.Threading.Timeout.InfiniteTimeSpan, System.Threading.Timeout.InfiniteTimeSpan))
            .ToArray();
        var wheel = new TimerWheel(TimeProvider.System);
        var loopTimers = Enumerable.Range(0, Connections).Select(_ => new LoopTimer(static _ => { }, null)).ToArray();
        var frequency = TimeProvider.System.TimestampFrequency;
        var ahead = (long)(Timeout.TotalSeconds * frequency);

        Console.WriteLine("| case | CPU ns/request |");
        Console.WriteLine("|---|---:|");
        Report("ITimer: 3 × (clock read + Change) + Change(Infinite)", i =>
        {
            var timer = timers[i % Connections];
            for (var k = 0; k < 3; k++)
            {
                TimeProvider.System.GetTimestamp();
                timer.Change(Timeout, System.Threading.Timeout.InfiniteTimeSpan);
            }
            timer.Change(System.Threading.Timeout.InfiniteTimeSpan, System.Threading.Timeout.InfiniteTimeSpan);
        });
        foreach (var perBatch in new[] { 1, 8 })
        {
            Report($"TimerWheel: 3 × (clock read + Arm) + Cancel, Advance + TimeoutMs once per {perBatch} request(s)", i =>
            {
                var timer = loopTimers[i % Connections];
                for (var k = 0; k < 3; k++)
                {
                    wheel.Arm(timer, TimeProvider.System.GetTimestamp() + ahead);
                }
                wheel.Cancel(timer);
                if (i % perBatch == 0)
                {
                    wheel.Advance();
                    wheel.TimeoutMs();
                }
            });
        }
        Report("3 clock reads alone", _ =>
        {
            TimeProvider.System.GetTimestamp();
            TimeProvider.System.GetTimestamp();
            TimeProvider.System.GetTimestamp();
        });
        foreach (var timer in timers)
        {
            timer.Dispose();
        }
        return 0;
    }

    private static void Report(string name, Action<int> request)
    {
        Measure(request);
        var rounds = Enumerable.Range(0, Rounds).Select(_ => Measure(request)).Order().ToArray();
        Console.WriteLine($"| {name} | {rounds[Rounds / 2]:F0} |");
    }

    // On a thread of its own, as a loop is: CPU nanoseconds per request.
    private static double Measure(Action<int> request)
    {
        double result = 0;
        var thread = new Thread(() =>
        {
            var before = RecordingCpu.ThreadCpuNanoseconds();
            for (var i = 0; i < PerRound; i++)
            {
                request(i);
            }
            result = (double)(RecordingCpu.ThreadCpuNanoseconds() - before) / PerRound;
        });
        thread.Start();
        thread.Join();
        return result;
    }
}
