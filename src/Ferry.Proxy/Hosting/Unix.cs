using System.Net.Sockets;
using System.Runtime.InteropServices;

namespace Ferry.Hosting;

/// <summary>
/// The few libc calls a socket handover needs and .NET has no API for: descriptors passed in SCM_RIGHTS ancillary
/// data (sendmsg/recvmsg), the peer's credentials (SO_PEERCRED), duplicates and the close-on-exec flag. Linux on 64-bit only:
/// the structure layouts below are Linux's LP64 ones.
/// </summary>
internal static class Unix
{
    private const int SolSocket = 1;
    private const int ScmRights = 1;
    private const int SoPeerCred = 17;
    private const int MsgCtrunc = 0x8;
    private const int MsgCmsgCloexec = 0x40000000;
    private const int FGetFd = 1;
    private const int FSetFd = 2;
    private const int FdCloexec = 1;
    private const int FDupFdCloexec = 1030;

    // struct msghdr: name, namelen (+4 padding), iov, iovlen, control, controllen, flags (+4 padding).
    private const int MsgHdrSize = 56;
    private const int IovSize = 16;
    // struct cmsghdr: size_t len, int level, int type; data follows, aligned to 8.
    private const int CmsgHeaderSize = 16;

    /// <summary>The most descriptors one handover message carries: far more listeners than a proxy has.</summary>
    public const int MaxDescriptors = 64;

    public static bool IsSupported => OperatingSystem.IsLinux() && IntPtr.Size == 8;

    public static void SetCloseOnExec(SafeHandle handle)
    {
        if (!IsSupported || handle.IsInvalid || handle.IsClosed)
        {
            return;
        }
        var fd = (int)handle.DangerousGetHandle();
        var flags = fcntl(fd, FGetFd, 0);
        if (flags >= 0)
        {
            fcntl(fd, FSetFd, flags | FdCloexec);
        }
    }

    /// <summary>A new descriptor for the same socket (close on exec), for Kestrel to own and close.</summary>
    public static int Duplicate(SafeHandle handle)
    {
        var fd = fcntl((int)handle.DangerousGetHandle(), FDupFdCloexec, 0);
        return fd >= 0 ? fd : throw new SocketException(Marshal.GetLastPInvokeError());
    }

    public static void Close(int fd) => close(fd);

    public static uint EffectiveUserId() => geteuid();

    /// <summary>The process and user at the other end of a connected Unix domain socket.</summary>
    public static (int Pid, uint Uid) PeerCredentials(Socket socket)
    {
        var buffer = Marshal.AllocHGlobal(12);
        try
        {
            var length = 12;
            if (getsockopt((int)socket.SafeHandle.DangerousGetHandle(), SolSocket, SoPeerCred, buffer, ref length) != 0)
            {
                throw new SocketException(Marshal.GetLastPInvokeError());
            }
            return (Marshal.ReadInt32(buffer, 0), (uint)Marshal.ReadInt32(buffer, 4));
        }
        finally
        {
            Marshal.FreeHGlobal(buffer);
        }
    }

    /// <summary>Sends <paramref name="data"/> (not empty) with <paramref name="sockets"/>' descriptors attached, in one message.</summary>
    public static void SendWithDescriptors(Socket socket, ReadOnlySpan<byte> data, IReadOnlyList<Socket> sockets)
    {
        if (sockets.Count > MaxDescriptors)
        {
            throw new ArgumentOutOfRangeException(nameof(sockets), $"at most {MaxDescriptors} descriptors per message");
        }
        var controlLength = sockets.Count == 0 ? 0 : CmsgHeaderSize + Align8(sockets.Count * 4);
        var block = Marshal.AllocHGlobal(MsgHdrSize + IovSize + data.Length + controlLength);
        var refs = new List<SafeHandle>(sockets.Count);
        try
        {
            var msg = block;
            var iov = block + MsgHdrSize;
            var payload = iov + IovSize;
            var control = payload + data.Length;
            Marshal.Copy(data.ToArray(), 0, payload, data.Length);
            Marshal.WriteIntPtr(iov, 0, payload);
            Marshal.WriteInt64(iov, 8, data.Length);
            WriteMsgHdr(msg, iov, control, controlLength);
            if (controlLength > 0)
            {
                Marshal.WriteInt64(control, 0, CmsgHeaderSize + sockets.Count * 4);
                Marshal.WriteInt32(control, 8, SolSocket);
                Marshal.WriteInt32(control, 12, ScmRights);
                for (var i = 0; i < sockets.Count; i++)
                {
                    var handle = sockets[i].SafeHandle;
                    var added = false;
                    handle.DangerousAddRef(ref added);
                    refs.Add(handle);
                    Marshal.WriteInt32(control, CmsgHeaderSize + i * 4, (int)handle.DangerousGetHandle());
                }
            }
            var sent = sendmsg((int)socket.SafeHandle.DangerousGetHandle(), msg, 0);
            if (sent < 0)
            {
                throw new SocketException(Marshal.GetLastPInvokeError());
            }
            if (sent != data.Length)
            {
                throw new IOException($"sendmsg sent {sent} of {data.Length} bytes");
            }
        }
        finally
        {
            foreach (var handle in refs)
            {
                handle.DangerousRelease();
            }
            Marshal.FreeHGlobal(block);
        }
    }

