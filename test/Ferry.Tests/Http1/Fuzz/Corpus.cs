namespace Ferry.Tests.Http1.Fuzz;

/// <summary>Real responses written down by hand (Http1/Fuzz/Corpus): the seeds every mutation starts from.</summary>
internal static class Corpus
{
    private static readonly string Directory = Path.Combine(AppContext.BaseDirectory, "Http1", "Fuzz", "Corpus");

    public static byte[][] Heads { get; } = Load("*.head");

    public static byte[][] ChunkedBodies { get; } = Load("*.chunked");

    private static byte[][] Load(string pattern)
    {
        string[] files = System.IO.Directory.GetFiles(Directory, pattern);
        Array.Sort(files, StringComparer.Ordinal);
        if (files.Length == 0)
        {
            throw new InvalidOperationException($"No {pattern} seeds in {Directory}.");
        }

        return [.. files.Select(File.ReadAllBytes)];
    }
}
