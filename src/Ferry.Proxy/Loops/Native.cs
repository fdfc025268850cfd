using System.Buffers.Binary;
using System.Runtime.InteropServices;

namespace Ferry.Loops;

/// <summary>
/// The Linux calls an event loop needs and .NET has no API for: epoll, eventfd, accept4, and a non-blocking connect
/// that neither throws nor registers the socket with .NET's own epoll engine. Plain DllImport on arrays and integers
/// (LibraryImport would need unsafe code, which the build does not allow).
/// </summary>
internal static class Native
{
    public const uint EpollIn = 0x001;
    public const uint EpollOut = 0x004;
    public const uint EpollErr = 0x008;
    public const uint EpollHup = 0x010;
    public const uint EpollRdHup = 0x2000;
    public const uint EpollExclusive = 1u << 28;
    public const uint EpollEt = 1u << 31;

    private const int EpollCtlAdd = 1;
    private const int EpollCtlDel = 2;
    private const int EpollCloexec = 0x80000;
    private const int EfdNonblock = 0x800;
    private const int EfdCloexec = 0x80000;
    private const int SockNonblock = 0x800;
    private const int SockCloexec = 0x80000;
    private const int FGetFl = 3;
    private const int FSetFl = 4;
    private const int ONonblock = 0x800;

    public const int EAgain = 11;
    public const int EIntr = 4;
    public const int EInProgress = 115;

    private const int SolSocket = 1;
    private const int SoError = 4;

    /// <summary>struct epoll_event is packed on x86-64 (12 bytes) and naturally aligned elsewhere (16 bytes).</summary>
    public static readonly int EventSize = RuntimeInformation.ProcessArchitecture == Architecture.X64 ? 12 : 16;

    private static readonly int DataOffset = EventSize == 12 ? 4 : 8;

    public static bool IsSupported => OperatingSystem.IsLinux() && IntPtr.Size == 8;

    public static int EpollCreate()
    {
        var fd = epoll_create1(EpollCloexec);
        return fd >= 0 ? fd : throw Error("epoll_create1");
    }

    public static int EventFd()
    {
        var fd = eventfd(0, EfdNonblock | EfdCloexec);
        return fd >= 0 ? fd : throw Error("eventfd");
    }

    /// <summary>Adds <paramref name="fd"/> to <paramref name="epoll"/>; <paramref name="scratch"/> is an event-sized buffer.</summary>
    public static void Add(int epoll, int fd, uint events, ulong data, byte[] scratch)
    {
        WriteEvent(scratch, 0, events, data);
        if (epoll_ctl(epoll, EpollCtlAdd, fd, scratch) != 0)
        {
            throw Error("epoll_ctl(ADD)");
        }
    }

    /// <summary>Removes <paramref name="fd"/>; false when it was not registered (or is already closed).</summary>
    public static bool Remove(int epoll, int fd, byte[] scratch) => epoll_ctl(epoll, EpollCtlDel, fd, scratch) == 0;

    /// <summary>Waits for events into <paramref name="events"/>; the count, or -1 with errno (EINTR is normal).</summary>
    public static int Wait(int epoll, byte[] events, int timeoutMs) => epoll_wait(epoll, events, events.Length / EventSize, timeoutMs);

    public static (uint Events, ulong Data) ReadEvent(byte[] events, int index)
    {
        var offset = index * EventSize;
        return (BinaryPrimitives.ReadUInt32LittleEndian(events.AsSpan(offset)), BinaryPrimitives.ReadUInt64LittleEndian(events.AsSpan(offset + DataOffset)));
    }

    private static void WriteEvent(byte[] buffer, int index, uint events, ulong data)
    {
        var offset = index * EventSize;
        buffer.AsSpan(offset, EventSize).Clear();
        BinaryPrimitives.WriteUInt32LittleEndian(buffer.AsSpan(offset), events);
        BinaryPrimitives.WriteUInt64LittleEndian(buffer.AsSpan(offset + DataOffset), data);
    }

    /// <summary>Adds one to an eventfd's counter, which makes it readable. EAGAIN (counter full) still leaves it readable.</summary>
    public static void Signal(int eventFd, byte[] eight)
    {
        BinaryPrimitives.WriteUInt64LittleEndian(eight, 1);
        write(eventFd, eight, 8);
    }

    /// <summary>Resets an eventfd's counter to zero, so that it is no longer readable.</summary>
    public static void Drain(int eventFd, byte[] eight) => read(eventFd, eight, 8);

