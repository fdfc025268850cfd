using System.Globalization;
using System.Text;
using System.Text.Json;
using Ferry.Configuration;

namespace Ferry.Doctor;

/// <summary>Something in the nginx configuration that has no Ferry equivalent, where it was written.</summary>
internal sealed record ImportNote(string File, int Line, string Message);

/// <summary>The Ferry configuration (JSON, docs/configuration.md) equivalent to an nginx configuration, and what was left out.</summary>
internal sealed record NginxImport(string Json, int Listeners, int Routes, int Clusters, IReadOnlyList<ImportNote> Notes);

/// <summary>
/// Translates the proxying subset of an nginx configuration: listen, server_name, prefix and exact locations,
/// proxy_pass (with a URI part when Ferry's path rules mean the same), upstream servers, the proxy timeouts and
/// upstream keep-alive settings, and per location: proxy_set_header and proxy_hide_header, add_header, a prefix
/// rewrite with break, client_max_body_size, and limit_req or limit_conn (with their zones) as a rate limiter policy.
/// Everything else is listed as a note, never silently dropped.
/// </summary>
internal sealed class NginxImporter
{
    private static readonly HashSet<string> ForwardedHeaders = new(StringComparer.OrdinalIgnoreCase)
    {
        // Ferry adds the X-Forwarded-* headers itself (Forwarding:XForwarded) and handles Connection and Upgrade as
        // hop-by-hop headers; Host is Forwarding:PreserveHost.
        "Host", "Connection", "Upgrade", "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Real-IP",
    };

    private readonly List<ImportNote> _notes = [];
    private readonly HashSet<(string, int, string)> _noted = [];
    private readonly Dictionary<string, string> _listeners = new(StringComparer.Ordinal);      // listen address → listener id
    private readonly List<Route> _routes = [];
    private readonly Dictionary<string, Cluster?> _clusters = new(StringComparer.OrdinalIgnoreCase);  // null: could not be translated

    // limit_req_zone and limit_conn_zone of the http block being imported, by zone name; null: could not be translated.
    private Dictionary<string, Zone?> _requestZones = new(StringComparer.Ordinal);
    private Dictionary<string, Zone?> _connectionZones = new(StringComparer.Ordinal);

    // RateLimiterPolicies: each policy's settings in the order they are written, and the policy made for a zone used
    // with given parameters ("zone|parameters"), so that locations limited alike share one policy as they share a zone.
    private readonly Dictionary<string, IReadOnlyList<(string Key, object Value)>> _policies = new(StringComparer.Ordinal);
    private readonly Dictionary<string, string> _policyFor = new(StringComparer.Ordinal);

    // A zone's key as Ferry reads it: Key ClientIp, or Key Header with the header's name; and its size in MiB.
    private sealed record Zone(string Name, string? HeaderName, double Mebibytes, double? RequestsPerSecond);

    // Transforms: each rule's keys and values in the order they are written (the first key names the rule).
    private sealed record Route(string Id, int Order, IReadOnlyList<string> Hosts, string? Path, string? PathPrefix,
        IReadOnlyList<(string Key, string Value)[]> Transforms, string? MaxRequestBodySize, string ClusterId)
    {
        public string? RateLimiterPolicy { get; init; }
    }

    private sealed class Cluster(string id)
    {
        public string Id { get; } = id;
        public List<(string Id, string Address, int Weight, bool Backup)> Destinations { get; } = [];
        public string? Policy { get; set; }
        public SortedDictionary<string, string> KeepAlive { get; } = new(StringComparer.Ordinal);
        public SortedDictionary<string, string>? Timeouts { get; set; }
        public bool? PreserveHost { get; set; }
        public SortedDictionary<string, string>? Tls { get; set; }
        public string? SettingsFrom { get; set; }

        // http or https: nginx's scheme belongs to proxy_pass, Ferry's to each destination address.
        public string Scheme { get; set; } = "http";

        // An upstream block, whose name is what nginx sends as SNI and checks certificates against ($proxy_host).
        public bool Named { get; set; }
    }

