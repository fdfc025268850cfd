using System.Runtime.InteropServices;

namespace LoopIo;

/// <summary>
/// The io_uring back end: one ring per loop, created on the loop's thread (SINGLE_ISSUER, DEFER_TASKRUN: completions
/// are produced only when this thread asks for them, so that no other thread does work for the loop). A multishot
/// accept on the loop's listener; per socket one multishot receive that picks its buffers from the loop's provided
/// buffer ring, so a socket stays armed from its first byte to its last; what is received is sent to the other socket
/// of the pair from the same buffer by a send entry, and the buffer goes back to the ring when the send completes.
/// Each loop iteration is one io_uring_enter: submit what the completions of the last one prepared, and wait.
/// <para>Without a buffer ring (kernels before 5.19, or <c>--uring-recv single</c>) each socket keeps one plain receive
/// armed on a buffer of its own, armed again once what it read has been sent.</para>
/// </summary>
internal sealed unsafe class UringLoop : ILoop
{
    private const int OpAccept = 1;
    private const int OpRecv = 2;
    private const int OpSend = 3;
    private const int BufferSize = 16384;
    private const int BufferCount = 1024;

    private readonly int _index;
    private readonly ushort _listenPort;
    private readonly ushort _upstreamPort;
    private readonly uint _setupFlags;
    private bool _multishot;
    private Uring _ring = null!;
    private int _listener;
    private readonly List<Pair> _pairs = [];
    private readonly Stack<int> _free = new();
    // Sockets whose multishot receive ended with ENOBUFS: armed again once a buffer comes back.
    private readonly List<(Pair Pair, int Side, uint Generation)> _starved = [];
    private bool _buffersReturned;
    private string _recvMode = "";

    public UringLoop(int index, ushort listenPort, ushort upstreamPort, uint setupFlags, bool multishot)
    {
        _index = index;
        _listenPort = listenPort;
        _upstreamPort = upstreamPort;
        _setupFlags = setupFlags;
        _multishot = multishot;
    }

    public LoopStats Stats { get; } = new();

    public string Describe() =>
        $"loop {_index}: io_uring, setup flags {Uring.FlagNames(_ring.Flags)}, features 0x{_ring.Features:x}, {_recvMode}, send entries, one io_uring_enter per iteration";

    /// <summary>What the loop's thread must do before <see cref="Run"/>: the ring belongs to the thread that makes it.</summary>
    public void Setup()
    {
        _ring = new Uring(1024, _setupFlags);
        Stats.ExtraEnters = () => _ring.ExtraEnters;
        if (_multishot)
        {
            if (_ring.RegisterBuffers(BufferCount, BufferSize, out var errno))
            {
                _recvMode = $"multishot recv on a provided buffer ring ({BufferCount} × {BufferSize / 1024} KiB)";
            }
            else
            {
                _multishot = false;
                _recvMode = $"one recv armed per socket (buffer ring refused: errno {errno})";
            }
        }
        else
        {
            _recvMode = "one recv armed per socket";
        }
        _listener = Sys.Listen(_listenPort, nonBlocking: false);
        ArmAccept();
    }

    public void Run()
    {
        var handler = new Handler(this);
        while (true)
        {
            var result = _ring.SubmitAndWait();
            Stats.Waits++;
            if (result < 0 && result != -Sys.EIntr && result != -Sys.EAgain && result != -16 /* EBUSY: completions to reap first */)
            {
                throw new IOException($"io_uring_enter failed: errno {-result}");
            }
            Stats.Events += _ring.Drain(ref handler);
            if (_buffersReturned && _starved.Count > 0)
            {
                _buffersReturned = false;
                var starved = _starved.ToArray();
                _starved.Clear();
                foreach (var (pair, side, generation) in starved)
                {
                    if (pair.Generation == generation && !pair.Closing)
                    {
                        ArmRecv(pair, side);
                    }
                }
            }
        }
    }

    private readonly struct Handler(UringLoop loop) : ICompletionHandler
    {
        public void Handle(Uring.Cqe cqe) => loop.Complete(cqe);
    }

    private static ulong Token(int op, Pair? pair, int side) =>
        pair is null ? (ulong)op : ((ulong)pair.Generation << 32) | ((ulong)pair.Index << 4) | ((ulong)side << 3) | (uint)op;

