using System.Runtime.InteropServices;

namespace LoopIo;

/// <summary>io_uring refused by the kernel (disabled, not built, or the setup flags unknown): exit status 3.</summary>
internal sealed class UringRefusedException(string message) : Exception(message);

/// <summary>
/// One io_uring instance: its submission and completion rings mapped into this process, and a ring of provided
/// buffers that multishot receives pick from. Layouts are those of include/uapi/linux/io_uring.h.
/// </summary>
internal sealed unsafe class Uring
{
    public const byte OpPollAdd = 6;
    public const byte OpAccept = 13;
    public const byte OpSend = 26;
    public const byte OpRecv = 27;
    public const byte OpSendZc = 47;
    public const byte IosqeBufferSelect = 1 << 5;
    public const ushort RecvMultishot = 1 << 1;
    public const ushort AcceptMultishot = 1 << 0;
    public const uint CqeFMore = 1 << 1;
    public const int CqeBufferShift = 16;

    public const uint SetupCqSize = 1 << 3;
    public const uint SetupSubmitAll = 1 << 7;
    public const uint SetupCoopTaskrun = 1 << 8;
    public const uint SetupSingleIssuer = 1 << 12;
    public const uint SetupDeferTaskrun = 1 << 13;

    public const uint FeatSingleMmap = 1 << 0;
    public const uint FeatNoDrop = 1 << 1;
    public const uint FeatFastPoll = 1 << 5;
    public const uint FeatExtArg = 1 << 8;

    private const uint EnterGetEvents = 1;
    private const uint RegisterProbe = 8;
    private const uint RegisterPbufRing = 22;
    private const long OffSqRing = 0;
    private const long OffCqRing = 0x8000000;
    private const long OffSqes = 0x10000000;

