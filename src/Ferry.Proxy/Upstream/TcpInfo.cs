using System.Runtime.InteropServices;
using System.Net.Sockets;

namespace Ferry.Upstream;

// Linux TCP_INFO: how many bytes the peer's TCP stack acknowledged (the replay policy), and when segments last
// arrived (the probe's idle timings).
internal static class TcpInfo
{
    private const int IpProtoTcp = 6;
    private const int TcpInfoOption = 11;

    // struct tcp_info (include/uapi/linux/tcp.h): 8 one-byte fields, 24 u32 fields, then u64 pacing_rate,
    // max_pacing_rate and bytes_acked (Linux 4.1+) at byte 120.
    private const int BytesAckedOffset = 120;

    // tcpi_last_data_recv and tcpi_last_ack_recv, u32 milliseconds, after 8 one-byte and 9 u32 fields.
    private const int LastDataReceivedOffset = 52;
    private const int LastAckReceivedOffset = 56;

    // How long ago, by the kernel's clock, the last data segment and the last segment carrying an ACK arrived; false
    // when the kernel cannot tell. A FIN carries an ACK and no data: after one, SinceAck is the time since the FIN.
    public static bool TryGetReceiveAges(Socket socket, out TimeSpan sinceData, out TimeSpan sinceAck)
    {
        sinceData = sinceAck = TimeSpan.Zero;
        if (!OperatingSystem.IsLinux())
        {
            return false;
        }
        Span<byte> info = stackalloc byte[256];
        try
        {
            if (socket.GetRawSocketOption(IpProtoTcp, TcpInfoOption, info) < LastAckReceivedOffset + 4)
            {
                return false;
            }
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException or PlatformNotSupportedException)
        {
            return false;
        }
        sinceData = TimeSpan.FromMilliseconds(MemoryMarshal.Read<uint>(info[LastDataReceivedOffset..]));
        sinceAck = TimeSpan.FromMilliseconds(MemoryMarshal.Read<uint>(info[LastAckReceivedOffset..]));
        return true;
    }

    // Bytes of this connection the peer acknowledged, or -1 when the kernel cannot tell.
    public static long BytesAcked(Socket socket)
    {
        if (!OperatingSystem.IsLinux())
        {
            return -1;
        }
        Span<byte> info = stackalloc byte[256];
        try
        {
            var length = socket.GetRawSocketOption(IpProtoTcp, TcpInfoOption, info);
            return length >= BytesAckedOffset + 8 ? (long)MemoryMarshal.Read<ulong>(info[BytesAckedOffset..]) : -1;
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException or PlatformNotSupportedException)
        {
            return -1;
        }
    }
}
