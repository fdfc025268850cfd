using System.Buffers;
using Ferry.Http1;
using Ferry.Tests.Support;

namespace Ferry.Tests.Http1;

public class ChunkedDecoderTests
{
    public static TheoryData<string, string, string> EncodedBodies => new()
    {
        { "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", "hello world", "" },
        { "5;name=value\r\nhello\r\n1 ; ext ;quoted=\"a;b\"\r\n!\r\n0;last\r\n\r\n", "hello!", "" },
        { "3\r\nabc\r\n0\r\nX-Checksum: 123\r\nserver-timing:  db;dur=5 \r\n\r\n", "abc", "X-Checksum=123|server-timing=db;dur=5" },
        { "000A\r\n0123456789\r\n00b\r\nABCDEFGHIJK\r\n000\r\n\r\n", "0123456789ABCDEFGHIJK", "" },
        { "1a\r\nabcdefghijklmnopqrstuvwxyz\r\n1A\r\nABCDEFGHIJKLMNOPQRSTUVWXYZ\r\n0\r\n\r\n", "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", "" },
        { "0\r\n\r\n", "", "" },
        { "2\r\n\r\n\r\n0\r\nTrailer-E: \u00ff\r\n\r\n", "\r\n", "Trailer-E=\u00ff" },
    };

    [Theory]
    [MemberData(nameof(EncodedBodies))]
    public void Every_two_segment_split_decodes_the_same_payload_and_stops_at_the_message_end(string encoded, string payload, string trailers)
    {
        byte[] bytes = [.. Segments.Latin1(encoded), .. "NEXT"u8];
        var decoder = new ChunkedDecoder(Http1Limits.Default);
        foreach ((int cut, ReadOnlySequence<byte> sequence) in Segments.AllTwoWaySplits(bytes))
        {
            decoder.Reset();
            var reader = new SequenceReader<byte>(sequence);
            var output = new List<byte>();
            ChunkedStatus status;
            int calls = 0;
            while ((status = decoder.Read(ref reader, out ReadOnlySequence<byte> data)) == ChunkedStatus.Data)
            {
                Assert.False(data.IsEmpty);
                output.AddRange(data.ToArray());
                Assert.True(++calls < 100, "the decoder must make progress");
            }

            Assert.True(status == ChunkedStatus.Complete, $"cut at {cut}: {status}");
            Assert.Equal(payload, Segments.Latin1String(output.ToArray()));
            Assert.Equal(trailers, HeadText.Describe(decoder.Trailers));
            Assert.True(reader.IsNext("NEXT"u8), $"cut at {cut}");
            Assert.Equal(4, reader.Remaining);
        }
    }

    [Theory]
    [MemberData(nameof(EncodedBodies))]
    public void Bytes_arriving_one_at_a_time_decode_the_same_payload(string encoded, string payload, string trailers)
    {
        byte[] bytes = Segments.Latin1(encoded);
        var decoder = new ChunkedDecoder(Http1Limits.Default);
        var output = new List<byte>();
        // What a pipe would still hold: bytes received but not consumed.
        var pending = new List<byte>();
        ChunkedStatus status = ChunkedStatus.NeedMoreData;
        foreach (byte b in bytes)
        {
            Assert.NotEqual(ChunkedStatus.Complete, status);
            pending.Add(b);
            var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(pending.ToArray()));
            while ((status = decoder.Read(ref reader, out ReadOnlySequence<byte> data)) == ChunkedStatus.Data)
            {
                output.AddRange(data.ToArray());
            }

            pending.RemoveRange(0, (int)reader.Consumed);
        }

