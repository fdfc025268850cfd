namespace Ferry.Configuration;

/// <summary>
/// A route sends matching requests to a cluster. <see cref="PathRemovePrefix"/> is YARP's transform of the same name:
/// the prefix is stripped from the path before forwarding.
/// </summary>
internal sealed record RouteConfig(string RouteId, string ClusterId, int Order, RouteMatchConfig Match, string? PathRemovePrefix)
{
    public static IReadOnlyList<string> DefaultUpgrades { get; } = ["websocket"];

    // Upgrade protocols tunnelled after a 101 (RFC 9110 §7.8). Inside a tunnel nothing is routed or logged per request,
    // so only WebSocket is by default: an "Upgrade: h2c" would otherwise carry any number of requests past the routes.
    // Other Upgrade headers are removed and the request is forwarded as an ordinary one.
    public IReadOnlyList<string> Upgrades { get; init; } = DefaultUpgrades;
}

/// <summary>
/// Every set criterion must match. Hosts are lower-case, without port, optionally with a leading "*." wildcard.
/// <see cref="Path"/> is an exact, case-insensitive path; <see cref="PathPrefix"/> matches on a segment boundary and has
/// no trailing '/' (except the root "/"). At most one of the two is set. Empty lists mean "any".
/// </summary>
internal sealed record RouteMatchConfig(IReadOnlyList<string> Hosts, string? Path, string? PathPrefix, IReadOnlyList<string> Methods)
{
    /// <summary>Matches every request: what a route without a Match section gets.</summary>
    public static RouteMatchConfig Default { get; } = new([], Path: null, PathPrefix: null, []);
}