    public static NginxImport Import(IReadOnlyList<NginxDirective> root, string mainFile)
    {
        var importer = new NginxImporter();
        foreach (var http in NginxContexts.Http(root, mainFile))
        {
            importer.ImportHttp(http);
        }

        importer.DropShadowedListeners();
        var clusters = importer._clusters.Values.OfType<Cluster>().ToList();
        return new NginxImport(importer.Write(clusters), importer._listeners.Count, importer._routes.Count, clusters.Count, importer._notes);
    }

    private void Note(NginxDirective at, string message)
    {
        if (_noted.Add((at.File, at.Line, message)))
        {
            _notes.Add(new ImportNote(at.File, at.Line, message));
        }
    }

    private void ImportHttp(NginxDirective http)
    {
        var upstreams = http.Children("upstream").Where(u => u.Block is not null)
            .GroupBy(u => u.Arg(0), StringComparer.OrdinalIgnoreCase)
            .ToDictionary(g => g.Key, g => g.Last(), StringComparer.OrdinalIgnoreCase);
        _requestZones = ImportZones(http, "limit_req_zone");
        _connectionZones = ImportZones(http, "limit_conn_zone");
        var listenSets = new HashSet<string>(StringComparer.Ordinal);
        NginxDirective? firstServer = null;
        foreach (var server in http.Children("server").Where(s => s.Block is not null))
        {
            firstServer ??= server;
            var listeners = ImportListens(server);
            listenSets.Add(string.Join(' ', listeners.Order(StringComparer.Ordinal)));
            var (hosts, order) = ImportServerNames(server);
            foreach (var directive in server.Block!)
            {
                NoteUntranslated(directive, "server");
            }

            var scope = new[] { http, server };
            foreach (var location in server.Children("location").Where(l => l.Block is not null))
            {
                ImportLocation(location, [.. scope, location], hosts, order, upstreams);
            }

            if (server.Child("proxy_pass") is { } serverProxyPass)
            {
                Note(serverProxyPass, "proxy_pass outside a location is not valid nginx; not translated");
            }
        }

        if (listenSets.Count > 1 && firstServer is not null)
        {
            Note(firstServer, "servers listen on different addresses; Ferry routes match on every listener, so each route now " +
                              "answers on all of them (routes are chosen by host and path only)");
        }
    }

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

    private void NoteUntranslated(NginxDirective directive, string level)
    {
        switch (directive.Name)
        {
            case "rewrite" when level == "location":
                // ImportLocation translates what it can.
                break;
            case "rewrite" or "return" or "if" or "try_files" or "root" or "alias" or "fastcgi_pass" or "uwsgi_pass" or "grpc_pass" or "auth_request":
                Note(directive, $"\"{directive.Name}\" in a {level} not translated: Ferry only proxies");
                break;
            case var name when name.StartsWith("ssl_", StringComparison.Ordinal):
                Note(directive, $"\"{name}\" not translated: Ferry's configuration has no TLS yet");
                break;
        }
    }

