using System.Globalization;
using System.Text;
using CsCheck;

namespace Ferry.Tests.Http1.Fuzz;

/// <summary>
/// Runs a property over generated cases, deterministically: case i is generated from seed + i, so a CI run always
/// tests the same cases and a failure names the one seed that reproduces it (FERRY_FUZZ_SEED=that,
/// FERRY_FUZZ_ITERATIONS=1). FERRY_FUZZ_ITERATIONS scales every property's count; see docs/fuzzing.md.
/// </summary>
internal static class FuzzRun
{
    private const ulong DefaultSeed = 0x5EED_F022_2026_1202;

    public static ulong Seed =>
        Environment.GetEnvironmentVariable("FERRY_FUZZ_SEED") is { Length: > 0 } text
            ? ulong.Parse(text.StartsWith("0x", StringComparison.OrdinalIgnoreCase) ? text[2..] : text,
                text.StartsWith("0x", StringComparison.OrdinalIgnoreCase) ? NumberStyles.HexNumber : NumberStyles.None,
                CultureInfo.InvariantCulture)
            : DefaultSeed;

    /// <summary>The CI count, or FERRY_FUZZ_ITERATIONS when set.</summary>
    public static int Iterations(int ciCount) =>
        Environment.GetEnvironmentVariable("FERRY_FUZZ_ITERATIONS") is { Length: > 0 } text
            ? int.Parse(text, CultureInfo.InvariantCulture)
            : ciCount;

    public static void Check<T>(Gen<T> gen, int ciCount, Action<T> property, Func<T, string> describe)
    {
        ulong seed = Seed;
        int count = Iterations(ciCount);
        for (int i = 0; i < count; i++)
        {
            ulong caseSeed = unchecked(seed + (ulong)i);
            T value = gen.Generate(new PCG(1, caseSeed), null, out _);
            try
            {
                property(value);
            }
            catch (Exception ex)
            {
                throw new FuzzFailure($"case seed 0x{caseSeed:X} (FERRY_FUZZ_SEED=0x{caseSeed:X} FERRY_FUZZ_ITERATIONS=1 reproduces it)\n"
                    + $"input: {describe(value)}\n{ex.GetType().Name}: {ex.Message}", ex);
            }
        }
    }

    /// <summary>Bytes as a C#-like literal, so a failing input can be pasted into a regression test.</summary>
    public static string Escape(ReadOnlySpan<byte> bytes)
    {
        var text = new StringBuilder("\"");
        foreach (byte b in bytes)
        {
            text.Append(b switch
            {
                (byte)'\r' => "\\r",
                (byte)'\n' => "\\n",
                (byte)'\t' => "\\t",
                (byte)'"' => "\\\"",
                (byte)'\\' => "\\\\",
                >= 0x20 and < 0x7F => ((char)b).ToString(),
                _ => $"\\x{b:X2}",
            });
        }

        return text.Append('"').ToString();
    }

    private sealed class FuzzFailure(string message, Exception inner) : Exception(message, inner);
}
