using System.Buffers;
using Ferry.Http1;
using Ferry.Tests.Support;

namespace Ferry.Tests.Http1;

// Heads and trailer sections written as text, for the parser, framing and chunked tests.
internal static class HeadText
{
    // A whole response head, which must parse and be consumed to its end.
    public static ResponseHead Parse(string text, Http1Limits? limits = null)
    {
        var parser = new ResponseHeadParser(limits ?? Http1Limits.Default);
        var head = new ResponseHead();
        var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(Segments.Latin1(text)));
        Assert.True(parser.TryParse(ref reader, head));
        Assert.True(reader.End);
        return head;
    }

    public static string Describe(List<KeyValuePair<string, string>> fields) =>
        string.Join("|", fields.Select(f => $"{f.Key}={f.Value}"));
}