    private void ImportLocation(NginxDirective location, IReadOnlyList<NginxDirective> scope, List<string> hosts, int order,
        Dictionary<string, NginxDirective> upstreams)
    {
        var (modifier, path) = LocationMatch(location);
        foreach (var directive in location.Block!.Where(d => d.Name != "location"))
        {
            NoteUntranslated(directive, "location");
        }

        foreach (var nested in location.Children("location").Where(l => l.Block is not null))
        {
            ImportLocation(nested, [.. scope, nested], hosts, order, upstreams);
        }

        var proxyPass = location.Child("proxy_pass");
        if (proxyPass is null)
        {
            return;
        }

        if (modifier is "~" or "~*" || path.StartsWith('@'))
        {
            Note(location, $"\"{location}\": regular expression and named locations are not translated (Ferry matches exact paths and prefixes)");
            return;
        }

        var target = ProxyPassTarget.Parse(proxyPass.Arg(0));
        if (target is null || target.HasVariables || target.Scheme is not ("http" or "https") || target.Name.StartsWith("unix:", StringComparison.Ordinal))
        {
            var why = target is null ? "not an http:// or https:// URL" : target.HasVariables ? "variables are resolved per request" : target.Scheme is not ("http" or "https") ? "Ferry speaks HTTP and HTTPS to destinations" : "unix sockets are not supported";
            Note(proxyPass, $"\"{proxyPass}\" not translated: {why}");
            return;
        }

        var exact = modifier == "=";
        var transforms = new List<(string Key, string Value)[]>();
        // With a rewrite ... break in the location, nginx ignores proxy_pass's URI part and sends the rewritten URI.
        var rewritten = ImportRewrite(location, transforms);
        if (!rewritten && target.Uri is { } uri && uri != path)
        {
            // nginx replaces the matched part with the URI: "location /api/ { proxy_pass http://b/v2/; }" sends /api/x
            // as /v2/x, which is PathRemovePrefix /api then PathPrefix /v2; an exact location's path is replaced
            // whole. Other replacements cut a segment in two, which Ferry's segment-aligned rules cannot express.
            if (exact)
            {
                transforms.Add([("PathSet", uri)]);
            }
            else if (path.EndsWith('/') && uri.EndsWith('/'))
            {
                AddPrefixChange(transforms, path, uri);
            }
            else
            {
                Note(proxyPass, $"\"{proxyPass}\" in \"{location}\" replaces the path prefix \"{path}\" with \"{uri}\"; Ferry can only replace a prefix " +
                                "that ends on a segment boundary (location /api/ with proxy_pass http://backend/v2/). Route not translated");
                return;
            }
        }

        ImportHeaderRules(scope, transforms);
        var maxBody = ImportMaxBodySize(scope);
        var rateLimiterPolicy = ImportRateLimit(scope);

        var clusterId = ClusterFor(target, proxyPass, upstreams);
        if (clusterId is null)
        {
            return;
        }

        ApplyLocationSettings(_clusters[clusterId]!, scope, location);
        var id = UniqueRouteId($"{(hosts.Count > 0 ? hosts[0] : "_")}{(exact ? "=" : "")}{path}");
        _routes.Add(new Route(id, order, hosts, exact ? path : null, exact ? null : path, transforms, maxBody, clusterId)
        {
            RateLimiterPolicy = rateLimiterPolicy,
        });
    }

    // "/old/" → "/new/": PathRemovePrefix /old, then PathPrefix /new; either is left out when it is "/".
    private static void AddPrefixChange(List<(string Key, string Value)[]> transforms, string from, string to)
    {
        if (from.Length > 1)
        {
            transforms.Add([("PathRemovePrefix", from.TrimEnd('/'))]);
        }

        if (to.Length > 1)
        {
            transforms.Add([("PathPrefix", to.TrimEnd('/'))]);
        }
    }

    /// <summary>
    /// "rewrite ^/old/(.*)$ /new/$1 break;" is a prefix change on a segment boundary. Returns whether the location's
    /// rewrite was translated; one that is not (another regular expression, another flag, several rewrites) is noted
    /// and the route is forwarded without it. Ferry's prefix comparison ignores case where nginx's regex does not.
    /// </summary>
    private bool ImportRewrite(NginxDirective location, List<(string Key, string Value)[]> transforms)
    {
        var rewrites = location.Children("rewrite").ToList();
        if (rewrites.Count == 0)
        {
            return false;
        }

        if (rewrites.Count == 1 && rewrites[0] is { Args.Count: 3 } rewrite && rewrite.Arg(2) == "break"
            && RegexPrefix(rewrite.Arg(0)) is { } from
            && rewrite.Arg(1) is var replacement && replacement.EndsWith("/$1", StringComparison.Ordinal)
            && replacement[..^2] is var to && to.StartsWith('/') && to.IndexOfAny(['$', '?', '#', ' ']) < 0)
        {
            AddPrefixChange(transforms, from, to);
            return true;
        }

        foreach (var untranslated in rewrites)
        {
            Note(untranslated, $"\"{untranslated}\" not translated: Ferry expresses a single \"rewrite ^/old/(.*)$ /new/$1 break;\" per location " +
                               "(a prefix change); the route forwards the path unchanged");
        }

        return false;
    }

