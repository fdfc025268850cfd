using System.Buffers;

namespace Ferry.Http1;

/// <summary>Gives a line as one span. A line almost always lies in one segment and is used in place; the rare line
/// that straddles segments is copied into a pooled array, returned on Dispose.</summary>
internal ref struct LineBuffer
{
    private byte[]? _rented;

    public ReadOnlySpan<byte> GetSpan(in ReadOnlySequence<byte> line)
    {
        if (line.IsSingleSegment)
        {
            return line.FirstSpan;
        }

        // Lines are bounded by Http1Limits before they get here, so the length fits an int.
        int length = checked((int)line.Length);
        if (_rented is null || _rented.Length < length)
        {
            Dispose();
            _rented = ArrayPool<byte>.Shared.Rent(length);
        }

        line.CopyTo(_rented);
        return _rented.AsSpan(0, length);
    }

    public void Dispose()
    {
        if (_rented is not null)
        {
            ArrayPool<byte>.Shared.Return(_rented);
            _rented = null;
        }
    }
}
