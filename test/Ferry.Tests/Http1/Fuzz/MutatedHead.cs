using CsCheck;
using Ferry.Http1;

namespace Ferry.Tests.Http1.Fuzz;

/// <summary>A real head from the corpus, mutated, with the limits to parse it under and where to cut it into
/// segments; the response-head and framing fuzz tests both draw from <see cref="Cases"/>.</summary>
internal sealed record MutatedHead(int SeedIndex, Mutation[] Mutations, bool SmallLimits, int MaxBytes, int MaxCount, int[] Cuts)
{
    public static Gen<MutatedHead> Cases { get; } =
        Gen.Select(Gen.Int[0, Corpus.Heads.Length - 1], Mutation.List(6), Gen.Int[0, 4].Select(n => n == 0),
            Gen.Int[1, 400], Gen.Int[0, 12], Gen.Int[0, 10_000].Array[1, 4],
            (seed, mutations, small, maxBytes, maxCount, cuts) => new MutatedHead(seed, mutations, small, maxBytes, maxCount, cuts));

    public byte[] Bytes { get; } = Mutation.Apply(Corpus.Heads[SeedIndex], Mutations);

    public Http1Limits Limits => SmallLimits ? new() { MaxResponseHeaderBytes = MaxBytes, MaxResponseHeaderCount = MaxCount } : Http1Limits.Default;

    public override string ToString() =>
        $"seed #{SeedIndex}, mutations [{string.Join(' ', Mutations)}], limits {(SmallLimits ? $"{MaxBytes}/{MaxCount}" : "default")}, "
        + $"cuts [{string.Join(',', Cuts)}], bytes {FuzzRun.Escape(Bytes)}";
}
