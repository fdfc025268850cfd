using System.Globalization;

namespace Ferry.Doctor;

/// <summary>
/// A <c>server address [weight=N] [max_fails=N] [fail_timeout=T] [max_conns=N] [backup] [down] ...;</c> line of an
/// upstream block, with nginx's defaults (ngx_http_upstream_server: weight 1, max_fails 1, fail_timeout 10s).
/// </summary>
internal sealed record NginxUpstreamServer(NginxDirective Directive, string Address, int Weight, int MaxFails, TimeSpan FailTimeout,
    int? MaxConns, bool Backup, bool Down, IReadOnlyList<string> OtherParameters)
{
    public static NginxUpstreamServer Parse(NginxDirective server)
    {
        int weight = 1, maxFails = 1;
        int? maxConns = null;
        var failTimeout = TimeSpan.FromSeconds(10);
        bool backup = false, down = false;
        var other = new List<string>();
        foreach (var parameter in server.Args.Skip(1))
        {
            var (name, value) = parameter.IndexOf('=') is var eq and > 0 ? (parameter[..eq], parameter[(eq + 1)..]) : (parameter, "");
            switch (name)
            {
                case "weight" when int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out var w):
                    weight = w;
                    break;
                case "max_fails" when int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out var f):
                    maxFails = f;
                    break;
                case "fail_timeout" when NginxTime.TryParse(value, out var t):
                    failTimeout = t;
                    break;
                case "max_conns" when int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out var c):
                    maxConns = c == 0 ? null : c;
                    break;
                case "backup" when value.Length == 0:
                    backup = true;
                    break;
                case "down" when value.Length == 0:
                    down = true;
                    break;
                default:
                    other.Add(parameter);
                    break;
            }
        }

        return new NginxUpstreamServer(server, server.Arg(0), weight, maxFails, failTimeout, maxConns, backup, down, other);
    }
}
