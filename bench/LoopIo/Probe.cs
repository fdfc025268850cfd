using System.Runtime.InteropServices;

namespace LoopIo;

/// <summary>
/// <c>LoopIo --probe</c>: what this kernel's io_uring accepts, tried rather than inferred from the version: each set of
/// setup flags the uring back end can use, the operations it submits, a provided buffer ring, and a multishot receive
/// that must deliver twice from one submission.
/// </summary>
internal static unsafe class Probe
{
    [DllImport("libc", SetLastError = true)] private static extern int socketpair(int domain, int type, int protocol, int* fds);

    public static int Run()
    {
        Console.WriteLine($"kernel {File.ReadAllText("/proc/sys/kernel/osrelease").Trim()}, " +
            $"kernel.io_uring_disabled = {Read("/proc/sys/kernel/io_uring_disabled")}");
        (string Name, uint Flags)[] setups =
        [
            ("defer", Uring.SetupSingleIssuer | Uring.SetupDeferTaskrun | Uring.SetupSubmitAll),
            ("coop", Uring.SetupSingleIssuer | Uring.SetupCoopTaskrun | Uring.SetupSubmitAll),
            ("plain", 0),
        ];
        Uring? ring = null;
        foreach (var (name, flags) in setups)
        {
            try
            {
                var r = new Uring(8, flags);
                ring ??= r;
                Console.WriteLine($"setup {name} ({Uring.FlagNames(r.Flags)}): accepted, features 0x{r.Features:x}");
            }
            catch (UringRefusedException e)
            {
                Console.WriteLine($"setup {name}: {e.Message}");
            }
        }
        if (ring is null)
        {
            Console.WriteLine("io_uring: refused");
            return 3;
        }
        Console.WriteLine($"features: SINGLE_MMAP {Has(ring.Features, Uring.FeatSingleMmap)}, NODROP {Has(ring.Features, Uring.FeatNoDrop)}, " +
            $"FAST_POLL {Has(ring.Features, Uring.FeatFastPoll)}, EXT_ARG {Has(ring.Features, Uring.FeatExtArg)}");
        var ops = ring.Probe(Uring.OpAccept, Uring.OpRecv, Uring.OpSend, Uring.OpPollAdd, Uring.OpSendZc);
        Console.WriteLine($"operations: ACCEPT {ops[Uring.OpAccept]}, RECV {ops[Uring.OpRecv]}, SEND {ops[Uring.OpSend]}, " +
            $"POLL_ADD {ops[Uring.OpPollAdd]}, SEND_ZC {ops[Uring.OpSendZc]}");
        if (!ring.RegisterBuffers(16, 4096, out var errno))
        {
            Console.WriteLine($"provided buffer ring: refused, errno {errno}");
            return 0;
        }
        Console.WriteLine("provided buffer ring: accepted");
        Console.WriteLine($"multishot recv: {MultishotReceive(ring)}");
        return 0;
    }

    // Two sends to a socket, one receive submitted: a multishot receive completes once per send, with F_MORE.
    private static string MultishotReceive(Uring ring)
    {
        var fds = stackalloc int[2];
        Sys.Check(socketpair(1 /* AF_UNIX */, Sys.SockStream | Sys.SockCloexec, 0, fds), "socketpair");
        try
        {
            var hello = stackalloc byte[5];
            Sys.send(fds[1], hello, 5, Sys.MsgNoSignal);
            var sqe = ring.Next();
            sqe->Opcode = Uring.OpRecv;
            sqe->Fd = fds[0];
            sqe->IoPrio = Uring.RecvMultishot;
            sqe->Flags = Uring.IosqeBufferSelect;
            sqe->UserData = 1;
            var collector = new Collector { Results = [] };
            ring.SubmitAndWait();
            ring.Drain(ref collector);
            Sys.send(fds[1], hello, 3, Sys.MsgNoSignal);
            ring.SubmitAndWait();
            ring.Drain(ref collector);
            var seen = string.Join(", ", collector.Results.Select(c => $"res {c.Res} flags 0x{c.Flags:x}"));
            var works = collector.Results.Count == 2 && collector.Results.All(c => c.Res > 0 && (c.Flags & Uring.CqeFMore) != 0);
            return $"{(works ? "works" : "does not work")} ({seen})";
        }
        finally
        {
            Sys.close(fds[0]);
            Sys.close(fds[1]);
        }
    }

    private struct Collector : ICompletionHandler
    {
        public List<Uring.Cqe> Results;

        public readonly void Handle(Uring.Cqe cqe) => Results.Add(cqe);
    }

    private static string Has(uint features, uint flag) => (features & flag) != 0 ? "yes" : "no";

    private static string Read(string path) => File.Exists(path) ? File.ReadAllText(path).Trim() : "absent";
}