    /// <summary>
    /// Receives one message of at most <paramref name="maxData"/> bytes and the descriptors attached to it (close on
    /// exec), each returned as a Socket that owns it. Blocks: call it once <see cref="Socket.Poll(int, SelectMode)"/>
    /// says the message is there.
    /// </summary>
    public static (byte[] Data, List<Socket> Sockets) ReceiveWithDescriptors(Socket socket, int maxData)
    {
        var controlLength = CmsgHeaderSize + Align8(MaxDescriptors * 4);
        var block = Marshal.AllocHGlobal(MsgHdrSize + IovSize + maxData + controlLength);
        try
        {
            var msg = block;
            var iov = block + MsgHdrSize;
            var payload = iov + IovSize;
            var control = payload + maxData;
            Marshal.WriteIntPtr(iov, 0, payload);
            Marshal.WriteInt64(iov, 8, maxData);
            WriteMsgHdr(msg, iov, control, controlLength);
            var received = recvmsg((int)socket.SafeHandle.DangerousGetHandle(), msg, MsgCmsgCloexec);
            if (received < 0)
            {
                throw new SocketException(Marshal.GetLastPInvokeError());
            }
            var sockets = new List<Socket>();
            // The kernel wrote back how much control data there is; walk its headers for SCM_RIGHTS.
            var usedControl = Marshal.ReadInt64(msg, 40);
            long offset = 0;
            while (offset + CmsgHeaderSize <= usedControl)
            {
                var length = Marshal.ReadInt64(control, (int)offset);
                if (length < CmsgHeaderSize || offset + length > usedControl)
                {
                    break;
                }
                if (Marshal.ReadInt32(control, (int)offset + 8) == SolSocket && Marshal.ReadInt32(control, (int)offset + 12) == ScmRights)
                {
                    var count = (int)((length - CmsgHeaderSize) / 4);
                    for (var i = 0; i < count; i++)
                    {
                        var fd = Marshal.ReadInt32(control, (int)offset + CmsgHeaderSize + i * 4);
                        sockets.Add(new Socket(new SafeSocketHandle(fd, ownsHandle: true)));
                    }
                }
                offset += Align8((int)length);
            }
            if ((Marshal.ReadInt32(msg, 48) & MsgCtrunc) != 0)
            {
                foreach (var s in sockets)
                {
                    s.Dispose();
                }
                throw new IOException("the handover message carried more descriptors than expected");
            }
            var data = new byte[received];
            Marshal.Copy(payload, data, 0, (int)received);
            return (data, sockets);
        }
        finally
        {
            Marshal.FreeHGlobal(block);
        }
    }

    private static void WriteMsgHdr(IntPtr msg, IntPtr iov, IntPtr control, int controlLength)
    {
        for (var i = 0; i < MsgHdrSize; i += 8)
        {
            Marshal.WriteInt64(msg, i, 0);
        }
        Marshal.WriteIntPtr(msg, 16, iov);
        Marshal.WriteInt64(msg, 24, 1);
        Marshal.WriteIntPtr(msg, 32, controlLength == 0 ? IntPtr.Zero : control);
        Marshal.WriteInt64(msg, 40, controlLength);
    }

    private static int Align8(int n) => (n + 7) & ~7;

    [DllImport("libc", SetLastError = true)]
    private static extern long sendmsg(int socket, IntPtr message, int flags);

    [DllImport("libc", SetLastError = true)]
    private static extern long recvmsg(int socket, IntPtr message, int flags);

    [DllImport("libc", SetLastError = true)]
    private static extern int getsockopt(int socket, int level, int name, IntPtr value, ref int length);

    [DllImport("libc", SetLastError = true)]
    private static extern int fcntl(int fd, int command, int argument);

    [DllImport("libc")]
    private static extern uint geteuid();

    [DllImport("libc")]
    private static extern int close(int fd);
}