    // "^/old/(.*)$" → "/old/"; null for any other regular expression.
    private static string? RegexPrefix(string regex)
    {
        if (!regex.StartsWith("^/", StringComparison.Ordinal))
        {
            return null;
        }

        var end = regex.EndsWith("(.*)$", StringComparison.Ordinal) ? regex.Length - 5
            : regex.EndsWith("(.*)", StringComparison.Ordinal) ? regex.Length - 4
            : -1;
        if (end < 2)
        {
            return null;
        }

        var prefix = new StringBuilder();
        for (var i = 1; i < end; i++)
        {
            var c = regex[i];
            if (c == '\\' && i + 1 < end && regex[i + 1] is '.' or '-' or '/')
            {
                prefix.Append(regex[++i]);
            }
            else if (char.IsAsciiLetterOrDigit(c) || c is '/' or '-' or '_' or '~')
            {
                prefix.Append(c);
            }
            else
            {
                return null;
            }
        }

        var text = prefix.ToString();
        return text.EndsWith('/') && !text.Contains("//", StringComparison.Ordinal) ? text : null;
    }

    /// <summary>
    /// proxy_set_header, proxy_hide_header and add_header of the location, each inherited only by levels that set
    /// none of the same directive (nginx's rule). Headers Ferry handles itself (Host, Connection, X-Forwarded-*) are
    /// left to the cluster settings. add_header without "always" becomes When=Success, which nginx limits to a list
    /// of success and redirect statuses; Ferry applies it to every status below 400.
    /// </summary>
    private void ImportHeaderRules(IReadOnlyList<NginxDirective> scope, List<(string Key, string Value)[]> transforms)
    {
        foreach (var header in Effective(scope, "proxy_set_header").Where(h => !ForwardedHeaders.Contains(h.Arg(0))))
        {
            if (Untranslatable(header, header.Arg(0), header.Arg(1), response: false) is { } why)
            {
                Note(header, $"\"{header}\" not translated: {why}");
            }
            else if (header.Arg(1).Length == 0)
            {
                // An empty value: nginx does not pass the field at all.
                transforms.Add([("RequestHeaderRemove", header.Arg(0))]);
            }
            else
            {
                transforms.Add([("RequestHeader", header.Arg(0)), ("Set", header.Arg(1))]);
            }
        }

        foreach (var hide in Effective(scope, "proxy_hide_header"))
        {
            if (Untranslatable(hide, hide.Arg(0), "", response: true) is { } why)
            {
                Note(hide, $"\"{hide}\" not translated: {why}");
            }
            else
            {
                transforms.Add([("ResponseHeaderRemove", hide.Arg(0)), ("When", "Always")]);
            }
        }

        foreach (var add in Effective(scope, "add_header"))
        {
            var always = add.Args.Count > 2 && add.Arg(2) == "always";
            if (Untranslatable(add, add.Arg(0), add.Arg(1), response: true) is { } why)
            {
                Note(add, $"\"{add}\" not translated: {why}");
            }
            else
            {
                transforms.Add([("ResponseHeader", add.Arg(0)), ("Append", add.Arg(1)), ("When", always ? "Always" : "Success")]);
            }
        }
    }

    private static IEnumerable<NginxDirective> Effective(IReadOnlyList<NginxDirective> scope, string directive) =>
        scope.Select(level => level.Children(directive).ToList()).LastOrDefault(d => d.Count > 0) ?? [];

    // Why Ferry's configuration would refuse the rule, or null.
    private static string? Untranslatable(NginxDirective directive, string name, string value, bool response)
    {
        if (directive.Args.Count < (directive.Name == "proxy_hide_header" ? 1 : 2))
        {
            return "incomplete";
        }

        if (value.Contains('$') || name.Contains('$'))
        {
            return "variables are resolved per request";
        }

        if (!Http1.HeadWriting.IsToken(name) || !Http1.HeadWriting.IsValue(value))
        {
            return "not a valid header name or value";
        }

        if (Forwarding.HopByHop.IsHopByHopOrManaged(name) || (response && name.Equals("Proxy-Status", StringComparison.OrdinalIgnoreCase)))
        {
            return "Ferry writes this header itself";
        }

        return null;
    }

