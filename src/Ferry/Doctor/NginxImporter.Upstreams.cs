using System.Globalization;

namespace Ferry.Doctor;

internal sealed partial class NginxImporter
{
    private string? ClusterFor(ProxyPassTarget target, NginxDirective proxyPass, Dictionary<string, NginxDirective> upstreams)
    {
        if (target.Port is null && upstreams.TryGetValue(target.Name, out var upstream))
        {
            var id = upstream.Arg(0);
            if (!_clusters.ContainsKey(id))
            {
                _clusters[id] = ImportUpstream(upstream, target.Scheme);
            }

            if (_clusters[id] is not { } cluster)
            {
                Note(proxyPass, $"\"{proxyPass}\" not translated: upstream \"{id}\" has no server Ferry can use");
                return null;
            }

            if (cluster.Scheme != target.Scheme)
            {
                Note(proxyPass, $"\"{proxyPass}\" not translated: upstream \"{id}\" is also reached with {cluster.Scheme}://, and the scheme of a " +
                                "Ferry destination is part of its address; give the other scheme its own upstream block");
                return null;
            }

            return id;
        }

        // A literal host's port defaults to the scheme's; an upstream block's servers default to 80 whatever the scheme.
        var port = target.Port ?? (target.Scheme == "https" ? 443 : 80);
        var literalId = $"{target.Name.Trim('[', ']').Replace(':', '-')}-{port}{(target.Scheme == "https" ? "-tls" : "")}";
        if (!_clusters.ContainsKey(literalId))
        {
            var literal = new Cluster(literalId) { Scheme = target.Scheme };
            literal.Destinations.Add(("1", $"{target.Scheme}://{target.Name}:{port}", 1, false));
            _clusters[literalId] = literal;
        }

        return literalId;
    }

    private Cluster? ImportUpstream(NginxDirective upstream, string scheme)
    {
        var cluster = new Cluster(upstream.Arg(0)) { Scheme = scheme, Named = true };
        var n = 0;
        foreach (var directive in upstream.Block!)
        {
            switch (directive.Name)
            {
                case "server":
                    var server = NginxUpstreamServer.Parse(directive);
                    n++;
                    if (server.Address.StartsWith("unix:", StringComparison.Ordinal))
                    {
                        Note(directive, $"\"{directive}\": unix socket destinations are not supported; not translated");
                    }
                    else if (server.Down)
                    {
                        Note(directive, $"\"{directive}\" is marked down; not translated");
                    }
                    else
                    {
                        if (server.Weight > 1000)
                        {
                            Note(directive, $"weight={server.Weight} lowered to Ferry's maximum, 1000");
                        }

                        var address = server.Address.Contains("]:", StringComparison.Ordinal) || (!server.Address.StartsWith('[') && server.Address.Contains(':'))
                            ? server.Address
                            : $"{server.Address}:80";
                        cluster.Destinations.Add(($"{n}", $"{scheme}://{address}", Math.Clamp(server.Weight, 1, 1000), server.Backup));
                        var failure = directive.Args.Skip(1).Where(a => a.StartsWith("max_fails=", StringComparison.Ordinal) || a.StartsWith("fail_timeout=", StringComparison.Ordinal)).ToList();
                        if (failure.Count > 0)
                        {
                            Note(directive, $"{string.Join(' ', failure)} not translated: Ferry's passive health never ejects every destination (panic) and ignores keep-alive races");
                        }

                        if (server.MaxConns is not null || server.OtherParameters.Count > 0)
                        {
                            var rest = directive.Args.Skip(1).Where(a => a.StartsWith("max_conns=", StringComparison.Ordinal) || server.OtherParameters.Contains(a));
                            Note(directive, $"server parameters not translated: {string.Join(' ', rest)}");
                        }
                    }

                    break;
                case "keepalive_timeout" when NginxTime.TryParse(directive.Arg(0), out var idle):
                    cluster.KeepAlive["IdleTimeout"] = NginxTime.Format(idle);
                    Note(directive, $"keepalive_timeout {directive.Arg(0)} kept as KeepAlive:IdleTimeout; Ferry's default \"auto\" learns the destination's own timeout and stays below it");
                    break;
                case "keepalive_requests" when int.TryParse(directive.Arg(0), NumberStyles.None, CultureInfo.InvariantCulture, out var requests):
                    cluster.KeepAlive["MaxRequests"] = requests.ToString(CultureInfo.InvariantCulture);
                    break;
                case "keepalive_time" when NginxTime.TryParse(directive.Arg(0), out var lifetime):
                    cluster.KeepAlive["MaxLifetime"] = NginxTime.Format(lifetime);
                    break;
                case "keepalive":
                    Note(directive, $"\"{directive}\" not translated on purpose: nginx's keepalive caches idle connections per worker for the " +
                                    "whole upstream; Ferry keeps what the recent peak of concurrent requests needs, at least KeepAlive:MaxIdle (default 1024), per destination");
                    break;
                case "least_conn":
                    cluster.Policy = "LeastRequests";
                    break;
                case "random":
                    cluster.Policy = directive.Args.Contains("two") ? "PowerOfTwoChoices" : "Random";
                    break;
                default:
                    Note(directive, $"\"{directive}\" in upstream \"{cluster.Id}\" not translated");
                    break;
            }
        }

        if (cluster.Destinations.Count == 0 || cluster.Destinations.All(d => d.Backup))
        {
            Note(upstream, $"upstream \"{cluster.Id}\" has no usable primary server; not translated");
            return null;
        }

        return cluster;
    }

