using System.Text.Json;

namespace Ferry.Doctor;

/// <summary>Reads the backend idle timeout from `ferry probe --json` output: its top-level <c>idleTimeoutSeconds</c>.</summary>
internal static class ProbeFile
{
    /// <summary>The measured idle timeout, null when the probe did not find one. Throws <see cref="InvalidDataException"/>
    /// when the file is not JSON or the field is not a number.</summary>
    public static TimeSpan? ReadIdleTimeout(string path)
    {
        using var stream = File.OpenRead(path);
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(stream);
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path}: not JSON: {e.Message}", e);
        }

        using (document)
        {
            if (document.RootElement.ValueKind != JsonValueKind.Object
                || !document.RootElement.TryGetProperty("idleTimeoutSeconds", out var value)
                || value.ValueKind == JsonValueKind.Null)
            {
                return null;
            }

            if (value.ValueKind != JsonValueKind.Number || !value.TryGetDouble(out var seconds) || seconds < 0)
            {
                throw new InvalidDataException($"{path}: idleTimeoutSeconds is not a non-negative number");
            }

            return TimeSpan.FromSeconds(seconds);
        }
    }
}
