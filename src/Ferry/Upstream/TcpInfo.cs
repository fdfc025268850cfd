using System.Runtime.InteropServices;
using System.Net.Sockets;

namespace Ferry.Upstream;

// Linux TCP_INFO, for the one figure the replay policy needs: how many bytes the peer's TCP stack acknowledged.
internal static class TcpInfo
{
    private const int IpProtoTcp = 6;
    private const int TcpInfoOption = 11;

    // struct tcp_info (include/uapi/linux/tcp.h): 8 one-byte fields, 24 u32 fields, then u64 pacing_rate,
    // max_pacing_rate and bytes_acked (Linux 4.1+) at byte 120.
    private const int BytesAckedOffset = 120;

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