    /// <summary>
    /// Timeouts and the Host header are per location in nginx, per cluster in Ferry: the first location using the
    /// cluster decides, and a location that disagrees is noted.
    /// </summary>
    private void ApplyLocationSettings(Cluster cluster, IReadOnlyList<NginxDirective> scope, NginxDirective location)
    {
        var timeouts = new SortedDictionary<string, string>(StringComparer.Ordinal);
        foreach (var (directive, keys) in new[]
                 {
                     ("proxy_connect_timeout", new[] { "Connect" }),
                     ("proxy_send_timeout", ["SendRequest"]),
                     ("proxy_read_timeout", ["ResponseHead", "BodyInactivity"]),
                 })
        {
            var effective = scope.Select(level => level.Child(directive)).LastOrDefault(d => d is not null);
            if (effective is not null && NginxTime.TryParse(effective.Arg(0), out var value))
            {
                foreach (var key in keys)
                {
                    timeouts[key] = NginxTime.Format(value);
                }
            }
        }

        // proxy_set_header is inherited only by levels that set none (nginx's rule); without a Host line nginx sends
        // $proxy_host, the upstream's name, which is Ferry's PreserveHost=false.
        var headers = scope.Select(level => level.Children("proxy_set_header").ToList()).LastOrDefault(h => h.Count > 0) ?? [];
        var host = headers.LastOrDefault(h => h.Arg(0).Equals("Host", StringComparison.OrdinalIgnoreCase));
        var preserveHost = host is not null && host.Arg(1) is "$host" or "$http_host";
        if (host is not null && !preserveHost && host.Arg(1) != "$proxy_host")
        {
            Note(host, $"\"{host}\" not translated: Ferry sends either the client's Host or the destination's address");
        }

        var tls = cluster.Scheme == "https" ? ImportUpstreamTls(scope, cluster) : [];
        if (cluster.SettingsFrom is null)
        {
            cluster.Timeouts = timeouts;
            cluster.PreserveHost = preserveHost;
            cluster.Tls = tls;
            cluster.SettingsFrom = location.Location;
        }
        else if (!cluster.Timeouts!.SequenceEqual(timeouts) || cluster.PreserveHost != preserveHost || !cluster.Tls!.SequenceEqual(tls))
        {
            Note(location, $"\"{location}\" uses cluster \"{cluster.Id}\" with other timeouts, Host handling or proxy_ssl_* settings than the " +
                           $"location at {cluster.SettingsFrom}, whose settings were kept (Ferry's are per cluster)");
        }
    }

    /// <summary>
    /// The proxy_ssl_* directives in effect for an https location, as Clusters:&lt;id&gt;:Tls keys. Two defaults
    /// differ on purpose: nginx does not check the upstream's certificate unless proxy_ssl_verify is on, and sends
    /// no SNI unless proxy_ssl_server_name is on; Ferry always checks, and sends the destination's host name as SNI.
    /// </summary>
    private SortedDictionary<string, string> ImportUpstreamTls(IReadOnlyList<NginxDirective> scope, Cluster cluster)
    {
        var tls = new SortedDictionary<string, string>(StringComparer.Ordinal);
        NginxDirective? Effective(string name) => scope.Select(level => level.Child(name)).LastOrDefault(d => d is not null);

        var verify = Effective("proxy_ssl_verify");
        if (verify?.Arg(0) != "on")
        {
            Note(verify ?? scope[^1], $"nginx does not check the certificate of upstream \"{cluster.Id}\" (proxy_ssl_verify is off); Ferry does, " +
                                      "against the system trust store or Tls:CaFile. For a self-signed test server only: Tls:DangerousAcceptAnyServerCertificate");
        }

        if (Effective("proxy_ssl_trusted_certificate") is { } trusted)
        {
            tls["CaFile"] = trusted.Arg(0);
        }

        if (Effective("proxy_ssl_certificate") is { } certificate)
        {
            tls["ClientCertificate:Path"] = certificate.Arg(0);
            if (Effective("proxy_ssl_certificate_key") is { } key)
            {
                tls["ClientCertificate:KeyPath"] = key.Arg(0);
            }
        }

        // proxy_ssl_name is also the name nginx checks the certificate against, with or without SNI.
        if (Effective("proxy_ssl_name") is { } name && name.Arg(0) != "$proxy_host")
        {
            if (name.Arg(0).Contains('$'))
            {
                Note(name, $"\"{name}\" not translated: variables are resolved per request");
            }
            else
            {
                tls["ServerName"] = name.Arg(0);
            }
        }
        else if (cluster.Named && (verify?.Arg(0) == "on" || Effective("proxy_ssl_server_name")?.Arg(0) == "on"))
        {
            // $proxy_host of "proxy_pass https://name" is the upstream block's name, not its servers' hosts.
            tls["ServerName"] = cluster.Id;
        }

        foreach (var directive in new[] { "proxy_ssl_password_file", "proxy_ssl_protocols", "proxy_ssl_ciphers", "proxy_ssl_crl", "proxy_ssl_conf_command" })
        {
            if (Effective(directive) is { } untranslated)
            {
                Note(untranslated, $"\"{untranslated}\" not translated: Ferry offers TLS 1.2 and 1.3 with the system's ciphers, and reads key passwords from Tls:ClientCertificate:Password");
            }
        }

        return tls;
    }
}