    // client_max_body_size of the innermost level that sets it; nginx's own default (1m) is not carried over: Ferry's
    // default (Limits:MaxRequestBodySize, 100m) is what a configuration that never chose a limit gets.
    private string? ImportMaxBodySize(IReadOnlyList<NginxDirective> scope)
    {
        var effective = scope.Select(level => level.Child("client_max_body_size")).LastOrDefault(d => d is not null);
        if (effective is null)
        {
            return null;
        }

        if (!ConfigReader.TryParseSize(effective.Arg(0), out _))
        {
            Note(effective, $"\"{effective}\" not translated: not a size Ferry reads (bytes, or k, m, g)");
            return null;
        }

        return effective.Arg(0).ToLowerInvariant();
    }

    // limit_req_zone KEY zone=NAME:SIZE rate=Nr/s|Nr/m; limit_conn_zone KEY zone=NAME:SIZE. nginx keeps one state per
    // key in the zone's shared memory; Ferry keeps one partition per key, at most MaxPartitions.
    private Dictionary<string, Zone?> ImportZones(NginxDirective http, string directive)
    {
        var zones = new Dictionary<string, Zone?>(StringComparer.Ordinal);
        foreach (var zone in http.Children(directive))
        {
            var parameters = zone.Args.Skip(1).Select(a => a.Split('=', 2)).Where(p => p.Length == 2).ToDictionary(p => p[0], p => p[1], StringComparer.Ordinal);
            if (!parameters.TryGetValue("zone", out var zoneText) || zoneText.Split(':') is not [var name, var size] || name.Length == 0)
            {
                Note(zone, $"\"{zone}\" not translated: no zone=name:size");
                continue;
            }

            var key = zone.Arg(0);
            string? header = null;
            if (key.StartsWith("$http_", StringComparison.Ordinal) && key.Length > "$http_".Length && key.IndexOf('$', 1) < 0)
            {
                // nginx's $http_x_api_key is the header X-Api-Key: lower case, '-' written as '_'.
                header = string.Join('-', key["$http_".Length..].Split('_').Select(w => w.Length == 0 ? w : char.ToUpperInvariant(w[0]) + w[1..]));
            }
            else if (key is not ("$binary_remote_addr" or "$remote_addr"))
            {
                Note(zone, $"\"{zone}\" not translated: Ferry partitions by the client address ($binary_remote_addr, $remote_addr) or one " +
                           "request header ($http_name); the locations limited by this zone are not limited");
                zones[name] = null;
                continue;
            }

            double? rate = null;
            if (directive == "limit_req_zone")
            {
                rate = parameters.TryGetValue("rate", out var rateText) ? ParseRate(rateText) : null;
                if (rate is null)
                {
                    Note(zone, $"\"{zone}\" not translated: rate must be N r/s or N r/m; the locations limited by this zone are not limited");
                    zones[name] = null;
                    continue;
                }
            }

            zones[name] = new Zone(name, header, ConfigReader.TryParseSize(size, out var bytes) ? bytes / 1024.0 / 1024.0 : 0, rate);
        }

        return zones;
    }

    private static double? ParseRate(string text)
    {
        var perMinute = text.EndsWith("r/m", StringComparison.Ordinal);
        if (!perMinute && !text.EndsWith("r/s", StringComparison.Ordinal))
        {
            return null;
        }

        return int.TryParse(text.AsSpan(0, text.Length - 3), NumberStyles.None, CultureInfo.InvariantCulture, out var n) && n > 0
            ? perMinute ? n / 60.0 : n
            : null;
    }

    // The rate limit of a location: its limit_req (or, without one, its limit_conn), inherited from server and http
    // like nginx's array directives: from the innermost level that has any.
    private string? ImportRateLimit(IReadOnlyList<NginxDirective> scope)
    {
        var requests = Effective(scope, "limit_req").ToList();
        var connections = Effective(scope, "limit_conn").ToList();
        foreach (var ignored in requests.Skip(1).Concat(requests.Count > 0 ? connections : connections.Skip(1)))
        {
            Note(ignored, $"\"{ignored}\" not translated: a Ferry route has one rate limiter policy");
        }

        if (requests.Count > 0)
        {
            NoteStatus(scope, requests[0], "limit_req_status");
            return ImportLimitReq(requests[0]);
        }

        if (connections.Count > 0)
        {
            NoteStatus(scope, connections[0], "limit_conn_status");
            return ImportLimitConn(connections[0]);
        }

        return null;
    }

