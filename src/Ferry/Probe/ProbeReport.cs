using System.Text.Json;
using System.Text.Json.Serialization;
using System.Text.Json.Serialization.Metadata;

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
    // Source-generated so that a Native AOT build can write and read it. The encoder cannot be given to the generator,
    // so the generated context is copied into options that carry it: recommendations hold quotes and apostrophes, and
    // the output is for terminals and scripts, not HTML.
    private static readonly JsonSerializerOptions JsonOptions = new(ProbeJsonContext.Default.Options)
    {
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    };

    private static JsonTypeInfo<ProbeReport> TypeInfo => (JsonTypeInfo<ProbeReport>)JsonOptions.GetTypeInfo(typeof(ProbeReport));

    public string ToJson() => JsonSerializer.Serialize(this, TypeInfo);

    public static ProbeReport FromJson(string json) => JsonSerializer.Deserialize(json, TypeInfo)!;
}

/// <summary>Enum values as the report spells them: "close-observed", "not-reached".</summary>
internal sealed class KebabCaseEnumConverter<TEnum>() : JsonStringEnumConverter<TEnum>(JsonNamingPolicy.KebabCaseLower)
    where TEnum : struct, Enum;

[JsonSourceGenerationOptions(
    PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase,
    WriteIndented = true,
    Converters = [typeof(KebabCaseEnumConverter<IdleMethod>), typeof(KebabCaseEnumConverter<LimitEnd>), typeof(KebabCaseEnumConverter<CloseKind>)])]
[JsonSerializable(typeof(ProbeReport))]
internal sealed partial class ProbeJsonContext : JsonSerializerContext;
