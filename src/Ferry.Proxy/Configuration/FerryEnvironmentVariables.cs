using System.Collections;
using Microsoft.Extensions.Configuration;

namespace Ferry.Configuration;

/// <summary>
/// The FERRY__ environment variable layer over a given set of variables, so that tests need not touch the process
/// environment. Same mapping as Microsoft.Extensions.Configuration's EnvironmentVariables provider: the prefix is
/// removed and "__" becomes ':' (FERRY__Clusters__api__KeepAlive__MaxIdle → Clusters:api:KeepAlive:MaxIdle).
/// </summary>
internal sealed class FerryEnvironmentVariablesSource(IDictionary variables) : IConfigurationSource
{
    public const string Prefix = "FERRY__";

    public IConfigurationProvider Build(IConfigurationBuilder builder) => new Provider(variables);

    private sealed class Provider(IDictionary variables) : ConfigurationProvider
    {
        public override void Load()
        {
            var data = new Dictionary<string, string?>(StringComparer.OrdinalIgnoreCase);
            foreach (DictionaryEntry entry in variables)
            {
                if (entry.Key is string name
                    && name.Length > Prefix.Length
                    && name.StartsWith(Prefix, StringComparison.OrdinalIgnoreCase))
                {
                    var key = name[Prefix.Length..].Replace("__", ConfigurationPath.KeyDelimiter, StringComparison.Ordinal);
                    data[key] = entry.Value?.ToString();
                }
            }

            Data = data;
        }
    }
}
