using System.Buffers;
using System.Text;
using CsCheck;
using Ferry.Http1;
using Ferry.Tests.Support;

namespace Ferry.Tests.Http1.Fuzz;

/// <summary>The chunked decoder against generated and mutated bodies: the same answer as a small reference decoder
/// written from RFC 9112 §7.1, whatever the segments and however the bytes arrive, and never an exception other
/// than Http1Exception.</summary>
public class ChunkedDecoderFuzzTests
{
    private static readonly string[] Extensions = ["", "", "", ";a=b", " ; x", ";q=\"a;b\"", ";\t", "; name = value", ";\u00ff"];
    private const string Filler = "abc\r\n0;\u00ff";
    private static readonly string[] TrailerLines = ["X-Checksum: 123", "Server-Timing: db;dur=5", "x-empty:", "X-Latin1: caf\u00e9"];

    internal sealed record Case(bool FromCorpus, int SeedIndex, (int Size, int Leading, bool Upper, int Extension)[] Chunks,
        int[] Trailers, Mutation[] Mutations, bool SmallLimits, int MaxLine, int MaxTrailer, int[] Cuts, bool NextMessage)
    {
        public byte[] Original { get; } = FromCorpus ? Corpus.ChunkedBodies[SeedIndex] : Encode(Chunks, Trailers);

        // Usually followed by the next message's bytes, as on a kept-alive connection; sometimes the input just ends,
        // which is where a decoder that waits for more must do so.
        public byte[] Bytes { get; } = [.. Mutation.Apply(FromCorpus ? Corpus.ChunkedBodies[SeedIndex] : Encode(Chunks, Trailers), Mutations),
            .. NextMessage ? "NEXT"u8 : []];

        public Http1Limits Limits => SmallLimits ? new() { MaxChunkLineBytes = MaxLine, MaxTrailerBytes = MaxTrailer } : Http1Limits.Default;

        public override string ToString() =>
            $"limits {(SmallLimits ? $"{MaxLine}/{MaxTrailer}" : "default")}, mutations [{string.Join(' ', Mutations)}], "
            + $"cuts [{string.Join(',', Cuts)}], bytes {FuzzRun.Escape(Bytes)}";

        private static byte[] Encode((int Size, int Leading, bool Upper, int Extension)[] chunks, int[] trailers)
        {
            var text = new StringBuilder();
            int fill = 0;
            foreach ((int Size, int Leading, bool Upper, int Extension) chunk in chunks.Append((0, 0, false, 0)))
            {
                text.Append('0', chunk.Leading).Append(chunk.Size.ToString(chunk.Upper ? "X" : "x"))
                    .Append(Extensions[chunk.Extension % Extensions.Length]).Append("\r\n");
                if (chunk.Size > 0)
                {
                    // Payload bytes include CR and LF so that data that looks like framing is covered.
                    for (int i = 0; i < chunk.Size; i++)
                    {
                        text.Append(Filler[fill++ % Filler.Length]);
                    }

                    text.Append("\r\n");
                }
            }

            foreach (int t in trailers)
            {
                text.Append(TrailerLines[t % TrailerLines.Length]).Append("\r\n");
            }

            return Encoding.Latin1.GetBytes(text.Append("\r\n").ToString());
        }
    }

    private static readonly Gen<Case> Cases =
        Gen.Select(
            Gen.Select(Gen.Int[0, 3].Select(n => n == 0), Gen.Int[0, Corpus.ChunkedBodies.Length - 1],
                Gen.Select(Gen.Int[1, 300], Gen.Int[0, 3], Gen.Bool, Gen.Int[0, 100]).Array[0, 5], Gen.Int[0, 100].Array[0, 3], Gen.Bool),
            Gen.Int[0, 2].SelectMany(n => Mutation.List(n == 0 ? 0 : 5)),
            Gen.Int[0, 4].Select(n => n == 0), Gen.Int[1, 40], Gen.Int[0, 60], Gen.Int[0, 100_000].Array[1, 5],
            (body, mutations, small, maxLine, maxTrailer, cuts) =>
                new Case(body.Item1, body.Item2, body.Item3, body.Item4, mutations, small, maxLine, maxTrailer, cuts, body.Item5));

    [Fact]
    public void Unmutated_bodies_decode_to_their_payload()
    {
        FuzzRun.Check(Cases, ciCount: 1000, c =>
        {
            if (c.Mutations.Length > 0 || c.SmallLimits)
            {
                return;
            }

            ChunkedOutcome outcome = ChunkedOutcome.Decode(new ReadOnlySequence<byte>(c.Bytes), c.Limits);
            Assert.Equal(ChunkedOutcome.Complete, outcome.Kind);
            Assert.Equal(c.Bytes.Length - (c.NextMessage ? 4 : 0), outcome.Consumed);
        }, c => c.ToString());
    }