    private void Complete(Uring.Cqe cqe)
    {
        var op = (int)(cqe.UserData & 7);
        if (op == OpAccept)
        {
            if (cqe.Res >= 0)
            {
                Open(cqe.Res);
            }
            else
            {
                Console.Error.WriteLine($"loop {_index}: accept failed: errno {-cqe.Res}");
            }
            if ((cqe.Flags & Uring.CqeFMore) == 0)
            {
                ArmAccept();
            }
            return;
        }
        var pair = _pairs[(int)((cqe.UserData >> 4) & 0xFFFFFFF)];
        var side = (int)((cqe.UserData >> 3) & 1);
        if (pair.Generation != (uint)(cqe.UserData >> 32))
        {
            throw new InvalidOperationException($"a completion for a pair that has ended (op {op}, res {cqe.Res})");
        }
        if (op == OpRecv)
        {
            Received(pair, side, cqe.Res, cqe.Flags);
        }
        else
        {
            Sent(pair, side, cqe.Res);
        }
        if (pair.Closing && pair.InFlight == 0)
        {
            Finish(pair);
        }
    }

    private void ArmAccept()
    {
        var sqe = _ring.Next();
        sqe->Opcode = Uring.OpAccept;
        sqe->Fd = _listener;
        sqe->IoPrio = Uring.AcceptMultishot;
        sqe->OpFlags = Sys.SockCloexec;
        sqe->UserData = Token(OpAccept, null, 0);
    }

    private void Open(int client)
    {
        Stats.Accepted++;
        Sys.SetOption(client, Sys.IpProtoTcp, Sys.TcpNoDelay, 1);
        // Blocking sockets: io_uring tries each operation without blocking and waits by its own poll.
        var upstream = Sys.Connect(_upstreamPort, nonBlocking: false);
        if (upstream < 0)
        {
            Console.Error.WriteLine($"loop {_index}: connect to the upstream failed: errno {-upstream}");
            Sys.close(client);
            return;
        }
        Pair pair;
        if (_free.TryPop(out var index))
        {
            pair = _pairs[index];
        }
        else
        {
            pair = new Pair(_pairs.Count, _multishot);
            _pairs.Add(pair);
        }
        pair.Open(client, upstream);
        ArmRecv(pair, 0);
        ArmRecv(pair, 1);
    }

    private void ArmRecv(Pair pair, int side)
    {
        var s = pair.Sides[side];
        var sqe = _ring.Next();
        sqe->Opcode = Uring.OpRecv;
        sqe->Fd = s.Fd;
        if (_multishot)
        {
            sqe->IoPrio = Uring.RecvMultishot;
            sqe->Flags = Uring.IosqeBufferSelect;
            sqe->BufGroup = 0;
        }
        else
        {
            sqe->Addr = (ulong)s.Own;
            sqe->Len = BufferSize;
        }
        sqe->UserData = Token(OpRecv, pair, side);
        pair.InFlight++;
    }

    private void Received(Pair pair, int side, int res, uint flags)
    {
        var more = _multishot && (flags & Uring.CqeFMore) != 0;
        if (!more)
        {
            pair.InFlight--;
        }
        if (res > 0)
        {
            Stats.Receives++;
            var chunk = _multishot
                ? new Chunk(_ring.BufferAddress((int)(flags >> Uring.CqeBufferShift)), res, (int)(flags >> Uring.CqeBufferShift), side)
                : new Chunk(pair.Sides[side].Own, res, -1, side);
            if (pair.Closing)
            {
                Release(pair, chunk);
            }
            else
            {
                var destination = pair.Sides[1 - side];
                destination.Out.Enqueue(chunk);
                if (!destination.Sending)
                {
                    Send(pair, 1 - side);
                }
            }
            // A multishot receive can end with data (the completion queue was full, say): arm it again.
            if (_multishot && !more && !pair.Closing)
            {
                ArmRecv(pair, side);
            }
            return;
        }
        if (res == -Sys.ENoBufs && _multishot)
        {
            Stats.Starved++;
            _starved.Add((pair, side, pair.Generation));
            return;
        }
        if (res == -Sys.EInval && _multishot)
        {
            throw new UringRefusedException("multishot recv refused (EINVAL): this kernel predates 6.0; run with --uring-recv single");
        }
        if (res == 0)
        {
            // The end of one side (nginx closing after its 1000th response): what it sent before still has to reach
            // the other side, whose send may not even be submitted yet.
            pair.Ended[side] = true;
            var destination = pair.Sides[1 - side];
            if (destination.Sending || destination.Out.Count > 0)
            {
                return;
            }
        }
        Close(pair);
    }

