using System.Collections;
using System.Security.Cryptography;
using System.Text;
using Microsoft.Extensions.Configuration;

namespace Ferry.Configuration;

/// <summary>
/// The version /status shows: the first 12 hex digits of SHA-256 over the effective key/values (the file merged with
/// environment and command-line overrides), so that an override changes it and reformatting the file does not.
/// Keys are compared case-insensitively like IConfiguration does, sorted ordinally so that the order of the file and of
/// the layers does not matter; sections without a value (the parents of other keys) are left out.
/// </summary>
internal static class ConfigVersion
{
    public static string Compute(IConfiguration configuration)
    {
        var pairs = configuration.AsEnumerable()
            .Where(p => p.Value is not null)
            .Select(p => (Key: p.Key.ToUpperInvariant(), p.Value))
            .OrderBy(p => p.Key, StringComparer.Ordinal);
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        foreach (var (key, value) in pairs)
        {
            // Length-prefixed, so that no key or value can be shifted into its neighbour and hash the same.
            Append(hash, key);
            Append(hash, value!);
        }
        return Convert.ToHexStringLower(hash.GetHashAndReset())[..12];
    }

    private static void Append(IncrementalHash hash, string text)
    {
        var bytes = Encoding.UTF8.GetBytes(text);
        Span<byte> length = stackalloc byte[4];
        System.Buffers.Binary.BinaryPrimitives.WriteInt32LittleEndian(length, bytes.Length);
        hash.AppendData(length);
        hash.AppendData(bytes);
    }
}

/// <summary>Where `ferry run` reads its configuration from, kept so that a reload builds the same layers again.</summary>
internal sealed record ConfigSource(string FilePath, IReadOnlyList<string> Arguments, IDictionary Environment)
{
    public IConfigurationRoot Build() => FerryConfigLoader.Build(FilePath, Arguments, Environment);
}