    [Fact]
    public void Bodies_decode_as_the_reference_does_whatever_the_segments()
    {
        FuzzRun.Check(Cases, ciCount: 10_000, c =>
        {
            Http1Limits limits = c.Limits;
            ChunkedOutcome whole = ChunkedOutcome.Decode(new ReadOnlySequence<byte>(c.Bytes), limits);
            Assert.Equal(ReferenceChunked.Decode(c.Bytes, limits), whole);

            int[] cuts = [.. c.Cuts.Select(cut => cut % (c.Bytes.Length + 1)).Order()];
            Assert.Equal(whole, ChunkedOutcome.Decode(Segments.Split(c.Bytes, cuts), limits));

            // What has arrived when a read ends at a cut: waiting for more, or rejecting, exactly where the RFC says.
            foreach (int cut in cuts)
            {
                Assert.Equal(ReferenceChunked.Decode(c.Bytes[..cut], limits), ChunkedOutcome.Decode(new ReadOnlySequence<byte>(c.Bytes, 0, cut), limits));
            }
            Assert.Equal(whole, ChunkedOutcome.DecodeArriving(c.Bytes, cuts, limits));
        }, c => c.ToString());
    }

    [Fact]
    public void Bytes_arriving_one_at_a_time_decode_as_in_one_piece()
    {
        FuzzRun.Check(Cases, ciCount: 1000, c =>
        {
            ChunkedOutcome whole = ChunkedOutcome.Decode(new ReadOnlySequence<byte>(c.Bytes), c.Limits);
            int[] everyByte = [.. Enumerable.Range(1, Math.Max(0, c.Bytes.Length - 1))];
            Assert.Equal(whole, ChunkedOutcome.DecodeArriving(c.Bytes, everyByte, c.Limits));
        }, c => c.ToString());
    }
}

/// <summary>Payload, trailers and where decoding stopped, comparable across decoders and splits.</summary>
internal readonly record struct ChunkedOutcome(string Kind, string Payload, string Trailers, long Consumed)
{
    public const string Complete = "complete";
    public const string NeedMoreData = "need-more-data";

    public static ChunkedOutcome Decode(ReadOnlySequence<byte> bytes, Http1Limits limits) => DecodeArriving(bytes.ToArray(), [], limits, bytes);

    /// <summary>The bytes delivered in pieces cut at <paramref name="cuts"/>, as a pipe would: after each read, the
    /// decoder sees what it left unconsumed plus the new bytes, until it needs more.</summary>
    public static ChunkedOutcome DecodeArriving(byte[] bytes, int[] cuts, Http1Limits limits, ReadOnlySequence<byte>? asGiven = null)
    {
        var decoder = new ChunkedDecoder(limits);
        decoder.Reset();
        var payload = new List<byte>();
        var pending = new List<byte>();
        long consumed = 0;
        int[] ends = [.. cuts.Where(c => c > 0 && c < bytes.Length).Distinct().Order(), bytes.Length];
        int start = 0;
        try
        {
            foreach (int end in ends)
            {
                pending.AddRange(bytes[start..end]);
                start = end;
                ReadOnlySequence<byte> sequence = asGiven ?? new ReadOnlySequence<byte>(pending.ToArray());
                var reader = new SequenceReader<byte>(sequence);
                ChunkedStatus status;
                int calls = 0;
                while ((status = decoder.Read(ref reader, out ReadOnlySequence<byte> data)) == ChunkedStatus.Data)
                {
                    Assert.False(data.IsEmpty);
                    payload.AddRange(data.ToArray());
                    Assert.True(++calls < 100_000, "the decoder must make progress");
                }

                consumed += reader.Consumed;
                pending.RemoveRange(0, (int)reader.Consumed);
                if (status == ChunkedStatus.Complete)
                {
                    return new(Complete, Text(payload), Describe(decoder.Trailers), consumed);
                }
            }

            return new(NeedMoreData, Text(payload), Describe(decoder.Trailers), consumed);
        }
        catch (Http1Exception ex)
        {
            return new(ex.Error.ToString(), Text(payload), Describe(decoder.Trailers), -1);
        }
    }

    public static string Describe(IEnumerable<KeyValuePair<string, string>> trailers) => string.Join("|", trailers.Select(t => $"{t.Key}={t.Value}"));

    private static string Text(List<byte> bytes) => Encoding.Latin1.GetString([.. bytes]);
}

