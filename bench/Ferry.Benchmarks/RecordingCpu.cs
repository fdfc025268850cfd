using System.Diagnostics.Metrics;
using System.Runtime.InteropServices;
using Ferry.Forwarding;
using Ferry.Metrics;
using Microsoft.Extensions.DependencyInjection;

namespace Ferry.Benchmarks;

// `record-cpu`: the CPU time (not wall time) one request's metrics and per-second stats cost, on one thread and on two
// threads recording the same series at once. Each thread reads its own CPU clock (CLOCK_THREAD_CPUTIME_ID), so time
// the thread spent waiting for a core does not count: on a machine whose two cores are shared with other work, wall
// time per operation moved 3× from one BenchmarkDotNet run to the next, CPU time far less. Prints the median of
// several rounds per case (docs/decisions/2026-12-03-metrics-recording.md).
internal static class RecordingCpu
{
    private const int Rounds = 15;
    private const int PerRound = 200_000;

    public static int Run()
    {
        var state = SampleRequests.State();
        var record = SampleRequests.Record(state);
        using var services = new ServiceCollection().AddMetrics().BuildServiceProvider();
        using var otherServices = new ServiceCollection().AddMetrics().BuildServiceProvider();
        var meters = services.GetRequiredService<IMeterFactory>();
        var unheard = new FerryMetrics(otherServices.GetRequiredService<IMeterFactory>(), state, null);
        using var collector = PrometheusCollector.ForServer(meters);
        var metrics = new FerryMetrics(meters, state, null);
        var stats = new RequestStats(TimeProvider.System);

        Console.WriteLine("| case | 1 thread, CPU ns/op | 2 threads, CPU ns/op |");
        Console.WriteLine("|---|---:|---:|");
        Report("FerryMetrics.Record, nothing listening", () => unheard.Record(record));
        Report("FerryMetrics.Record, PrometheusCollector", () => metrics.Record(record));
        Report("RequestStats.Record", () => stats.Record(record));
        if (!collector.Scrape().Contains("ferry_requests_total{", StringComparison.Ordinal))
        {
            throw new InvalidOperationException("nothing was recorded");
        }
        state.Current.DisposeAsync().AsTask().GetAwaiter().GetResult();
        return 0;
    }

    private static void Report(string name, Action action)
    {
        Measure(1, action);
        Measure(2, action);
        var one = Median(Enumerable.Range(0, Rounds).Select(_ => Measure(1, action)));
        var two = Median(Enumerable.Range(0, Rounds).Select(_ => Measure(2, action)));
        Console.WriteLine($"| {name} | {one:F0} | {two:F0} |");
    }

    // CPU nanoseconds per operation, summed over the threads.
    private static double Measure(int threads, Action action)
    {
        var cpu = new long[threads];
        using var start = new Barrier(threads);
        var workers = Enumerable.Range(0, threads).Select(t => new Thread(() =>
        {
            start.SignalAndWait();
            var before = ThreadCpuNanoseconds();
            for (var i = 0; i < PerRound; i++)
            {
                action();
            }
            cpu[t] = ThreadCpuNanoseconds() - before;
        })).ToArray();
        foreach (var worker in workers)
        {
            worker.Start();
        }
        foreach (var worker in workers)
        {
            worker.Join();
        }
        return (double)cpu.Sum() / (threads * PerRound);
    }

    private static double Median(IEnumerable<double> values)
    {
        var sorted = values.Order().ToArray();
        return sorted[sorted.Length / 2];
    }

    private const int ClockThreadCpuTime = 3;

    [StructLayout(LayoutKind.Sequential)]
    private struct TimeSpec
    {
        public long Seconds;
        public long Nanoseconds;
    }

    [DllImport("libc", EntryPoint = "clock_gettime")]
    private static extern int ClockGetTime(int clock, out TimeSpec time);

    internal static long ThreadCpuNanoseconds() =>
        ClockGetTime(ClockThreadCpuTime, out var time) == 0 ? time.Seconds * 1_000_000_000 + time.Nanoseconds
            : throw new InvalidOperationException("clock_gettime failed");
}
