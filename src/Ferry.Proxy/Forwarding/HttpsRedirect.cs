using System.Globalization;
using System.Net;
using System.Net.Sockets;
using Ferry.Configuration;
using Microsoft.AspNetCore.Http.Features;

namespace Ferry.Forwarding;

// Listeners:<id>:RedirectToHttps: 308 to the same host on https, same path and query. The host comes from the request,
// so it is checked to be a host name or an IP literal (with an optional port, dropped): a Host such as
// "evil.example/x@site" or one with a backslash must not become a Location that browsers read another way.
internal static class HttpsRedirect
{
    // Null when the request's Host cannot be the authority of a redirect.
    public static string? Location(HttpContext context, RedirectToHttpsConfig redirect)
    {
        if (HostName(context.Request.Host.Value) is not { } host)
        {
            return null;
        }
        var raw = context.Features.Get<IHttpRequestFeature>()?.RawTarget;
        // Origin-form as the client sent it (RequestCheck validated it); an absolute-form target gives its path and query.
        var target = raw is { Length: > 0 } && raw[0] == '/'
            ? raw
            : context.Request.Path.ToUriComponent() + context.Request.QueryString.ToUriComponent();
        if (target.Length == 0)
        {
            target = "/";
        }
        return redirect.Port == RedirectToHttpsConfig.DefaultPort
            ? $"https://{host}{target}"
            : $"https://{host}:{redirect.Port.ToString(CultureInfo.InvariantCulture)}{target}";
    }

    public static void Write(HttpResponse response, string location)
    {
        // 308, not 301: the method and body of a POST are kept (RFC 9110 §15.4.9).
        response.StatusCode = StatusCodes.Status308PermanentRedirect;
        response.Headers.Location = location;
        response.ContentLength = 0;
    }

    // "example.com", "example.com:8080", "10.0.0.1", "[::1]:8080" → the host without the port; anything else → null.
    internal static string? HostName(string? value)
    {
        if (string.IsNullOrEmpty(value) || value.Length > 261)
        {
            return null;
        }
        string host;
        string? port;
        if (value[0] == '[')
        {
            var close = value.IndexOf(']');
            if (close < 0 || !IPAddress.TryParse(value.AsSpan(1, close - 1), out var address) || address.AddressFamily != AddressFamily.InterNetworkV6
                || value.AsSpan(1, close - 1).Contains('%'))
            {
                return null;
            }
            host = value[..(close + 1)];
            port = close + 1 == value.Length ? null : value[(close + 1)..] is [':', .. var rest] ? rest : "";
        }
        else
        {
            var colon = value.IndexOf(':');
            host = colon < 0 ? value : value[..colon];
            port = colon < 0 ? null : value[(colon + 1)..];
            if (!IsDnsName(host))
            {
                return null;
            }
        }
        if (port is not null && (port.Length is 0 or > 5 || !port.All(char.IsAsciiDigit) || int.Parse(port, CultureInfo.InvariantCulture) > 65535))
        {
            return null;
        }
        return host;
    }

    // Letters, digits and hyphens in dot-separated labels of 1 to 63 characters (RFC 1123 §2.1); an IPv4 address is one.
    private static bool IsDnsName(string host)
    {
        var name = host.EndsWith('.') ? host[..^1] : host;
        if (name.Length is 0 or > 253)
        {
            return false;
        }
        foreach (var label in name.Split('.'))
        {
            if (label.Length is 0 or > 63 || label[0] == '-' || label[^1] == '-' || !label.All(c => char.IsAsciiLetterOrDigit(c) || c == '-'))
            {
                return false;
            }
        }
        return true;
    }
}