        Assert.Equal(ChunkedStatus.Complete, status);
        Assert.Empty(pending);
        Assert.Equal(payload, Segments.Latin1String(output.ToArray()));
        Assert.Equal(trailers, HeadText.Describe(decoder.Trailers));
    }

    [Fact]
    public void Data_is_a_slice_of_the_input_and_partial_chunks_are_returned_as_they_come()
    {
        byte[] bytes = Segments.Latin1("a\r\n0123456789\r\n0\r\n\r\n");
        var decoder = new ChunkedDecoder(Http1Limits.Default);

        // Only the size line and 4 payload bytes so far.
        var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(bytes, 0, 7));
        Assert.Equal(ChunkedStatus.Data, decoder.Read(ref reader, out ReadOnlySequence<byte> data));
        Assert.Equal("0123"u8.ToArray(), data.ToArray());
        Assert.Equal(reader.Sequence.GetPosition(3), data.Start);
        Assert.Equal(ChunkedStatus.NeedMoreData, decoder.Read(ref reader, out _));
        Assert.Equal(7, reader.Consumed);

        reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(bytes, 7, bytes.Length - 7));
        Assert.Equal(ChunkedStatus.Data, decoder.Read(ref reader, out data));
        Assert.Equal("456789"u8.ToArray(), data.ToArray());
        Assert.Equal(ChunkedStatus.Complete, decoder.Read(ref reader, out _));
        Assert.Equal(ChunkedStatus.Complete, decoder.Read(ref reader, out _));
        Assert.True(reader.End);
    }

    [Fact]
    public void A_partial_size_line_is_not_consumed()
    {
        var decoder = new ChunkedDecoder(Http1Limits.Default);
        var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>("1f;ext=1\r"u8.ToArray()));
        Assert.Equal(ChunkedStatus.NeedMoreData, decoder.Read(ref reader, out _));
        Assert.Equal(0, reader.Consumed);
    }

    [Fact]
    public void The_largest_chunk_size_is_accepted()
    {
        var decoder = new ChunkedDecoder(Http1Limits.Default);
        var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>("7FFFFFFFFFFFFFFF\r\nab"u8.ToArray()));
        Assert.Equal(ChunkedStatus.Data, decoder.Read(ref reader, out ReadOnlySequence<byte> data));
        Assert.Equal(2, data.Length);
    }

    [Fact]
    public void Reset_starts_a_new_message_and_clears_trailers()
    {
        var decoder = new ChunkedDecoder(Http1Limits.Default);
        Assert.Equal("", Decode(decoder, "0\r\nX-A: 1\r\n\r\n"));
        Assert.Single(decoder.Trailers);

        decoder.Reset();
        Assert.Empty(decoder.Trailers);
        Assert.Equal("ab", Decode(decoder, "2\r\nab\r\n0\r\n\r\n"));
    }

    public static TheoryData<string, string> MalformedBodies => new()
    {
        { "Z\r\n", nameof(Http1Error.InvalidChunkSize) },
        { "\r\n", nameof(Http1Error.InvalidChunkSize) },
        { ";ext\r\n", nameof(Http1Error.InvalidChunkSize) },
        { " 5\r\n", nameof(Http1Error.InvalidChunkSize) },
        { "-5\r\n", nameof(Http1Error.InvalidChunkSize) },
        { "0x5\r\n", nameof(Http1Error.InvalidChunkSize) },
        { "5 x\r\n", nameof(Http1Error.InvalidChunkSize) },
        { "5 \r\n", nameof(Http1Error.InvalidChunkSize) },
        { "8000000000000000\r\n", nameof(Http1Error.InvalidChunkSize) },
        { "10000000000000000\r\n", nameof(Http1Error.InvalidChunkSize) },
        { "5;a=\u0001\r\n", nameof(Http1Error.InvalidChunkExtension) },
        { "5;a=b\rc\r\n", nameof(Http1Error.InvalidChunkExtension) },
        { "5\n", nameof(Http1Error.InvalidLineEnding) },
        { "5\r\nhelloX\r\n", nameof(Http1Error.InvalidChunkTerminator) },
        { "5\r\nhello\n0\r\n\r\n", nameof(Http1Error.InvalidChunkTerminator) },
        { "5\r\nhello\r\r", nameof(Http1Error.InvalidChunkTerminator) },
        { "5\r\nhello0\r\n\r\n", nameof(Http1Error.InvalidChunkTerminator) },
        { "0\r\nX-A: 1\n\r\n", nameof(Http1Error.InvalidLineEnding) },
        { "0\r\n\n", nameof(Http1Error.InvalidLineEnding) },
        { "0\r\n X-A: 1\r\n\r\n", nameof(Http1Error.ObsoleteLineFolding) },
        { "0\r\nX-A : 1\r\n\r\n", nameof(Http1Error.InvalidHeaderName) },
        { "0\r\nX-A: 1\u0000\r\n\r\n", nameof(Http1Error.InvalidHeaderValue) },
    };

    [Theory]
    [MemberData(nameof(MalformedBodies))]
    public void Malformed_bodies_are_rejected_with_their_reason(string encoded, string error)
    {
        byte[] bytes = Segments.Latin1(encoded);
        foreach ((int cut, ReadOnlySequence<byte> sequence) in Segments.AllTwoWaySplits(bytes))
        {
            Http1Exception exception = Assert.Throws<Http1Exception>(() => DecodeAll(new ChunkedDecoder(Http1Limits.Default), sequence));
            Assert.True(error == exception.Error.ToString(), $"cut at {cut}: expected {error}, got {exception.Error}");
        }
    }

    [Fact]
    public void Chunk_line_of_exactly_the_limit_is_accepted_and_one_byte_more_is_rejected()
    {
        var limits = new Http1Limits { MaxChunkLineBytes = 16 };
        // "5;" + 12 bytes of extension + CRLF = 16 bytes.
        Assert.Equal("hello", Decode(new ChunkedDecoder(limits), "5;xxxxxxxxxxxx\r\nhello\r\n0\r\n\r\n"));

        Http1Exception exception = Assert.Throws<Http1Exception>(
            () => Decode(new ChunkedDecoder(limits), "5;xxxxxxxxxxxxx\r\nhello\r\n0\r\n\r\n"));
        Assert.Equal(Http1Error.ChunkLineTooLong, exception.Error);
    }

    [Fact]
    public void Incomplete_chunk_line_is_rejected_once_the_limit_is_reached()
    {
        var limits = new Http1Limits { MaxChunkLineBytes = 16 };
        var decoder = new ChunkedDecoder(limits);
        var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(Segments.Latin1("5;xxxxxxxxxxxxx")));
        Assert.Equal(15, reader.Remaining);
        Assert.Equal(ChunkedStatus.NeedMoreData, decoder.Read(ref reader, out _));
        Assert.Equal(0, reader.Consumed);

        Http1Exception exception = Assert.Throws<Http1Exception>(
            () => DecodeAll(decoder, new ReadOnlySequence<byte>(Segments.Latin1("5;xxxxxxxxxxxxxx"))));
        Assert.Equal(Http1Error.ChunkLineTooLong, exception.Error);
    }

    [Fact]
    public void Trailer_section_of_exactly_the_limit_is_accepted_and_one_byte_more_is_rejected()
    {
        const string Trailers = "X-A: 1\r\nX-B: 22\r\n\r\n";
        var limits = new Http1Limits { MaxTrailerBytes = Trailers.Length };
        var decoder = new ChunkedDecoder(limits);
        Assert.Equal("ab", Decode(decoder, "2\r\nab\r\n0\r\n" + Trailers));
        Assert.Equal("X-A=1|X-B=22", HeadText.Describe(decoder.Trailers));

        Http1Exception exception = Assert.Throws<Http1Exception>(
            () => Decode(new ChunkedDecoder(limits), "2\r\nab\r\n0\r\nX-A: 1\r\nX-B: 333\r\n\r\n"));
        Assert.Equal(Http1Error.TrailerSectionTooLarge, exception.Error);

        // An endless trailer line is rejected as soon as the budget is exceeded, without its end.
        exception = Assert.Throws<Http1Exception>(
            () => Decode(new ChunkedDecoder(limits), "0\r\nX-A: 1\r\nX-B: " + new string('b', 100)));
        Assert.Equal(Http1Error.TrailerSectionTooLarge, exception.Error);
        Assert.False(exception.IsHeaderSectionSize);
    }

    private static string Decode(ChunkedDecoder decoder, string encoded)
    {
        var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(Segments.Latin1(encoded)));
        var output = new List<byte>();
        ChunkedStatus status;
        while ((status = decoder.Read(ref reader, out ReadOnlySequence<byte> data)) == ChunkedStatus.Data)
        {
            output.AddRange(data.ToArray());
        }

        Assert.Equal(ChunkedStatus.Complete, status);
        return Segments.Latin1String(output.ToArray());
    }

    private static ChunkedStatus DecodeAll(ChunkedDecoder decoder, ReadOnlySequence<byte> sequence)
    {
        var reader = new SequenceReader<byte>(sequence);
        ChunkedStatus status;
        while ((status = decoder.Read(ref reader, out _)) == ChunkedStatus.Data)
        {
        }

        return status;
    }
}
