using System.Buffers;
using System.Buffers.Binary;
using System.IO.Pipelines;
using System.Security.Cryptography;
using System.Text;

namespace Ferry.Lab;

/// <summary>
/// <c>/ws</c>: the RFC 6455 opening handshake, then an echo of every data frame, pong for ping, close for close.
/// Frames are echoed one by one with their opcode and FIN bit, so fragmented messages come back fragmented.
/// </summary>
internal static class LabWebSocket
{
    /// <summary>RFC 6455 §1.3: appended to Sec-WebSocket-Key before hashing.</summary>
    private const string AcceptGuid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

    /// <summary>Largest frame payload echoed; a bigger frame is refused with 1009 (message too big).</summary>
    private const long MaxPayload = 16 * 1024 * 1024;

    private const int OpContinuation = 0x0, OpText = 0x1, OpBinary = 0x2, OpClose = 0x8, OpPing = 0x9, OpPong = 0xA;

    /// <summary>Sec-WebSocket-Accept for a key: base64(SHA-1(key + GUID)) (RFC 6455 §4.2.2).</summary>
    public static string ComputeAccept(string key) =>
        Convert.ToBase64String(SHA1.HashData(Encoding.ASCII.GetBytes(key.Trim() + AcceptGuid)));

    public static async Task HandleAsync(LabExchange exchange, CancellationToken ct)
    {
        IEnumerable<KeyValuePair<string, string>> close = [new("Connection", "close"), new("Content-Type", "text/plain; charset=utf-8")];
        if (exchange.Header("Upgrade") is null)
        {
            await exchange.WriteResponseAsync(426, "/ws needs a WebSocket upgrade\n",
                [new("Upgrade", "websocket"), new("Content-Type", "text/plain; charset=utf-8")], ct);
            return;
        }
        string? key = exchange.Header("Sec-WebSocket-Key");
        if (exchange.Path != "/ws" || exchange.Method != "GET" || exchange.MinorVersion != 1
            || !exchange.HasToken("Upgrade", "websocket") || !exchange.HasToken("Connection", "upgrade")
            || exchange.Header("Sec-WebSocket-Version") != "13" || string.IsNullOrWhiteSpace(key))
        {
            await exchange.WriteResponseAsync(400, "only WebSocket upgrades on /ws are supported\n", close, ct);
            return;
        }
        await exchange.WriteHeadAsync(101,
            [new("Upgrade", "websocket"), new("Connection", "Upgrade"), new("Sec-WebSocket-Accept", ComputeAccept(key))],
            contentLength: null, ct);
        await EchoFramesAsync(exchange, ct);
    }

    private static async Task EchoFramesAsync(LabExchange exchange, CancellationToken ct)
    {
        PipeReader input = exchange.RawInput;
        PipeWriter output = exchange.RawOutput;
        while (true)
        {
            var result = await input.ReadAsync(ct);
            var buffer = result.Buffer;
            var status = TryReadFrame(buffer, out var frame, out var consumed);
            if (status == FrameStatus.NeedMore)
            {
                input.AdvanceTo(buffer.Start, buffer.End);
                if (result.IsCompleted)
                {
                    return;
                }
                continue;
            }
            input.AdvanceTo(consumed);
            if (status != FrameStatus.Ok)
            {
                ushort code = status == FrameStatus.TooBig ? (ushort)1009 : (ushort)1002;
                byte[] payload = new byte[2];
                BinaryPrimitives.WriteUInt16BigEndian(payload, code);
                await WriteFrameAsync(output, true, OpClose, payload, ct);
                exchange.Close();
                return;
            }
            switch (frame.Opcode)
            {
                case OpContinuation or OpText or OpBinary:
                    await WriteFrameAsync(output, frame.Fin, frame.Opcode, frame.Payload, ct);
                    break;
                case OpPing:
                    await WriteFrameAsync(output, true, OpPong, frame.Payload, ct);
                    break;
                case OpPong:
                    break;
                case OpClose:
                    // Echoing the close payload repeats the client's status code (RFC 6455 §5.5.1).
                    await WriteFrameAsync(output, true, OpClose, frame.Payload, ct);
                    exchange.Close();
                    return;
            }
        }
    }

    private enum FrameStatus { Ok, NeedMore, ProtocolError, TooBig }

    private readonly record struct Frame(bool Fin, int Opcode, byte[] Payload);

    private static FrameStatus TryReadFrame(ReadOnlySequence<byte> buffer, out Frame frame, out SequencePosition consumed)
    {
        frame = default;
        consumed = buffer.Start;
        var reader = new SequenceReader<byte>(buffer);
        if (!reader.TryRead(out byte first) || !reader.TryRead(out byte second))
        {
            return FrameStatus.NeedMore;
        }
        bool fin = (first & 0x80) != 0;
        int opcode = first & 0x0F;
        bool masked = (second & 0x80) != 0;
        long length = second & 0x7F;
        // RSV bits without an extension, unknown opcodes and unmasked client frames are protocol errors (RFC 6455 §5.2, §5.1).
        if ((first & 0x70) != 0 || !masked || opcode is not (OpContinuation or OpText or OpBinary or OpClose or OpPing or OpPong))
        {
            consumed = buffer.End;
            return FrameStatus.ProtocolError;
        }
        if (length == 126)
        {
            if (!reader.TryReadBigEndian(out short extended))
            {
                return FrameStatus.NeedMore;
            }
            length = (ushort)extended;
        }
        else if (length == 127)
        {
            if (!reader.TryReadBigEndian(out long extended))
            {
                return FrameStatus.NeedMore;
            }
            length = extended;
        }
        if (length is < 0 or > MaxPayload)
        {
            consumed = buffer.End;
            return FrameStatus.TooBig;
        }
        Span<byte> mask = stackalloc byte[4];
        if (!reader.TryCopyTo(mask) || reader.Remaining - 4 < length)
        {
            return FrameStatus.NeedMore;
        }
        reader.Advance(4);
        byte[] payload = new byte[length];
        reader.UnreadSequence.Slice(0, length).CopyTo(payload);
        reader.Advance(length);
        for (int i = 0; i < payload.Length; i++)
        {
            payload[i] ^= mask[i & 3];
        }
        frame = new Frame(fin, opcode, payload);
        consumed = reader.Position;
        return FrameStatus.Ok;
    }

    /// <summary>Writes one unmasked frame, as a server must (RFC 6455 §5.1).</summary>
    private static async Task WriteFrameAsync(PipeWriter output, bool fin, int opcode, byte[] payload, CancellationToken ct)
    {
        var header = new byte[10];
        header[0] = (byte)((fin ? 0x80 : 0) | opcode);
        int headerLength;
        if (payload.Length < 126)
        {
            header[1] = (byte)payload.Length;
            headerLength = 2;
        }
        else if (payload.Length <= ushort.MaxValue)
        {
            header[1] = 126;
            BinaryPrimitives.WriteUInt16BigEndian(header.AsSpan(2), (ushort)payload.Length);
            headerLength = 4;
        }
        else
        {
            header[1] = 127;
            BinaryPrimitives.WriteUInt64BigEndian(header.AsSpan(2), (ulong)payload.Length);
            headerLength = 10;
        }
        output.Write(header.AsSpan(0, headerLength));
        output.Write(payload);
        await output.FlushAsync(ct);
    }
}
