using System.Runtime.InteropServices;

namespace LoopIo;

/// <summary>
/// The libc calls both back ends make, through plain P/Invoke with errno captured (as .NET's own socket calls do), so
/// that neither back end pays a different price per call. io_uring has no libc wrapper: its three calls go through
/// syscall(2).
/// </summary>
internal static unsafe class Sys
{
    public const int EAgain = 11;
    public const int EIntr = 4;
    public const int ENoBufs = 105;
    public const int EInval = 22;

    public const int AfInet = 2;
    public const int SockStream = 1;
    public const int SockNonblock = 0x800;
    public const int SockCloexec = 0x80000;
    public const int SolSocket = 1;
    public const int SoReuseAddr = 2;
    public const int SoReusePort = 15;
    public const int IpProtoTcp = 6;
    public const int TcpNoDelay = 1;
    public const int MsgNoSignal = 0x4000;
    public const int ShutRdWr = 2;
    public const int FGetFl = 3;
    public const int FSetFl = 4;
    public const int ONonblock = 0x800;

    public const uint EpollIn = 0x001;
    public const uint EpollOut = 0x004;
    public const uint EpollErr = 0x008;
    public const uint EpollHup = 0x010;
    public const uint EpollRdHup = 0x2000;
    public const uint EpollEt = 1u << 31;
    public const int EpollCtlAdd = 1;
    public const int EpollCtlDel = 2;

    public const int ProtRead = 1;
    public const int ProtWrite = 2;
    public const int MapShared = 0x01;
    public const int MapPrivate = 0x02;
    public const int MapAnonymous = 0x20;
    public const int MapPopulate = 0x8000;

    // x86_64 and arm64 share these numbers (io_uring came after the tables were unified).
    public const long SysIoUringSetup = 425;
    public const long SysIoUringEnter = 426;
    public const long SysIoUringRegister = 427;

    [StructLayout(LayoutKind.Sequential, Pack = 1)]
    public struct EpollEvent
    {
        public uint Events;
        public ulong Data;
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct SockAddrIn
    {
        public ushort Family;
        public ushort Port;
        public uint Addr;
        public ulong Zero;
    }

    [DllImport("libc", SetLastError = true)] public static extern int socket(int domain, int type, int protocol);
    [DllImport("libc", SetLastError = true)] private static extern int setsockopt(int fd, int level, int name, int* value, int length);
    [DllImport("libc", SetLastError = true)] private static extern int bind(int fd, SockAddrIn* address, int length);
    [DllImport("libc", SetLastError = true)] private static extern int connect(int fd, SockAddrIn* address, int length);
    [DllImport("libc", SetLastError = true)] public static extern int listen(int fd, int backlog);
    [DllImport("libc", SetLastError = true)] public static extern int accept4(int fd, void* address, void* length, int flags);
    [DllImport("libc", SetLastError = true)] public static extern nint recv(int fd, byte* buffer, nint length, int flags);
    [DllImport("libc", SetLastError = true)] public static extern nint send(int fd, byte* buffer, nint length, int flags);
    [DllImport("libc", SetLastError = true)] public static extern int shutdown(int fd, int how);
    [DllImport("libc", SetLastError = true)] public static extern int close(int fd);
    [DllImport("libc", SetLastError = true)] private static extern int fcntl(int fd, int command, int argument);
    [DllImport("libc", SetLastError = true)] public static extern int epoll_create1(int flags);
    [DllImport("libc", SetLastError = true)] private static extern int epoll_ctl(int epfd, int op, int fd, EpollEvent* ev);
    [DllImport("libc", SetLastError = true)] public static extern int epoll_wait(int epfd, EpollEvent* events, int max, int timeout);
    [DllImport("libc", SetLastError = true)] public static extern void* mmap(void* address, nuint length, int protection, int flags, int fd, long offset);
    [DllImport("libc", SetLastError = true)] public static extern int munmap(void* address, nuint length);
    [DllImport("libc", SetLastError = true)] private static extern long syscall(long number, long a1, long a2, long a3, long a4, long a5, long a6);

    public static int Errno => Marshal.GetLastPInvokeError();

    public static int IoUringSetup(uint entries, void* parameters) => (int)syscall(SysIoUringSetup, entries, (long)parameters, 0, 0, 0, 0);

    public static int IoUringEnter(int fd, uint toSubmit, uint minComplete, uint flags) =>
        (int)syscall(SysIoUringEnter, fd, toSubmit, minComplete, flags, 0, 0);

    public static int IoUringRegister(int fd, uint opcode, void* argument, uint count) =>
        (int)syscall(SysIoUringRegister, fd, opcode, (long)argument, count, 0, 0);

    public static void EpollCtl(int epoll, int op, int fd, uint events, ulong data)
    {
        var ev = new EpollEvent { Events = events, Data = data };
        if (epoll_ctl(epoll, op, fd, &ev) != 0)
        {
            throw new IOException($"epoll_ctl({op}, {fd}) failed: errno {Errno}");
        }
    }

    /// <summary>A listening socket on 127.0.0.1:port with SO_REUSEPORT: one per loop, the kernel spreads connections.</summary>
    public static int Listen(ushort port, bool nonBlocking)
    {
        var fd = socket(AfInet, SockStream | SockCloexec | (nonBlocking ? SockNonblock : 0), 0);
        Check(fd, "socket");
        SetOption(fd, SolSocket, SoReuseAddr, 1);
        SetOption(fd, SolSocket, SoReusePort, 1);
        var address = Loopback(port);
        Check(bind(fd, &address, sizeof(SockAddrIn)), $"bind 127.0.0.1:{port}");
        Check(listen(fd, 4096), "listen");
        return fd;
    }

    /// <summary>
    /// A connected upstream socket, connected in blocking mode: on loopback connect(2) completes within the call, and
    /// connections are opened once per 1000 requests (the upstream's keep-alive limit), so neither back end gains
    /// from doing it asynchronously, and both do it the same way.
    /// </summary>
    public static int Connect(ushort port, bool nonBlocking)
    {
        var fd = socket(AfInet, SockStream | SockCloexec, 0);
        Check(fd, "socket");
        SetOption(fd, IpProtoTcp, TcpNoDelay, 1);
        var address = Loopback(port);
        if (connect(fd, &address, sizeof(SockAddrIn)) != 0)
        {
            var errno = Errno;
            close(fd);
            return -errno;
        }
        if (nonBlocking)
        {
            SetNonBlocking(fd);
        }
        return fd;
    }

    public static void SetNonBlocking(int fd) => Check(fcntl(fd, FSetFl, fcntl(fd, FGetFl, 0) | ONonblock), "fcntl");

    public static void SetOption(int fd, int level, int name, int value) =>
        Check(setsockopt(fd, level, name, &value, sizeof(int)), $"setsockopt({level}, {name})");

    public static void Check(int result, string what)
    {
        if (result < 0)
        {
            throw new IOException($"{what} failed: errno {Errno}");
        }
    }

    private static SockAddrIn Loopback(ushort port) => new()
    {
        Family = AfInet,
        Port = (ushort)((port >> 8) | (port << 8)),
        Addr = 0x0100007F, // 127.0.0.1 in network order
    };
}
