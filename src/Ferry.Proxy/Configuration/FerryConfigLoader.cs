using System.Collections;
using Microsoft.Extensions.Configuration;

namespace Ferry.Configuration;

/// <summary>
/// Builds the layered configuration (JSON file, then FERRY__ environment variables, then command-line overrides) and
/// turns it into a validated <see cref="FerryConfig"/>. Binding is by hand so that every error names its path and
/// unknown keys (typos) are reported instead of silently ignored. Each section has its reader next to its record
/// (<see cref="ListenerReader"/>, <see cref="ClusterReader"/>, <see cref="RouteReader"/>, ...); the keys a reader
/// reads are the keys it knows (<see cref="ConfigReader.CheckKeys"/>).
/// </summary>
internal static class FerryConfigLoader
{
    /// <summary>The listener, route and cluster name used by `ferry proxy --listen ... --to ...`.</summary>
    public const string ProxyCommandName = "proxy";

    /// <summary>
    /// Layers, later wins: the JSON file (if given; it must exist), FERRY__ environment variables from
    /// <paramref name="environment"/> (the process environment when null), then command-line arguments
    /// ("--Clusters:api:KeepAlive:MaxIdle=64"). Malformed JSON throws <see cref="InvalidDataException"/> from here.
    /// </summary>
    public static IConfigurationRoot Build(string? jsonFile, IEnumerable<string> commandLineArgs, IDictionary? environment = null)
    {
        var builder = new ConfigurationBuilder();
        if (jsonFile is not null)
        {
            var fullPath = Path.GetFullPath(jsonFile);
            if (!File.Exists(fullPath))
            {
                throw new FileNotFoundException($"Configuration file '{fullPath}' does not exist.", fullPath);
            }

            builder.AddJsonFile(fullPath, optional: false, reloadOnChange: false);
        }

        builder.Add(new FerryEnvironmentVariablesSource(environment ?? Environment.GetEnvironmentVariables()));
        builder.AddCommandLine([.. commandLineArgs]);
        return builder.Build();
    }

    /// <summary>
    /// The settings `ferry proxy --listen ADDRESS --to URI... [--admin ADDRESS | --no-admin]` stands for: one
    /// listener, one catch-all route and one cluster named "proxy", destinations "1".."n", every other setting at its
    /// default. The command loads them through <see cref="Load"/>, so it validates and defaults exactly like a file.
    /// </summary>
    public static Dictionary<string, string?> ProxyCommandSettings(string listen, IReadOnlyList<string> destinations, string? admin = null, bool adminEnabled = true,
        string? caFile = null, bool insecure = false, string? certificate = null, string? key = null)
    {
        var settings = new Dictionary<string, string?>
        {
            [$"Listeners:{ProxyCommandName}:Address"] = ProxyListenAddress(listen).Address,
            [$"Routes:{ProxyCommandName}:ClusterId"] = ProxyCommandName,
        };
        if (certificate is not null)
        {
            settings[$"Listeners:{ProxyCommandName}:Certificate:Path"] = certificate;
            settings[$"Listeners:{ProxyCommandName}:Certificate:KeyPath"] = key;
        }
        for (var i = 0; i < destinations.Count; i++)
        {
            settings[$"Clusters:{ProxyCommandName}:Destinations:{i + 1}:Address"] = destinations[i];
        }

        if (destinations.Count == 0)
        {
            // Keeps the cluster present so that the error is "at least one destination", not "unknown cluster".
            settings[$"Clusters:{ProxyCommandName}:Destinations"] = "";
        }

        if (caFile is not null)
        {
            settings[$"Clusters:{ProxyCommandName}:Tls:CaFile"] = caFile;
        }

        if (insecure)
        {
            settings[$"Clusters:{ProxyCommandName}:Tls:DangerousAcceptAnyServerCertificate"] = "true";
        }

        if (!adminEnabled)
        {
            settings["Admin:Enabled"] = "false";
        }
        else if (admin is not null)
        {
            settings["Admin:Address"] = admin;
        }

        return settings;
    }

    /// <summary>`--listen` of `ferry proxy`: an address, optionally written as http://address or https://address.</summary>
    public static (string Address, bool Https) ProxyListenAddress(string listen)
    {
        var text = listen.Trim().TrimEnd('/');
        if (text.StartsWith("https://", StringComparison.OrdinalIgnoreCase))
        {
            return (text["https://".Length..], true);
        }
        return text.StartsWith("http://", StringComparison.OrdinalIgnoreCase) ? (text["http://".Length..], false) : (text, false);
    }

    public static ConfigLoadResult Load(IConfiguration configuration) => Load(configuration, hosted: false);