    private void Send(Pair pair, int side)
    {
        var s = pair.Sides[side];
        var chunk = s.Out.Peek();
        var sqe = _ring.Next();
        sqe->Opcode = Uring.OpSend;
        sqe->Fd = s.Fd;
        sqe->Addr = (ulong)(chunk.Data + s.OutOffset);
        sqe->Len = (uint)(chunk.Length - s.OutOffset);
        sqe->OpFlags = Sys.MsgNoSignal;
        sqe->UserData = Token(OpSend, pair, side);
        s.Sending = true;
        pair.InFlight++;
    }

    private void Sent(Pair pair, int side, int res)
    {
        var s = pair.Sides[side];
        s.Sending = false;
        pair.InFlight--;
        Stats.Sends++;
        if (res < 0)
        {
            Close(pair);
            return;
        }
        s.OutOffset += res;
        if (s.OutOffset == s.Out.Peek().Length)
        {
            s.OutOffset = 0;
            Release(pair, s.Out.Dequeue());
        }
        if (!pair.Closing && s.Out.Count > 0)
        {
            Send(pair, side);
        }
        else if (s.Out.Count == 0 && pair.Ended[1 - side])
        {
            Close(pair);
        }
    }

    // What was read has left (or will not): its buffer goes back to the ring, or its socket reads again.
    private void Release(Pair pair, Chunk chunk)
    {
        if (chunk.BufferId >= 0)
        {
            _ring.ReturnBuffer((ushort)chunk.BufferId);
            _buffersReturned = true;
        }
        else if (!pair.Closing)
        {
            ArmRecv(pair, chunk.Source);
        }
    }

    // Both sockets are shut down, which ends their armed receives (a read of 0) and fails their sends; the descriptors
    // are closed once the kernel holds no operation on them.
    private void Close(Pair pair)
    {
        if (pair.Closing)
        {
            return;
        }
        pair.Closing = true;
        foreach (var s in pair.Sides)
        {
            Sys.shutdown(s.Fd, Sys.ShutRdWr);
        }
    }

    private void Finish(Pair pair)
    {
        foreach (var s in pair.Sides)
        {
            while (s.Out.Count > 0)
            {
                Release(pair, s.Out.Dequeue());
            }
            Sys.close(s.Fd);
        }
        pair.Generation++;
        _free.Push(pair.Index);
        Stats.Closed++;
    }

    // BufferId: the ring buffer holding the bytes, or -1 for the source socket's own buffer.
    private readonly struct Chunk(byte* data, int length, int bufferId, int source)
    {
        public readonly byte* Data = data;
        public readonly int Length = length;
        public readonly int BufferId = bufferId;
        public readonly int Source = source;
    }

    private sealed class Pair(int index, bool multishot)
    {
        public readonly int Index = index;
        public readonly Side[] Sides = [new(multishot), new(multishot)];
        public uint Generation;
        public bool Closing;
        // Which side has sent its end (a read of 0).
        public readonly bool[] Ended = new bool[2];
        // Operations submitted for this pair that have not completed for good (a multishot receive counts until its
        // last completion).
        public int InFlight;

        public void Open(int client, int upstream)
        {
            Sides[0].Open(client);
            Sides[1].Open(upstream);
            Closing = false;
            Ended[0] = Ended[1] = false;
            InFlight = 0;
        }
    }

    private sealed class Side(bool multishot)
    {
        // The buffer a single-shot receive reads into; multishot receives use the ring's.
        public readonly byte* Own = multishot ? null : (byte*)NativeMemory.Alloc(BufferSize);
        public readonly Queue<Chunk> Out = new();
        public int Fd;
        public int OutOffset;
        public bool Sending;

        public void Open(int fd)
        {
            Fd = fd;
            OutOffset = 0;
            Sending = false;
        }
    }
}
