using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Diagnosers;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Running;
using BenchmarkDotNet.Toolchains.InProcess.Emit;

namespace Ferry.Benchmarks;

public static class Program
{
    // In-process: BenchmarkDotNet 0.14 does not know net10.0 as a target to generate a child project for, and the
    // figures wanted here (bytes allocated per operation) do not need a separate process.
    public static async Task<int> Main(string[] args)
    {
        if (args is ["compare-scrape"])
        {
            return await ScrapeComparison.RunAsync();
        }
        if (args is ["record-cpu"])
        {
            return RecordingCpu.Run();
        }
        if (args is ["deadline-cpu"])
        {
            return DeadlineCpu.Run();
        }
        Run(args);
        return 0;
    }

    private static void Run(string[] args) =>
        BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args,
            DefaultConfig.Instance
                .AddJob(Job.ShortRun.WithToolchain(InProcessEmitToolchain.Instance))
                .AddDiagnoser(MemoryDiagnoser.Default));
}