    /// <summary>
    /// The configuration of Ferry inside an ASP.NET Core app (<see cref="FerryHostingExtensions.AddFerry"/>): the app's
    /// own server takes the connections and serves its own endpoints, so routes need no listener, and Listeners and
    /// Admin, which would be ignored there, are errors.
    /// </summary>
    public static ConfigLoadResult LoadForHost(IConfiguration configuration) => Load(configuration, hosted: true);

    private static ConfigLoadResult Load(IConfiguration configuration, bool hosted)
    {
        var reader = new ConfigReader { BaseDirectory = ConfigDirectory(configuration) };
        FerryConfig? config;
        using (reader.CheckKeys(configuration))
        {
            config = Read(reader, configuration, hosted);
        }
        return new ConfigLoadResult(config, reader.Errors, reader.Warnings);
    }

    // Null when there are errors.
    private static FerryConfig? Read(ConfigReader reader, IConfiguration configuration, bool hosted)
    {
        if (hosted)
        {
            foreach (var section in new[] { "Listeners", "Admin", "Engine", "EventLoops", "EventLoopStallThreshold" })
            {
                if (configuration.GetSection(section).Exists())
                {
                    reader.Error(section, "not read when Ferry runs inside an ASP.NET Core app: the app's server takes the connections");
                }
            }
        }
        var listeners = ListenerReader.ReadAll(reader, configuration);
        var admin = ListenerReader.ReadAdmin(reader, configuration, listeners);
        var proxyStatus = ProxyStatusConfig.Read(reader, configuration);

        var clusters = new Dictionary<string, ClusterConfig>(StringComparer.OrdinalIgnoreCase);
        foreach (var entry in reader.Entries(configuration, "Clusters"))
        {
            clusters[entry.Key] = ClusterReader.Read(reader, entry);
        }

        var limits = RequestLimitsConfig.Read(reader, configuration);

        // Declared names include the policies with errors: a route naming one is not reported a second time.
        var rateLimiterPolicies = new Dictionary<string, RateLimiterPolicyConfig>(StringComparer.OrdinalIgnoreCase);
        var declaredPolicies = new List<string>();
        foreach (var entry in reader.Entries(configuration, "RateLimiterPolicies"))
        {
            declaredPolicies.Add(entry.Key);
            if (RateLimiterPolicyReader.Read(reader, entry) is { } policy)
            {
                rateLimiterPolicies[entry.Key] = policy;
            }
        }

        var routes = new List<RouteConfig>();
        foreach (var entry in reader.Entries(configuration, "Routes"))
        {
            routes.Add(RouteReader.Read(reader, entry, clusters, limits, declaredPolicies));
        }

        // Counted on the configuration, not on the valid listeners: an invalid listener already has its own error.
        if (!hosted && routes.Count > 0 && !configuration.GetSection("Listeners").GetChildren().Any())
        {
            reader.Error("Listeners", "at least one listener is required when routes are defined");
        }

        foreach (var cluster in clusters.Values)
        {
            if (!routes.Any(r => string.Equals(r.ClusterId, cluster.ClusterId, StringComparison.OrdinalIgnoreCase)))
            {
                reader.Warning($"Clusters:{cluster.ClusterId}", "not used by any route");
            }
        }

        foreach (var policy in rateLimiterPolicies.Values)
        {
            if (!routes.Any(r => string.Equals(r.RateLimiterPolicy, policy.Name, StringComparison.OrdinalIgnoreCase)))
            {
                reader.Warning($"RateLimiterPolicies:{policy.Name}", "not used by any route");
            }
        }

        routes.Sort(RouteOrder.Compare);
        var (accessLog, metrics, tracing) = ObservabilityReader.Read(reader, configuration);
        var restart = RestartConfig.Read(reader, configuration);
        var engine = EngineConfig.Read(reader, configuration);

        return reader.Errors.Count == 0
            ? new FerryConfig(listeners.Select(l => l.Config).ToArray(), admin, proxyStatus, routes, clusters)
            {
                Limits = limits,
                RateLimiterPolicies = rateLimiterPolicies,
                AccessLog = accessLog,
                Metrics = metrics,
                Tracing = tracing,
                Restart = restart,
                Engine = engine,
            }
            : null;
    }

    // The directory of the JSON file among the configuration's sources (the last one if several).
    private static string? ConfigDirectory(IConfiguration configuration)
    {
        if (configuration is not IConfigurationRoot root)
        {
            return null;
        }
        string? directory = null;
        foreach (var provider in root.Providers)
        {
            if (provider is Microsoft.Extensions.Configuration.Json.JsonConfigurationProvider { Source: { Path: { } path, FileProvider: Microsoft.Extensions.FileProviders.PhysicalFileProvider files } })
            {
                directory = Path.GetDirectoryName(Path.Combine(files.Root, path));
            }
            else if (provider is ChainedConfigurationProvider { Configuration: { } inner } && ConfigDirectory(inner) is { } innerDirectory)
            {
                directory = innerDirectory;
            }
        }
        return directory;
    }
}
