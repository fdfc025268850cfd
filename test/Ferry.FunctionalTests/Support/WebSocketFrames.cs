namespace Ferry.FunctionalTests.Support;

internal static class WebSocketFrames
{
    // A client's frame: RFC 6455 requires every frame from a client to be masked.
    public static byte[] Masked(int opcode, byte[] payload)
    {
        byte[] mask = [0x12, 0x34, 0x56, 0x78];
        var frame = new List<byte> { (byte)(0x80 | opcode) };
        if (payload.Length < 126)
        {
            frame.Add((byte)(0x80 | payload.Length));
        }
        else
        {
            frame.AddRange([0x80 | 126, (byte)(payload.Length >> 8), (byte)payload.Length]);
        }
        frame.AddRange(mask);
        frame.AddRange(payload.Select((b, i) => (byte)(b ^ mask[i % 4])));
        return [.. frame];
    }
}
