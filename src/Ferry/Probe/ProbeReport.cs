using System.Text.Json;
using System.Text.Json.Serialization;

namespace Ferry.Probe;

/// <summary>What one request with a given HTTP version got back.</summary>
internal sealed record ProtocolAnswer(
    string Request,
    string? Response,
    int? Status,
    bool KeepAlive,
    string? Connection,
    string? KeepAliveHeader);

/// <summary>What the backend says about its own limits, in Keep-Alive and Connection headers.</summary>
internal sealed record Announcements(
    int? KeepAliveTimeoutSeconds,
    int? KeepAliveMax,
    bool? LastRequestConnectionClose);

/// <summary>How the idle timeout was found.</summary>
internal enum IdleMethod
{
    /// <summary>The backend closed idle connections by itself; the time from the end of the response to the close was measured.</summary>
    CloseObserved,

    /// <summary>The backend never closed actively, but requests on connections idle for longer than the value failed.</summary>
    ReuseFailed,

    /// <summary>Connections stayed usable up to the limit of the search.</summary>
    NotReached,

    /// <summary>The backend does not keep connections alive.</summary>
    NotApplicable,
}

/// <summary>How a connection reached its request limit.</summary>
internal enum LimitEnd
{
    /// <summary>The last response carried "Connection: close".</summary>
    Announced,

    /// <summary>The connection closed after a response that did not say so.</summary>
    Silent,

    /// <summary>No limit up to the bound of the search.</summary>
    NotReached,

    /// <summary>The backend does not keep connections alive.</summary>
    NotApplicable,
}

internal sealed record ProbeReport(
    string Target,
    string? Server,
    ProtocolAnswer Http11,
    ProtocolAnswer Http10,
    bool KeepsAlive,
    Announcements Announces,
    double? IdleTimeoutSeconds,
    double? IdleTimeoutUpperSeconds,
    IdleMethod IdleMethod,
    CloseKind CloseKind,
    int? MaxRequests,
    LimitEnd MaxRequestsEnd,
    CloseKind MaxRequestsCloseKind,
    double MaxIdleSearchedSeconds,
    int MaxRequestsSearched,
    double DurationSeconds,
    ProbeRecommendations Recommendations)
{
    private static readonly JsonSerializerOptions JsonOptions = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        WriteIndented = true,
        // Recommendations hold quotes and apostrophes; the output is for terminals and scripts, not HTML.
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.KebabCaseLower) },
    };

    public string ToJson() => JsonSerializer.Serialize(this, JsonOptions);

    public static ProbeReport FromJson(string json) => JsonSerializer.Deserialize<ProbeReport>(json, JsonOptions)!;
}