    [StructLayout(LayoutKind.Sequential)]
    public struct SqOffsets
    {
        public uint Head, Tail, RingMask, RingEntries, Flags, Dropped, Array, Resv1;
        public ulong UserAddr;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct CqOffsets
    {
        public uint Head, Tail, RingMask, RingEntries, Overflow, Cqes, Flags, Resv1;
        public ulong UserAddr;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct Params
    {
        public uint SqEntries, CqEntries, Flags, SqThreadCpu, SqThreadIdle, Features, WqFd;
        public uint Resv0, Resv1, Resv2;
        public SqOffsets SqOff;
        public CqOffsets CqOff;
    }

    [StructLayout(LayoutKind.Explicit, Size = 64)]
    public struct Sqe
    {
        [FieldOffset(0)] public byte Opcode;
        [FieldOffset(1)] public byte Flags;
        [FieldOffset(2)] public ushort IoPrio;
        [FieldOffset(4)] public int Fd;
        [FieldOffset(8)] public ulong Off;
        [FieldOffset(16)] public ulong Addr;
        [FieldOffset(24)] public uint Len;
        [FieldOffset(28)] public uint OpFlags;
        [FieldOffset(32)] public ulong UserData;
        [FieldOffset(40)] public ushort BufGroup;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct Cqe
    {
        public ulong UserData;
        public int Res;
        public uint Flags;
    }

    private readonly int _fd;
    private readonly uint* _sqHead;
    private readonly uint* _sqTail;
    private readonly uint* _sqArray;
    private readonly uint _sqMask;
    private readonly uint _sqEntries;
    private readonly Sqe* _sqes;
    private readonly uint* _cqHead;
    private readonly uint* _cqTail;
    private readonly uint _cqMask;
    private readonly Cqe* _cqes;
    private uint _sqLocalTail;

    // Provided buffers: a ring of (address, length, id) the kernel takes from; the tail is the 16 bits at offset 14
    // of the first entry (where its reserved field is).
    private byte* _bufRing;
    private byte* _bufMemory;
    private ushort _bufTail;
    private ushort _bufMask;

    public Uring(uint entries, uint flags)
    {
        var p = new Params { Flags = flags | SetupCqSize, CqEntries = entries * 4 };
        _fd = Sys.IoUringSetup(entries, &p);
        if (_fd < 0)
        {
            var errno = Sys.Errno;
            throw new UringRefusedException($"io_uring_setup(entries {entries}, flags 0x{flags | SetupCqSize:x}) refused: errno {errno} ({Describe(errno)})");
        }
        Flags = flags | SetupCqSize;
        Features = p.Features;
        if ((p.Features & FeatSingleMmap) == 0)
        {
            throw new UringRefusedException("io_uring without IORING_FEAT_SINGLE_MMAP (kernel before 5.4) is not handled");
        }
        var sqSize = p.SqOff.Array + p.SqEntries * 4;
        var cqSize = p.CqOff.Cqes + p.CqEntries * (uint)sizeof(Cqe);
        var ringSize = Math.Max(sqSize, cqSize);
        var ring = (byte*)Sys.mmap(null, ringSize, Sys.ProtRead | Sys.ProtWrite, Sys.MapShared | Sys.MapPopulate, _fd, OffSqRing);
        if (ring == (byte*)-1)
        {
            throw new UringRefusedException($"mmap of the rings failed: errno {Sys.Errno}");
        }
        _sqes = (Sqe*)Sys.mmap(null, p.SqEntries * (uint)sizeof(Sqe), Sys.ProtRead | Sys.ProtWrite, Sys.MapShared | Sys.MapPopulate, _fd, OffSqes);
        if (_sqes == (Sqe*)-1)
        {
            throw new UringRefusedException($"mmap of the submission entries failed: errno {Sys.Errno}");
        }
        _sqHead = (uint*)(ring + p.SqOff.Head);
        _sqTail = (uint*)(ring + p.SqOff.Tail);
        _sqMask = *(uint*)(ring + p.SqOff.RingMask);
        _sqEntries = *(uint*)(ring + p.SqOff.RingEntries);
        _sqArray = (uint*)(ring + p.SqOff.Array);
        _cqHead = (uint*)(ring + p.CqOff.Head);
        _cqTail = (uint*)(ring + p.CqOff.Tail);
        _cqMask = *(uint*)(ring + p.CqOff.RingMask);
        _cqes = (Cqe*)(ring + p.CqOff.Cqes);
        _sqLocalTail = *_sqTail;
        // The submission array maps ring slots to entries one to one, once and for all.
        for (uint i = 0; i < _sqEntries; i++)
        {
            _sqArray[i] = i;
        }
    }

    public uint Flags { get; }

    public uint Features { get; }

    public int BufferSize { get; private set; }

    /// <summary>Calls to io_uring_enter made to free submission slots, outside the loop's one per iteration.</summary>
    public long ExtraEnters;

    public static string Describe(int errno) => errno switch
    {
        1 => "EPERM: io_uring disabled for this process (kernel.io_uring_disabled, seccomp or a container policy)",
        12 => "ENOMEM",
        22 => "EINVAL: a setup flag this kernel does not know",
        38 => "ENOSYS: this kernel has no io_uring",
        _ => $"errno {errno}",
    };

    /// <summary>A free submission entry, zeroed. When the ring is full, what it holds is submitted first.</summary>
    public Sqe* Next()
    {
        if (_sqLocalTail - Volatile.Read(ref *_sqHead) >= _sqEntries)
        {
            Volatile.Write(ref *_sqTail, _sqLocalTail);
            ExtraEnters++;
            if (Sys.IoUringEnter(_fd, _sqLocalTail - Volatile.Read(ref *_sqHead), 0, 0) < 0)
            {
                throw new IOException($"io_uring_enter (submit only) failed: errno {Sys.Errno}");
            }
        }
        var sqe = &_sqes[_sqLocalTail & _sqMask];
        *sqe = default;
        _sqLocalTail++;
        return sqe;
    }

    /// <summary>Submits what was prepared and waits for at least one completion: one system call.</summary>
    public int SubmitAndWait()
    {
        Volatile.Write(ref *_sqTail, _sqLocalTail);
        var pending = _sqLocalTail - Volatile.Read(ref *_sqHead);
        var result = Sys.IoUringEnter(_fd, pending, 1, EnterGetEvents);
        return result < 0 ? -Sys.Errno : result;
    }

    /// <summary>Hands each completion there is to <paramref name="handle"/>; returns how many.</summary>
    public int Drain<T>(ref T handler) where T : struct, ICompletionHandler
    {
        var count = 0;
        while (true)
        {
            var head = *_cqHead;
            var tail = Volatile.Read(ref *_cqTail);
            if (head == tail)
            {
                return count;
            }
            while (head != tail)
            {
                var cqe = _cqes[head & _cqMask];
                head++;
                // Released before handling: a handler that submits (and so may enter the kernel) leaves room.
                Volatile.Write(ref *_cqHead, head);
                handler.Handle(cqe);
                count++;
            }
        }
    }

    /// <summary>
    /// Registers <paramref name="count"/> buffers of <paramref name="size"/> bytes as buffer group 0 (a ring, since
    /// 5.19); false with the errno when the kernel refuses.
    /// </summary>
    public bool RegisterBuffers(int count, int size, out int errno)
    {
        var ringBytes = (nuint)(count * 16);
        _bufRing = (byte*)Sys.mmap(null, ringBytes, Sys.ProtRead | Sys.ProtWrite, Sys.MapPrivate | Sys.MapAnonymous | Sys.MapPopulate, -1, 0);
        if (_bufRing == (byte*)-1)
        {
            throw new IOException($"mmap of the buffer ring failed: errno {Sys.Errno}");
        }
        var reg = stackalloc ulong[5];
        reg[0] = (ulong)_bufRing;
        reg[1] = (uint)count; // ring_entries (u32), bgid 0 (u16), flags 0 (u16)
        reg[2] = reg[3] = reg[4] = 0;
        if (Sys.IoUringRegister(_fd, RegisterPbufRing, reg, 1) < 0)
        {
            errno = Sys.Errno;
            Sys.munmap(_bufRing, ringBytes);
            _bufRing = null;
            return false;
        }
        errno = 0;
        BufferSize = size;
        _bufMask = (ushort)(count - 1);
        _bufMemory = (byte*)NativeMemory.AlignedAlloc((nuint)(count * size), 4096);
        for (var i = 0; i < count; i++)
        {
            ReturnBuffer((ushort)i);
        }
        return true;
    }

    public byte* BufferAddress(int id) => _bufMemory + (nint)id * BufferSize;

    /// <summary>Gives buffer <paramref name="id"/> back to the kernel's ring.</summary>
    public void ReturnBuffer(ushort id)
    {
        var entry = _bufRing + (_bufTail & _bufMask) * 16;
        *(ulong*)entry = (ulong)BufferAddress(id);
        *(uint*)(entry + 8) = (uint)BufferSize;
        *(ushort*)(entry + 12) = id;
        _bufTail++;
        Volatile.Write(ref *(ushort*)(_bufRing + 14), _bufTail);
    }

    /// <summary>Which of <paramref name="ops"/> this kernel's io_uring supports (IORING_REGISTER_PROBE).</summary>
    public Dictionary<byte, bool> Probe(params byte[] ops)
    {
        const int maxOps = 256;
        var size = 16 + maxOps * 8;
        var probe = (byte*)NativeMemory.AllocZeroed((nuint)size);
        try
        {
            if (Sys.IoUringRegister(_fd, RegisterProbe, probe, maxOps) < 0)
            {
                throw new IOException($"IORING_REGISTER_PROBE failed: errno {Sys.Errno}");
            }
            var opsLen = probe[1];
            var result = new Dictionary<byte, bool>();
            foreach (var op in ops)
            {
                // io_uring_probe_op: u8 op, u8 resv, u16 flags (IO_URING_OP_SUPPORTED = 1), u32 resv2.
                result[op] = op < opsLen && (*(ushort*)(probe + 16 + op * 8 + 2) & 1) != 0;
            }
            return result;
        }
        finally
        {
            NativeMemory.Free(probe);
        }
    }

    public static string FlagNames(uint flags)
    {
        var names = new List<string>();
        if ((flags & SetupSingleIssuer) != 0)
        {
            names.Add("SINGLE_ISSUER");
        }
        if ((flags & SetupDeferTaskrun) != 0)
        {
            names.Add("DEFER_TASKRUN");
        }
        if ((flags & SetupCoopTaskrun) != 0)
        {
            names.Add("COOP_TASKRUN");
        }
        if ((flags & SetupSubmitAll) != 0)
        {
            names.Add("SUBMIT_ALL");
        }
        if ((flags & SetupCqSize) != 0)
        {
            names.Add("CQSIZE");
        }
        return names.Count == 0 ? "none" : string.Join('|', names);
    }
}

internal interface ICompletionHandler
{
    void Handle(Uring.Cqe cqe);
}
