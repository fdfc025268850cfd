using System.Text;
using System.Text.Json;

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
internal sealed partial class NginxImporter
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

    // nginx's array directives (proxy_set_header, add_header, limit_req, ...) are inherited only by levels that set none.
    private static IEnumerable<NginxDirective> Effective(IReadOnlyList<NginxDirective> scope, string directive) =>
        scope.Select(level => level.Children(directive).ToList()).LastOrDefault(d => d.Count > 0) ?? [];

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
