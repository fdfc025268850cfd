using System.Buffers;
using System.Text;

namespace Ferry.Tests.Support;

/// <summary>Builds multi-segment sequences, so tests see the input split the way a pipe may deliver it.</summary>
internal static class Segments
{
    public static byte[] Latin1(string text) => Encoding.Latin1.GetBytes(text);

    public static string Latin1String(byte[] bytes) => Encoding.Latin1.GetString(bytes);

    /// <summary>The bytes cut at the given ascending offsets; a cut at 0 or at the end makes an empty segment.</summary>
    public static ReadOnlySequence<byte> Split(byte[] bytes, params int[] cuts)
    {
        var boundaries = new List<int> { 0 };
        boundaries.AddRange(cuts);
        boundaries.Add(bytes.Length);

        Segment? first = null;
        Segment? last = null;
        for (int i = 0; i < boundaries.Count - 1; i++)
        {
            // Each segment gets its own array so a read past a segment end cannot silently see the next bytes.
            byte[] part = bytes[boundaries[i]..boundaries[i + 1]];
            var segment = new Segment(part, last?.RunningIndex + last?.Memory.Length ?? 0);
            if (last is null)
            {
                first = segment;
            }
            else
            {
                last.SetNext(segment);
            }

            last = segment;
        }

        return new ReadOnlySequence<byte>(first!, 0, last!, last!.Memory.Length);
    }

    /// <summary>Every way to cut the bytes into two segments, including an empty first or last one.</summary>
    public static IEnumerable<(int Cut, ReadOnlySequence<byte> Sequence)> AllTwoWaySplits(byte[] bytes)
    {
        for (int cut = 0; cut <= bytes.Length; cut++)
        {
            yield return (cut, Split(bytes, cut));
        }
    }

    private sealed class Segment : ReadOnlySequenceSegment<byte>
    {
        public Segment(ReadOnlyMemory<byte> memory, long runningIndex)
        {
            Memory = memory;
            RunningIndex = runningIndex;
        }

        public void SetNext(Segment next) => Next = next;
    }
}
