namespace Ferry.Configuration;

/// <summary>
/// The outcome of loading: every error and warning found, each prefixed with its configuration path.
/// <see cref="Config"/> is null when there is any error.
/// </summary>
internal sealed record ConfigLoadResult(FerryConfig? Config, IReadOnlyList<string> Errors, IReadOnlyList<string> Warnings)
{
    public bool IsValid => Errors.Count == 0 && Config is not null;
}
