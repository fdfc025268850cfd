namespace Ferry.Configuration;

/// <summary>
/// A route sends matching requests to a cluster. <see cref="PathRemovePrefix"/> is the value of the route's own
/// PathRemovePrefix key, kept for configurations written before Transforms; the forwarder only reads
/// <see cref="Transforms"/>, where the loader puts it as the first path rule.
/// </summary>
internal sealed record RouteConfig(string RouteId, string ClusterId, int Order, RouteMatchConfig Match, string? PathRemovePrefix)
{
    public static IReadOnlyList<string> DefaultUpgrades { get; } = ["websocket"];

    // Upgrade protocols tunnelled after a 101 (RFC 9110 §7.8). Inside a tunnel nothing is routed or logged per request,
    // so only WebSocket is by default: an "Upgrade: h2c" would otherwise carry any number of requests past the routes.
    // Other Upgrade headers are removed and the request is forwarded as an ordinary one.
    public IReadOnlyList<string> Upgrades { get; init; } = DefaultUpgrades;

    public TransformsConfig Transforms { get; init; } = TransformsConfig.None;

    // Largest request body forwarded, in bytes; 0 means no limit (nginx's client_max_body_size 0).
    public long MaxRequestBodySize { get; init; } = RequestLimitsConfig.DefaultMaxRequestBodySize;

    // A name in FerryConfig.RateLimiterPolicies (YARP's route key); null: no rate limit, and no cost per request.
    public string? RateLimiterPolicy { get; init; }
}

/// <summary>
/// Every set criterion must match. Hosts are lower-case, without port, optionally with a leading "*." wildcard.
/// <see cref="Path"/> is an exact, case-insensitive path; <see cref="PathPrefix"/> matches on a segment boundary and has
/// no trailing '/' (except the root "/"). At most one of the two is set. Empty lists mean "any". A Path with "{name}"
/// segments is a template (<see cref="Template"/>) whose values PathPattern transforms use.
/// </summary>
internal sealed record RouteMatchConfig(IReadOnlyList<string> Hosts, string? Path, string? PathPrefix, IReadOnlyList<string> Methods)
{
    public Routing.PathTemplate? Template { get; init; }

    /// <summary>Matches every request: what a route without a Match section gets.</summary>
    public static RouteMatchConfig Default { get; } = new([], Path: null, PathPrefix: null, []);
}