    /// <summary>
    /// Accepts one connection, non-blocking and close-on-exec from the start; -1 with <paramref name="errno"/> when
    /// there is none (EAGAIN) or on error.
    /// </summary>
    public static int Accept(int listener, out int errno)
    {
        var fd = accept4(listener, IntPtr.Zero, IntPtr.Zero, SockNonblock | SockCloexec);
        errno = fd < 0 ? Marshal.GetLastPInvokeError() : 0;
        return fd;
    }

    /// <summary>
    /// Makes <paramref name="fd"/> non-blocking. The flag belongs to the socket's open file description, so every
    /// descriptor of it (duplicates, a successor's) sees it: harmless for listening sockets, which .NET's own socket
    /// transport also puts in non-blocking mode before accepting.
    /// </summary>
    public static void SetNonBlocking(int fd)
    {
        var flags = fcntl(fd, FGetFl, 0);
        if (flags < 0 || fcntl(fd, FSetFl, flags | ONonblock) < 0)
        {
            throw Error("fcntl(O_NONBLOCK)");
        }
    }

    public static void Close(int fd) => close(fd);

    /// <summary>
    /// Starts connecting the non-blocking socket <paramref name="fd"/>: 0 when connected at once, else the errno
    /// (EINPROGRESS: wait for EPOLLOUT, then read <see cref="PendingError"/>). <paramref name="address"/> is the
    /// platform's sockaddr, as <see cref="System.Net.SocketAddress"/> holds it.
    /// </summary>
    public static int Connect(int fd, byte[] address, int length)
    {
        while (true)
        {
            if (connect(fd, address, length) == 0)
            {
                return 0;
            }
            var errno = Marshal.GetLastPInvokeError();
            if (errno != EIntr)
            {
                return errno;
            }
        }
    }

    /// <summary>The socket's pending error (SO_ERROR), which also clears it: a connect's outcome once EPOLLOUT came.</summary>
    public static int PendingError(int fd)
    {
        var value = new byte[4];
        var length = 4;
        return getsockopt(fd, SolSocket, SoError, value, ref length) == 0 ? BinaryPrimitives.ReadInt32LittleEndian(value) : Marshal.GetLastPInvokeError();
    }

    /// <summary>An errno from a connect as .NET names it, so that connect failures are classified alike on both engines.</summary>
    public static System.Net.Sockets.SocketError ToSocketError(int errno) => errno switch
    {
        111 => System.Net.Sockets.SocketError.ConnectionRefused,
        104 => System.Net.Sockets.SocketError.ConnectionReset,
        110 => System.Net.Sockets.SocketError.TimedOut,
        113 => System.Net.Sockets.SocketError.HostUnreachable,
        101 => System.Net.Sockets.SocketError.NetworkUnreachable,
        99 => System.Net.Sockets.SocketError.AddressNotAvailable,
        98 => System.Net.Sockets.SocketError.AddressAlreadyInUse,
        23 or 24 => System.Net.Sockets.SocketError.TooManyOpenSockets,
        105 => System.Net.Sockets.SocketError.NoBufferSpaceAvailable,
        1 or 13 => System.Net.Sockets.SocketError.AccessDenied,
        _ => System.Net.Sockets.SocketError.SocketError,
    };

    private static IOException Error(string call)
    {
        var errno = Marshal.GetLastPInvokeError();
        return new IOException($"{call} failed: {Marshal.GetPInvokeErrorMessage(errno)} (errno {errno})");
    }

    [DllImport("libc", SetLastError = true)]
    private static extern int epoll_create1(int flags);

    [DllImport("libc", SetLastError = true)]
    private static extern int epoll_ctl(int epfd, int op, int fd, byte[] @event);

    [DllImport("libc", SetLastError = true)]
    private static extern int epoll_wait(int epfd, byte[] events, int maxevents, int timeout);

    [DllImport("libc", SetLastError = true)]
    private static extern int eventfd(uint initval, int flags);

    [DllImport("libc", SetLastError = true)]
    private static extern int accept4(int sockfd, IntPtr addr, IntPtr addrlen, int flags);

    [DllImport("libc", SetLastError = true)]
    private static extern int fcntl(int fd, int command, int argument);

    [DllImport("libc", SetLastError = true)]
    private static extern nint read(int fd, byte[] buffer, nint count);

    [DllImport("libc", SetLastError = true)]
    private static extern nint write(int fd, byte[] buffer, nint count);

    [DllImport("libc")]
    private static extern int close(int fd);

    [DllImport("libc", SetLastError = true)]
    private static extern int connect(int sockfd, byte[] addr, int addrlen);

    [DllImport("libc", SetLastError = true)]
    private static extern int getsockopt(int sockfd, int level, int optname, byte[] optval, ref int optlen);
}