    // nginx refuses with 503 unless limit_req_status says otherwise; Ferry always answers 429 with Retry-After.
    private void NoteStatus(IReadOnlyList<NginxDirective> scope, NginxDirective limit, string directive)
    {
        var status = scope.Select(level => level.Child(directive)).LastOrDefault(d => d is not null);
        if (status?.Arg(0) is not (null or "429"))
        {
            Note(status, $"\"{status}\" not translated: Ferry refuses with 429 Too Many Requests and a Retry-After header");
        }
        else if (status is null)
        {
            Note(limit, $"\"{limit}\": without {directive} nginx refuses with 503; Ferry refuses with 429 Too Many Requests and a Retry-After header");
        }
    }

    // limit_req zone=NAME [burst=B] [nodelay | delay=D]. nginx's limit_req is a leaky bucket: requests leave at the
    // zone's rate, up to B wait in the bucket and are delayed to that rate, and more are refused; with nodelay the B
    // excess requests are answered at once but still take their place in the bucket, which empties at the rate; with
    // delay=D the first D are answered at once and the rest delayed. The token bucket that behaves the same holds
    // D + 1 tokens (B + 1 with nodelay, 1 by default: the request itself plus the excess nginx answers at once),
    // refills at the rate, and queues up to B - D requests (QueueLimit) until a token comes: those are nginx's delayed
    // ones. What differs: nginx spaces delayed requests exactly 1/rate apart, Ferry releases them as the bucket
    // refills (every 100 ms at most); nginx accounts in milliseconds per key, Ferry in whole tokens.
    private string? ImportLimitReq(NginxDirective limit)
    {
        var parameters = limit.Args.Select(a => a.Split('=', 2)).ToDictionary(p => p[0], p => p.Length == 2 ? p[1] : "", StringComparer.Ordinal);
        if (!parameters.TryGetValue("zone", out var zoneName) || !_requestZones.TryGetValue(zoneName, out var zone))
        {
            Note(limit, $"\"{limit}\" not translated: no limit_req_zone in this http block defines the zone");
            return null;
        }

        if (zone is null)
        {
            return null;
        }

        var burst = parameters.TryGetValue("burst", out var burstText) && int.TryParse(burstText, NumberStyles.None, CultureInfo.InvariantCulture, out var b) ? b : 0;
        var immediate = parameters.ContainsKey("nodelay") ? burst
            : parameters.TryGetValue("delay", out var delayText) && int.TryParse(delayText, NumberStyles.None, CultureInfo.InvariantCulture, out var d) ? Math.Min(d, burst)
            : 0;
        var (tokens, periodMilliseconds) = Replenishment(zone.RequestsPerSecond!.Value);
        var settings = new List<(string Key, object Value)>
        {
            ("Kind", nameof(RateLimiterKind.TokenBucket)),
            ("TokenLimit", immediate + 1),
            ("TokensPerPeriod", tokens),
            ("ReplenishmentPeriod", periodMilliseconds.ToString("0.###", CultureInfo.InvariantCulture) + "ms"),
        };
        if (burst > immediate)
        {
            settings.Add(("QueueLimit", burst - immediate));
        }

        return AddPolicy(limit, zone, settings);
    }

    // limit_conn ZONE N: at most N requests of one key in progress at once (nginx counts requests, not connections,
    // once the request head is read; over HTTP/2 each stream counts), which is a concurrency limiter.
    private string? ImportLimitConn(NginxDirective limit)
    {
        if (!_connectionZones.TryGetValue(limit.Arg(0), out var zone))
        {
            Note(limit, $"\"{limit}\" not translated: no limit_conn_zone in this http block defines the zone");
            return null;
        }

        if (zone is null)
        {
            return null;
        }

        if (!int.TryParse(limit.Arg(1), NumberStyles.None, CultureInfo.InvariantCulture, out var permits) || permits < 1)
        {
            Note(limit, $"\"{limit}\" not translated: the limit must be a positive number");
            return null;
        }

        return AddPolicy(limit, zone, [("Kind", nameof(RateLimiterKind.Concurrency)), ("PermitLimit", permits)]);
    }

