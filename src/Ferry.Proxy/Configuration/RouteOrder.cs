namespace Ferry.Configuration;

/// <summary>
/// The order in which routes are tried: lower Order first; among equal Orders the more specific route first
/// (an exact path, then the longer path prefix, then a route with hosts, then one with methods), and finally by id so
/// that the order never depends on how the configuration was enumerated.
/// </summary>
internal static class RouteOrder
{
    public static int Compare(RouteConfig a, RouteConfig b)
    {
        var c = a.Order.CompareTo(b.Order);
        if (c != 0)
        {
            return c;
        }

        c = (b.Match.Path is not null).CompareTo(a.Match.Path is not null);
        if (c != 0)
        {
            return c;
        }

        // "/items/new" is more specific than "/items/{id}", which would also match it.
        c = (a.Match.Template is not null).CompareTo(b.Match.Template is not null);
        if (c != 0)
        {
            return c;
        }

        c = (b.Match.PathPrefix?.Length ?? 0).CompareTo(a.Match.PathPrefix?.Length ?? 0);
        if (c != 0)
        {
            return c;
        }

        c = (b.Match.Hosts.Count > 0).CompareTo(a.Match.Hosts.Count > 0);
        if (c != 0)
        {
            return c;
        }

        c = (b.Match.Methods.Count > 0).CompareTo(a.Match.Methods.Count > 0);
        return c != 0 ? c : StringComparer.OrdinalIgnoreCase.Compare(a.RouteId, b.RouteId);
    }
}
