using System.Buffers;
using CsCheck;
using Ferry.Http1;
using Ferry.Tests.Support;

namespace Ferry.Tests.Http1.Fuzz;

/// <summary>The response-head parser against mutated real heads: it only ever rejects with Http1Exception, and the
/// way the bytes are split into segments or arrive over time never changes the result.</summary>
public class ResponseHeadFuzzTests
{
    [Fact]
    public void Seeds_parse_as_they_are()
    {
        foreach (byte[] seed in Corpus.Heads)
        {
            HeadOutcome outcome = HeadOutcome.Parse(new ReadOnlySequence<byte>(seed), Http1Limits.Default, new ResponseHead());
            Assert.True(outcome.Kind == HeadOutcome.Parsed, FuzzRun.Escape(seed) + " → " + outcome);
            Assert.Equal(seed.Length, outcome.Consumed);
        }
    }

    [Fact]
    public void Mutated_heads_parse_the_same_whatever_the_segments()
    {
        var reused = new ResponseHead();
        FuzzRun.Check(MutatedHead.Cases, ciCount: 5000, c =>
        {
            byte[] bytes = c.Bytes;
            Http1Limits limits = c.Limits;
            // Throws anything but Http1Exception through to FuzzRun: that is the first property.
            HeadOutcome whole = HeadOutcome.Parse(new ReadOnlySequence<byte>(bytes), limits, new ResponseHead());

            // The same bytes cut into segments, parsed into a head reused from earlier cases (as a connection does).
            int[] cuts = [.. c.Cuts.Select(cut => cut % (bytes.Length + 1)).Order()];
            Assert.Equal(whole, HeadOutcome.Parse(Segments.Split(bytes, cuts), limits, reused));

            // Resumable parsing: the bytes received so far are parsed again after every read. A prefix either needs
            // more bytes (and consumes nothing) or gives exactly the answer the whole input gives.
            for (int length = 0; length <= bytes.Length; length++)
            {
                HeadOutcome prefix = HeadOutcome.Parse(new ReadOnlySequence<byte>(bytes, 0, length), limits, reused);
                if (prefix.Kind != HeadOutcome.NeedMoreData)
                {
                    Assert.Equal(whole, prefix);
                }
                else
                {
                    Assert.True(whole.Kind == HeadOutcome.NeedMoreData || whole.Consumed > length || whole.Kind == HeadOutcome.Rejected,
                        $"prefix of {length} bytes needs more data, the whole input gave {whole}");
                }
            }
        }, c => c.ToString());
    }
}

/// <summary>What one TryParse call made of some bytes, comparable across calls.</summary>
internal readonly record struct HeadOutcome(string Kind, string Detail, long Consumed)
{
    public const string Parsed = "parsed";
    public const string NeedMoreData = "need-more-data";
    public const string Rejected = "rejected";

    public static HeadOutcome Parse(ReadOnlySequence<byte> bytes, Http1Limits limits, ResponseHead head)
    {
        var parser = new ResponseHeadParser(limits);
        var reader = new SequenceReader<byte>(bytes);
        try
        {
            if (!parser.TryParse(ref reader, head))
            {
                Assert.Equal(0, reader.Consumed);
                return new(NeedMoreData, "", 0);
            }

            return new(Parsed, Describe(head), reader.Consumed);
        }
        catch (Http1Exception ex)
        {
            return new(Rejected, ex.Error.ToString(), 0);
        }
    }

    // Everything the parser exposes, so that two parses agree only when every property does.
    public static string Describe(ResponseHead h) =>
        $"{h.MinorVersion} {h.StatusCode} [{h.ReasonPhrase}] {string.Join("|", h.Headers.Select(f => $"{f.Key}={f.Value}"))} "
        + $"cl={h.HasContentLength}/{h.ContentLength}/{h.ContentLengthError} te={h.HasTransferEncoding}/{h.IsChunked} "
        + $"conn={h.ConnectionClose}/{h.ConnectionKeepAlive}/{h.ConnectionUpgrade}/{string.Join(",", h.ConnectionTokens)} "
        + $"ka={h.KeepAliveTimeoutSeconds}/{h.KeepAliveMax}";
}