/// <summary>RFC 9112 §7.1 decoded in one pass over an array, with Ferry's limits and its documented leniency on
/// chunk extensions (checked for control characters, not parsed).</summary>
internal static class ReferenceChunked
{
    public static ChunkedOutcome Decode(byte[] bytes, Http1Limits limits)
    {
        var payload = new List<byte>();
        var trailers = new List<KeyValuePair<string, string>>();
        int pos = 0;
        string Fail(Http1Error error) => error.ToString();
        ChunkedOutcome Outcome(string kind, long consumed) =>
            new(kind, Encoding.Latin1.GetString([.. payload]), ChunkedOutcome.Describe(trailers), consumed);

        while (true)
        {
            // chunk-size [ chunk-ext ] CRLF, at most MaxChunkLineBytes with the LF.
            int? lineEnd = FindLine(bytes, pos, limits.MaxChunkLineBytes);
            if (lineEnd is null)
            {
                return bytes.Length - pos >= limits.MaxChunkLineBytes ? Outcome(Fail(Http1Error.ChunkLineTooLong), -1) : Outcome(ChunkedOutcome.NeedMoreData, pos);
            }

            byte[] line = bytes[pos..lineEnd.Value];
            pos = lineEnd.Value + 1;
            if (line.Length == 0 || line[^1] != (byte)'\r')
            {
                return Outcome(Fail(Http1Error.InvalidLineEnding), -1);
            }

            line = line[..^1];
            int digits = 0;
            System.Numerics.BigInteger size = 0;
            while (digits < line.Length && char.IsAsciiHexDigit((char)line[digits]))
            {
                size = (size * 16) + Convert.ToInt32(((char)line[digits]).ToString(), 16);
                digits++;
            }

            if (digits == 0 || size > long.MaxValue)
            {
                return Outcome(Fail(Http1Error.InvalidChunkSize), -1);
            }

            string rest = Encoding.Latin1.GetString(line[digits..]);
            if (rest.Length > 0)
            {
                string extensions = rest.TrimStart(' ', '\t');
                if (extensions.Length == 0 || extensions[0] != ';')
                {
                    return Outcome(Fail(Http1Error.InvalidChunkSize), -1);
                }

                if (extensions.Any(IsForbiddenInValue))
                {
                    return Outcome(Fail(Http1Error.InvalidChunkExtension), -1);
                }
            }

            if (size == 0)
            {
                break;
            }

            long available = bytes.Length - pos;
            if (available < size)
            {
                payload.AddRange(bytes[pos..]);
                return Outcome(ChunkedOutcome.NeedMoreData, bytes.Length);
            }

            payload.AddRange(bytes[pos..(pos + (int)size)]);
            pos += (int)size;
            if (bytes.Length - pos >= 2)
            {
                if (bytes[pos] != (byte)'\r' || bytes[pos + 1] != (byte)'\n')
                {
                    return Outcome(Fail(Http1Error.InvalidChunkTerminator), -1);
                }

                pos += 2;
            }
            else
            {
                return bytes.Length == pos || bytes[pos] == (byte)'\r'
                    ? Outcome(ChunkedOutcome.NeedMoreData, pos)
                    : Outcome(Fail(Http1Error.InvalidChunkTerminator), -1);
            }
        }

        // trailer-section CRLF, at most MaxTrailerBytes in all.
        int trailerStart = pos;
        while (true)
        {
            long budget = limits.MaxTrailerBytes - (pos - trailerStart);
            int? lineEnd = FindLine(bytes, pos, budget);
            if (lineEnd is null)
            {
                return bytes.Length - pos >= budget ? Outcome(Fail(Http1Error.TrailerSectionTooLarge), -1) : Outcome(ChunkedOutcome.NeedMoreData, pos);
            }

            byte[] line = bytes[pos..lineEnd.Value];
            pos = lineEnd.Value + 1;
            if (line.Length == 0 || line[^1] != (byte)'\r')
            {
                return Outcome(Fail(Http1Error.InvalidLineEnding), -1);
            }

            string field = Encoding.Latin1.GetString(line[..^1]);
            if (field.Length == 0)
            {
                return Outcome(ChunkedOutcome.Complete, pos);
            }

            if (field[0] is ' ' or '\t')
            {
                return Outcome(Fail(Http1Error.ObsoleteLineFolding), -1);
            }

            int colon = field.IndexOf(':', StringComparison.Ordinal);
            if (colon <= 0 || !field[..colon].All(IsTokenChar))
            {
                return Outcome(Fail(Http1Error.InvalidHeaderName), -1);
            }

            string value = field[(colon + 1)..].Trim(' ', '\t');
            if (value.Any(IsForbiddenInValue))
            {
                return Outcome(Fail(Http1Error.InvalidHeaderValue), -1);
            }

            trailers.Add(new(field[..colon], value));
        }
    }

    // The index of the LF ending the line at `start` when the line, LF included, fits in maxLength bytes.
    private static int? FindLine(byte[] bytes, int start, long maxLength)
    {
        for (int i = start; i < bytes.Length && i - start + 1 <= maxLength; i++)
        {
            if (bytes[i] == (byte)'\n')
            {
                return i;
            }
        }

        return null;
    }

    private static bool IsForbiddenInValue(char c) => (c < 0x20 && c != '\t') || c == 0x7F;

    private static bool IsTokenChar(char c) => char.IsAsciiLetterOrDigit(c) || "!#$%&'*+-.^_`|~".Contains(c, StringComparison.Ordinal);
}
