using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;

namespace Ferry.Loops;

/// <summary>
/// The Linux calls an event loop needs and .NET has no API for: epoll, eventfd and accept4; and a connection's
/// recv, send and shutdown on a bare descriptor, so that an idle connection holds no <see cref="Socket"/> (with its
/// async context, locks and endpoints). Plain DllImport on arrays, references and integers (LibraryImport would
/// need unsafe code, which the build does not allow).
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
    private const int MsgNoSignal = 0x4000;
    private const int ShutRdWr = 2;
    private const int IpProtoTcp = 6;
    private const int TcpNoDelay = 1;
    private const int AfInet = 2;
    private const int AfInet6 = 10;
    // sizeof(struct sockaddr_in6): the largest address a TCP listener accepts from.
    private const int SockAddrInet6Size = 28;

    public const int EAgain = 11;
    public const int EIntr = 4;

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

    /// <summary>recv(2) into <paramref name="buffer"/>: the bytes read (0 at end of stream), or 0 with the error.</summary>
    public static int Receive(int fd, Span<byte> buffer, out SocketError error)
    {
        while (true)
        {
            var received = recv(fd, ref MemoryMarshal.GetReference(buffer), buffer.Length, 0);
            if (received >= 0)
            {
                error = SocketError.Success;
                return (int)received;
            }
            var errno = Marshal.GetLastPInvokeError();
            if (errno != EIntr)
            {
                error = ToSocketError(errno);
                return 0;
            }
        }
    }

    /// <summary>send(2) of <paramref name="buffer"/> (no SIGPIPE): the bytes the kernel took, or 0 with the error.</summary>
    public static int Send(int fd, ReadOnlySpan<byte> buffer, out SocketError error)
    {
        while (true)
        {
            var sent = send(fd, ref MemoryMarshal.GetReference(buffer), buffer.Length, MsgNoSignal);
            if (sent >= 0)
            {
                error = SocketError.Success;
                return (int)sent;
            }
            var errno = Marshal.GetLastPInvokeError();
            if (errno != EIntr)
            {
                error = ToSocketError(errno);
                return 0;
            }
        }
    }

    /// <summary>shutdown(SHUT_RDWR); an error (the peer already reset or gone) leaves closing as all there is to do.</summary>
    public static void ShutdownBoth(int fd) => shutdown(fd, ShutRdWr);

    /// <summary>TCP_NODELAY on, as Kestrel's socket transport sets it; false when the connection is already gone.</summary>
    public static bool SetNoDelay(int fd)
    {
        var on = 1;
        return setsockopt(fd, IpProtoTcp, TcpNoDelay, ref on, sizeof(int)) == 0;
    }

    /// <summary>
    /// The connection's local or remote address, as <see cref="Socket.LocalEndPoint"/> and
    /// <see cref="Socket.RemoteEndPoint"/> give it; null when the connection is already gone.
    /// </summary>
    public static IPEndPoint? EndPoint(int fd, bool remote)
    {
        var address = new byte[SockAddrInet6Size];
        var length = address.Length;
        if ((remote ? getpeername(fd, address, ref length) : getsockname(fd, address, ref length)) != 0)
        {
            return null;
        }
        var span = address.AsSpan(0, length);
        // sa_family is in host order, the port and the address in network order.
        var family = BinaryPrimitives.ReadUInt16LittleEndian(span);
        var port = BinaryPrimitives.ReadUInt16BigEndian(span[2..]);
        return family switch
        {
            AfInet when length >= 16 => new IPEndPoint(new IPAddress(span.Slice(4, 4)), port),
            AfInet6 when length >= SockAddrInet6Size => new IPEndPoint(new IPAddress(span.Slice(8, 16), BinaryPrimitives.ReadUInt32LittleEndian(span[24..])), port),
            _ => null,
        };
    }

    // The errors a connected TCP socket's recv and send report, as .NET's sockets name them.
    private static SocketError ToSocketError(int errno) => errno switch
    {
        EAgain => SocketError.WouldBlock,
        9 => SocketError.OperationAborted,            // EBADF
        12 or 105 => SocketError.NoBufferSpaceAvailable, // ENOMEM, ENOBUFS
        32 => SocketError.Shutdown,                   // EPIPE
        100 => SocketError.NetworkDown,
        101 => SocketError.NetworkUnreachable,
        102 => SocketError.NetworkReset,
        103 => SocketError.ConnectionAborted,
        104 => SocketError.ConnectionReset,
        107 => SocketError.NotConnected,
        110 => SocketError.TimedOut,
        113 => SocketError.HostUnreachable,
        _ => SocketError.SocketError,
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
    private static extern nint recv(int fd, ref byte buffer, nint length, int flags);

    [DllImport("libc", SetLastError = true)]
    private static extern nint send(int fd, ref byte buffer, nint length, int flags);

    [DllImport("libc", SetLastError = true)]
    private static extern int shutdown(int fd, int how);

    [DllImport("libc", SetLastError = true)]
    private static extern int setsockopt(int fd, int level, int name, ref int value, int length);

    [DllImport("libc", SetLastError = true)]
    private static extern int getsockname(int fd, byte[] address, ref int length);

    [DllImport("libc", SetLastError = true)]
    private static extern int getpeername(int fd, byte[] address, ref int length);
}