    // The fewest whole tokens per period of at least 100 ms (Ferry's replenishment step) that make the rate exactly:
    // 10r/s is 1 token per 100ms, 30r/m 1 per 2000ms, 15r/s 2 per 133.333ms.
    private static (int Tokens, double PeriodMilliseconds) Replenishment(double requestsPerSecond)
    {
        var interval = 1000 / requestsPerSecond;
        var tokens = (int)Math.Ceiling(RateLimiterPolicyConfig.MinPeriod.TotalMilliseconds / interval - 1e-9);
        tokens = Math.Max(tokens, 1);
        return (tokens, Math.Round(tokens * interval, 3));
    }

    private string AddPolicy(NginxDirective limit, Zone zone, List<(string Key, object Value)> settings)
    {
        if (zone.HeaderName is { } header)
        {
            settings.Add(("Key", nameof(RateLimiterKey.Header)));
            settings.Add(("Name", header));
        }

        // nginx: one megabyte of zone holds about 16 000 states of 64 bytes; Ferry's default (100 000) is kept when larger.
        var states = (int)Math.Min(zone.Mebibytes * 16_000, int.MaxValue);
        if (states > 0 && states < RateLimiterPolicyConfig.DefaultMaxPartitions)
        {
            settings.Add(("MaxPartitions", states));
        }

        var signature = zone.Name + "|" + string.Join(';', settings.Select(s => $"{s.Key}={s.Value}"));
        if (_policyFor.TryGetValue(signature, out var existing))
        {
            return existing;
        }

        var name = zone.Name;
        for (var i = 2; _policies.ContainsKey(name); i++)
        {
            name = $"{zone.Name}-{i}";
        }

        if (name != zone.Name)
        {
            Note(limit, $"\"{limit}\": zone \"{zone.Name}\" is also used with other parameters; nginx shares one state per key between " +
                        $"them, Ferry gives these locations their own policy \"{name}\" and budgets");
        }

        _policies[name] = settings;
        _policyFor[signature] = name;
        return name;
    }

    private static (string Modifier, string Path) LocationMatch(NginxDirective location)
    {
        if (location.Args.Count >= 2)
        {
            return (location.Arg(0), location.Arg(1));
        }

        var arg = location.Arg(0);
        // nginx also accepts the modifier glued to the path: "location =/x".
        foreach (var modifier in new[] { "^~", "~*", "=", "~" })
        {
            if (arg.StartsWith(modifier, StringComparison.Ordinal) && arg.Length > modifier.Length)
            {
                return (modifier, arg[modifier.Length..]);
            }
        }

        return ("", arg);
    }

    private string UniqueRouteId(string id)
    {
        var candidate = id;
        for (var n = 2; _routes.Any(r => r.Id.Equals(candidate, StringComparison.OrdinalIgnoreCase)); n++)
        {
            candidate = $"{id}~{n}";
        }

        return candidate;
    }

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

