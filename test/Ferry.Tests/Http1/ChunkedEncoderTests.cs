using System.Buffers;
using Ferry.Http1;
using Ferry.Tests.Support;

namespace Ferry.Tests.Http1;

public class ChunkedEncoderTests
{
    [Theory]
    [InlineData(1L, "1\r\n")]
    [InlineData(255L, "ff\r\n")]
    [InlineData(4096L, "1000\r\n")]
    [InlineData(long.MaxValue, "7fffffffffffffff\r\n")]
    public void Chunk_header_is_lower_case_hex_and_crlf(long length, string expected)
    {
        var writer = new ArrayBufferWriter<byte>();
        ChunkedEncoder.WriteChunkHeader(writer, length);
        Assert.Equal(expected, Segments.Latin1String(writer.WrittenSpan.ToArray()));
    }

    [Theory]
    [InlineData(0L)]
    [InlineData(-1L)]
    public void Chunk_header_refuses_a_length_that_would_end_the_body(long length)
    {
        var writer = new ArrayBufferWriter<byte>();
        Assert.Throws<ArgumentOutOfRangeException>(() => ChunkedEncoder.WriteChunkHeader(writer, length));
        Assert.Equal(0, writer.WrittenCount);
    }

    [Fact]
    public void Chunk_end_and_last_chunk_are_exact()
    {
        var writer = new ArrayBufferWriter<byte>();
        ChunkedEncoder.WriteChunkEnd(writer);
        ChunkedEncoder.WriteLastChunk(writer);
        Assert.Equal("\r\n0\r\n\r\n", Segments.Latin1String(writer.WrittenSpan.ToArray()));
    }

    [Fact]
    public void Last_chunk_with_trailers_is_exact()
    {
        var writer = new ArrayBufferWriter<byte>();
        ChunkedEncoder.WriteLastChunk(writer, [new("X-Checksum", "abc"), new("Server-Timing", "db;dur=5")]);
        Assert.Equal("0\r\nX-Checksum: abc\r\nServer-Timing: db;dur=5\r\n\r\n", Segments.Latin1String(writer.WrittenSpan.ToArray()));
    }

    [Theory]
    [InlineData("X-A", "1\r\nX-Injected: 2")]
    [InlineData("X-A", "1\n")]
    [InlineData("X-A", "1\0")]
    [InlineData("X-A", "\u0100")]
    [InlineData("X A", "1")]
    [InlineData("X-A:", "1")]
    [InlineData("", "1")]
    public void Trailers_that_could_inject_lines_are_refused_before_anything_is_written(string name, string value)
    {
        var writer = new ArrayBufferWriter<byte>();
        Assert.Throws<ArgumentException>(() => ChunkedEncoder.WriteLastChunk(writer, [new("X-Ok", "1"), new(name, value)]));
        Assert.Equal(0, writer.WrittenCount);
    }

    [Fact]
    public void Encoded_output_decodes_back_to_the_same_payload_and_trailers()
    {
        byte[] payload = Enumerable.Range(0, 5000).Select(i => (byte)(i * 31)).ToArray();
        int[] chunkSizes = [1, 15, 16, 255, 256, 4096, 361];
        var writer = new ArrayBufferWriter<byte>();
        int offset = 0;
        foreach (int size in chunkSizes)
        {
            ChunkedEncoder.WriteChunkHeader(writer, size);
            writer.Write(payload.AsSpan(offset, size));
            ChunkedEncoder.WriteChunkEnd(writer);
            offset += size;
        }

        Assert.Equal(payload.Length, offset);
        ChunkedEncoder.WriteLastChunk(writer, [new("X-Sum", "\u00e9t\u00e9"), new("X-Empty", "")]);

        var decoder = new ChunkedDecoder(Http1Limits.Default);
        var reader = new SequenceReader<byte>(Segments.Split(writer.WrittenSpan.ToArray(), 100, 2000, 4100));
        var output = new List<byte>();
        ChunkedStatus status;
        while ((status = decoder.Read(ref reader, out ReadOnlySequence<byte> data)) == ChunkedStatus.Data)
        {
            output.AddRange(data.ToArray());
        }

        Assert.Equal(ChunkedStatus.Complete, status);
        Assert.True(reader.End);
        Assert.Equal(payload, output.ToArray());
        Assert.Equal("X-Sum=\u00e9t\u00e9|X-Empty=", HeadText.Describe(decoder.Trailers));
    }
}
