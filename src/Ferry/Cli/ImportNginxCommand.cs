using System.CommandLine;
using System.Text;
using Ferry.Configuration;
using Ferry.Doctor;
using Microsoft.Extensions.Configuration;

namespace Ferry.Cli;

// `ferry import-nginx nginx.conf [-o ferry.json]`: the equivalent Ferry configuration, checked by Ferry's own loader
// before it is written; what has no equivalent goes to stderr with file:line.
internal static class ImportNginxCommand
{
    public static Command Create()
    {
        var file = new Argument<FileInfo>("nginx.conf") { Description = "nginx configuration file (includes are followed)" };
        var output = new Option<FileInfo?>("--output", "-o") { Description = "where to write the Ferry configuration (default: stdout)" };
        var command = new Command("import-nginx", "Translate an nginx configuration's upstreams, servers, locations and proxy_pass into a Ferry configuration.")
        {
            file, output,
        };
        command.SetAction(parse =>
        {
            var input = parse.GetRequiredValue(file);
            if (!input.Exists)
            {
                Console.Error.WriteLine($"ferry: file not found: {input.FullName}");
                return 1;
            }

            NginxImport import;
            try
            {
                var (directives, _) = NginxConfigParser.ParseFile(input.FullName);
                import = NginxImporter.Import(directives, input.FullName);
            }
            catch (NginxConfigException e)
            {
                Console.Error.WriteLine($"ferry: {e.Message}");
                return 1;
            }

            foreach (var note in import.Notes)
            {
                Console.Error.WriteLine($"{note.File}:{note.Line}: {note.Message}");
            }

            var check = Check(import.Json);
            foreach (var problem in check.Errors.Concat(check.Warnings))
            {
                Console.Error.WriteLine($"ferry: the translated configuration does not load cleanly: {problem}");
            }

            if (parse.GetValue(output) is { } target)
            {
                File.WriteAllText(target.FullName, import.Json);
                Console.Error.WriteLine($"ferry: wrote {target.FullName}: {import.Listeners} listener(s), {import.Routes} route(s), " +
                                        $"{import.Clusters} cluster(s); {import.Notes.Count} note(s) above.");
            }
            else
            {
                Console.Out.Write(import.Json);
            }

            return check.IsValid ? 0 : 1;
        });
        return command;
    }

    /// <summary>Loads the JSON exactly as `ferry run` would (file layer only), so a translation Ferry rejects is never silent.</summary>
    internal static ConfigLoadResult Check(string json)
    {
        using var stream = new MemoryStream(Encoding.UTF8.GetBytes(json));
        var configuration = new ConfigurationBuilder().AddJsonStream(stream).Build();
        return FerryConfigLoader.Load(configuration);
    }
}