    private string Write(IReadOnlyList<Cluster> clusters)
    {
        using var stream = new MemoryStream();
        using (var json = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true }))
        {
            json.WriteStartObject();
            json.WriteStartObject("Listeners");
            foreach (var (address, id) in _listeners)
            {
                json.WriteStartObject(id);
                json.WriteString("Address", address);
                json.WriteEndObject();
            }

            json.WriteEndObject();
            if (_policies.Count > 0)
            {
                json.WriteStartObject("RateLimiterPolicies");
                foreach (var (name, settings) in _policies)
                {
                    json.WriteStartObject(name);
                    foreach (var (key, value) in settings)
                    {
                        if (value is int number)
                        {
                            json.WriteNumber(key, number);
                        }
                        else
                        {
                            json.WriteString(key, (string)value);
                        }
                    }

                    json.WriteEndObject();
                }

                json.WriteEndObject();
            }

            json.WriteStartObject("Routes");
            foreach (var route in _routes)
            {
                json.WriteStartObject(route.Id);
                json.WriteString("ClusterId", route.ClusterId);
                if (route.Order != 0)
                {
                    json.WriteNumber("Order", route.Order);
                }

                json.WriteStartObject("Match");
                if (route.Hosts.Count > 0)
                {
                    json.WriteStartArray("Hosts");
                    route.Hosts.ToList().ForEach(json.WriteStringValue);
                    json.WriteEndArray();
                }

                if (route.Path is not null)
                {
                    json.WriteString("Path", route.Path);
                }

                if (route.PathPrefix is not null)
                {
                    json.WriteString("PathPrefix", route.PathPrefix);
                }

                json.WriteEndObject();
                if (route.MaxRequestBodySize is not null)
                {
                    json.WriteString("MaxRequestBodySize", route.MaxRequestBodySize);
                }

                if (route.RateLimiterPolicy is not null)
                {
                    json.WriteString("RateLimiterPolicy", route.RateLimiterPolicy);
                }

                if (route.Transforms.Count > 0)
                {
                    json.WriteStartArray("Transforms");
                    foreach (var rule in route.Transforms)
                    {
                        json.WriteStartObject();
                        foreach (var (key, value) in rule)
                        {
                            json.WriteString(key, value);
                        }

                        json.WriteEndObject();
                    }

                    json.WriteEndArray();
                }

                json.WriteEndObject();
            }

            json.WriteEndObject();
            json.WriteStartObject("Clusters");
            foreach (var cluster in clusters)
            {
                json.WriteStartObject(cluster.Id);
                if (cluster.Policy is not null)
                {
                    json.WriteString("LoadBalancingPolicy", cluster.Policy);
                }

                json.WriteStartObject("Destinations");
                foreach (var (id, address, weight, backup) in cluster.Destinations)
                {
                    json.WriteStartObject(id);
                    json.WriteString("Address", address);
                    if (weight != 1)
                    {
                        json.WriteNumber("Weight", weight);
                    }

                    if (backup)
                    {
                        json.WriteBoolean("Backup", true);
                    }

                    json.WriteEndObject();
                }

                json.WriteEndObject();
                WriteSection(json, "KeepAlive", cluster.KeepAlive);
                WriteSection(json, "Timeouts", cluster.Timeouts ?? []);
                json.WriteStartObject("Forwarding");
                json.WriteBoolean("PreserveHost", cluster.PreserveHost ?? false);
                json.WriteEndObject();
                WriteNestedSection(json, "Tls", cluster.Tls ?? []);
                json.WriteEndObject();
            }

            json.WriteEndObject();
            json.WriteEndObject();
        }

        return Encoding.UTF8.GetString(stream.ToArray()) + "\n";
    }

    // "ClientCertificate:Path" becomes "ClientCertificate": { "Path": ... }; keys of one sub-section sort together.
    private static void WriteNestedSection(Utf8JsonWriter json, string name, SortedDictionary<string, string> values)
    {
        if (values.Count == 0)
        {
            return;
        }

        json.WriteStartObject(name);
        string? open = null;
        foreach (var (key, value) in values)
        {
            var colon = key.IndexOf(':');
            var section = colon < 0 ? null : key[..colon];
            if (section != open)
            {
                if (open is not null)
                {
                    json.WriteEndObject();
                }

                if (section is not null)
                {
                    json.WriteStartObject(section);
                }

                open = section;
            }

            json.WriteString(colon < 0 ? key : key[(colon + 1)..], value);
        }

        if (open is not null)
        {
            json.WriteEndObject();
        }

        json.WriteEndObject();
    }

    private static void WriteSection(Utf8JsonWriter json, string name, IReadOnlyDictionary<string, string> values)
    {
        if (values.Count == 0)
        {
            return;
        }

        json.WriteStartObject(name);
        foreach (var (key, value) in values)
        {
            json.WriteString(key, value);
        }

        json.WriteEndObject();
    }
}
