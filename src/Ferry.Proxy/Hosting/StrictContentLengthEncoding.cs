using System.Text;

namespace Ferry.Hosting;

/// <summary>
/// Latin-1 for the digits of a Content-Length and a non-digit for any other byte. With a header encoding selector set,
/// Kestrel decodes Content-Length with it and parses the result as NumberStyles.Integer, which takes "+5" or "-0";
/// its own byte parser takes a sign too. A front end that reads "+5" differently would disagree with Ferry on where the
/// body ends, so only 1*DIGIT (RFC 9110 §8.6) may decode to a number and Kestrel answers anything else with 400.
/// </summary>
internal sealed class StrictContentLengthEncoding : Encoding
{
    public static StrictContentLengthEncoding Instance { get; } = new();

    // Never a digit, a sign or white space: long.TryParse fails on it.
    private const char NotADigit = 'x';

    public override int GetByteCount(char[] chars, int index, int count) => count;

    public override int GetBytes(char[] chars, int charIndex, int charCount, byte[] bytes, int byteIndex) =>
        Latin1.GetBytes(chars, charIndex, charCount, bytes, byteIndex);

    public override int GetCharCount(byte[] bytes, int index, int count) => count;

    public override int GetChars(byte[] bytes, int byteIndex, int byteCount, char[] chars, int charIndex) =>
        GetChars(bytes.AsSpan(byteIndex, byteCount), chars.AsSpan(charIndex));

    public override int GetCharCount(ReadOnlySpan<byte> bytes) => bytes.Length;

    public override int GetChars(ReadOnlySpan<byte> bytes, Span<char> chars)
    {
        if (chars.Length < bytes.Length)
        {
            throw new ArgumentException("destination too small", nameof(chars));
        }
        for (var i = 0; i < bytes.Length; i++)
        {
            chars[i] = bytes[i] is >= (byte)'0' and <= (byte)'9' ? (char)bytes[i] : NotADigit;
        }
        return bytes.Length;
    }

    public override int GetMaxByteCount(int charCount) => charCount;

    public override int GetMaxCharCount(int byteCount) => byteCount;
}
