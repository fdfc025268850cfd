using Ferry.Configuration;

namespace Ferry.Doctor;

internal sealed partial class NginxImporter
{
    private List<string> ImportListens(NginxDirective server)
    {
        var addresses = new List<string>();
        var listens = server.Children("listen").ToList();
        if (listens.Count == 0)
        {
            // nginx's default: listen *:80 (when run as root).
            addresses.Add(AddListener("*:80"));
            return addresses;
        }

        foreach (var listen in listens)
        {
            var text = listen.Arg(0);
            if (text.StartsWith("unix:", StringComparison.Ordinal))
            {
                Note(listen, $"\"{listen}\": unix socket listeners are not supported; not translated");
                continue;
            }

            var parameters = listen.Args.Skip(1).ToList();
            if (parameters.Contains("ssl") || parameters.Contains("quic"))
            {
                Note(listen, $"\"{listen}\": TLS is terminated by nginx here; Ferry's configuration has no TLS yet, so this listener is not translated");
                continue;
            }

            var address = text.All(char.IsAsciiDigit) ? $"*:{text}"
                : text.StartsWith('[') || text.Contains(':') ? text
                : $"{text}:80";
            if (!ListenAddress.TryParse(address, out _))
            {
                Note(listen, $"\"{listen}\": Ferry listens on IP addresses only ({ListenAddress.Expected}); not translated");
                continue;
            }

            foreach (var parameter in parameters.Where(p => p is not ("default_server" or "default" or "http2" or "reuseport") && !p.StartsWith("backlog=", StringComparison.Ordinal)))
            {
                Note(listen, $"listen parameter \"{parameter}\" not translated");
            }

            addresses.Add(AddListener(address));
        }

        return addresses;
    }

    private string AddListener(string address)
    {
        if (!_listeners.ContainsKey(address))
        {
            var id = address.Replace("*", "all", StringComparison.Ordinal).Replace(':', '-').Replace("[", "", StringComparison.Ordinal).Replace("]", "", StringComparison.Ordinal);
            _listeners[address] = id;
        }

        return address;
    }

    /// <summary>
    /// nginx binds a wildcard address once per port and serves the port's specific addresses through it (unless
    /// <c>bind</c>); Ferry would refuse the overlapping pair, so the specific IPv4 addresses go.
    /// </summary>
    private void DropShadowedListeners()
    {
        foreach (var address in _listeners.Keys.ToList())
        {
            if (!address.StartsWith('*') && !address.StartsWith('[')
                && ListenAddress.TryParse(address, out var endPoint) && _listeners.ContainsKey($"*:{endPoint.Port}"))
            {
                _listeners.Remove(address);
            }
        }
    }

    /// <summary>Hosts of the routes and their order: exact names before wildcards before the default server, as nginx chooses.</summary>
    private (List<string> Hosts, int Order) ImportServerNames(NginxDirective server)
    {
        var hosts = new List<string>();
        var wildcard = false;
        foreach (var serverName in server.Children("server_name"))
        {
            foreach (var name in serverName.Args)
            {
                if (name is "" or "_" || name.StartsWith('$'))
                {
                    continue;
                }

                if (name.StartsWith('~') || name.EndsWith(".*", StringComparison.Ordinal) || name.Contains(':'))
                {
                    Note(serverName, $"server_name \"{name}\" (regular expression, trailing wildcard or port) not translated");
                    continue;
                }

                var lower = name.ToLowerInvariant();
                if (lower.StartsWith('.'))
                {
                    // ".example.com" is nginx's shorthand for "example.com *.example.com".
                    hosts.Add(lower[1..]);
                    hosts.Add("*" + lower);
                    wildcard = true;
                }
                else
                {
                    hosts.Add(lower);
                    wildcard |= lower.StartsWith("*.", StringComparison.Ordinal);
                }
            }
        }

        return (hosts.Distinct().ToList(), hosts.Count == 0 ? 2 : wildcard ? 1 : 0);
    }
}
