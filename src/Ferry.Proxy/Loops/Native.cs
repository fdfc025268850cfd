using System.Buffers;
using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;

namespace Ferry.Loops;

/// <summary>
/// The Linux calls an event loop needs and .NET has no API for: epoll, eventfd and accept4; a client connection's
/// recv, send and shutdown on a bare descriptor, so that an idle connection holds no <see cref="Socket"/> (with its
/// async context, locks and endpoints); and an upstream connection's non-blocking connect, which neither throws nor
/// registers the socket with .NET's own epoll engine. Plain DllImport on arrays, references and integers (LibraryImport would
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

    // Segments per writev(2); Linux takes up to 1024 (IOV_MAX).
    public const int MaxGather = 64;

    [ThreadStatic] private static IoVec[]? t_vectors;
    [ThreadStatic] private static GCHandle[]? t_pins;

    [StructLayout(LayoutKind.Sequential)]
    private struct IoVec
    {
        public IntPtr Base;
        public nint Length;
    }

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

    /// <summary>
    /// Sends the start of <paramref name="buffer"/>: send(2) for one segment, writev(2) of up to
    /// <see cref="MaxGather"/> array-backed segments otherwise (as Kestrel's socket transport gathers with sendmsg).
    /// The bytes the kernel took, or 0 with the error. On a loop's thread (its scratch arrays are per thread).
    /// </summary>
    public static int SendGather(int fd, in ReadOnlySequence<byte> buffer, out SocketError error)
    {
        if (buffer.IsSingleSegment)
        {
            return Send(fd, buffer.FirstSpan, out error);
        }
        var vectors = t_vectors ??= new IoVec[MaxGather];
        var pins = t_pins ??= new GCHandle[MaxGather];
        var count = 0;
        try
        {
            foreach (var segment in buffer)
            {
                if (segment.IsEmpty)
                {
                    continue;
                }
                if (!MemoryMarshal.TryGetArray(segment, out var array))
                {
                    if (count == 0)
                    {
                        return Send(fd, segment.Span, out error);
                    }
                    break;
                }
                pins[count] = GCHandle.Alloc(array.Array, GCHandleType.Pinned);
                vectors[count] = new IoVec { Base = pins[count].AddrOfPinnedObject() + array.Offset, Length = array.Count };
                if (++count == MaxGather)
                {
                    break;
                }
            }
            error = SocketError.Success;
            while (count > 0)
            {
                // .NET ignores SIGPIPE, so writev's EPIPE is an error here, not a signal.
                var sent = writev(fd, vectors, count);
                if (sent >= 0)
                {
                    return (int)sent;
                }
                var errno = Marshal.GetLastPInvokeError();
                if (errno != EIntr)
                {
                    error = ToSocketError(errno);
                    return 0;
                }
            }
            return 0;
        }
        finally
        {
            for (var i = 0; i < count; i++)
            {
                pins[i].Free();
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

    /// <summary>
    /// Starts connecting the non-blocking socket <paramref name="fd"/>: 0 when connected at once, else the errno
    /// (EINPROGRESS: wait for EPOLLOUT, then read <see cref="PendingError"/>). <paramref name="address"/> is the
    /// platform's sockaddr, as <see cref="SocketAddress"/> holds it.
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
        var value = 0;
        var length = sizeof(int);
        return getsockopt(fd, SolSocket, SoError, ref value, ref length) == 0 ? value : Marshal.GetLastPInvokeError();
    }

    // The errors a TCP socket's connect, recv and send report, as .NET's sockets name them, so that failures are
    // classified alike on both engines.
    public static SocketError ToSocketError(int errno) => errno switch
    {
        EAgain => SocketError.WouldBlock,
        111 => SocketError.ConnectionRefused,
        99 => SocketError.AddressNotAvailable,
        98 => SocketError.AddressAlreadyInUse,
        23 or 24 => SocketError.TooManyOpenSockets,
        1 or 13 => SocketError.AccessDenied,
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

    /// <summary>Gives the processor to another runnable thread, if any; returns at once when there is none.</summary>
    public static void Yield() => sched_yield();

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

    [DllImport("libc")]
    private static extern int sched_yield();

    [DllImport("libc", SetLastError = true)]
    private static extern nint writev(int fd, [In] IoVec[] vectors, int count);

    [DllImport("libc", SetLastError = true)]
    private static extern int connect(int sockfd, byte[] addr, int addrlen);

    [DllImport("libc", SetLastError = true)]
    private static extern int getsockopt(int sockfd, int level, int optname, ref int optval, ref int optlen);

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
