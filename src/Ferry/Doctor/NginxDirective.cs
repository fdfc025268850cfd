namespace Ferry.Doctor;

/// <summary>
/// One nginx directive: <c>name arg... ;</c> or <c>name arg... { block }</c>, where it was written. Arguments are
/// unquoted and unescaped; variables (<c>$host</c>) stay as text.
/// </summary>
internal sealed record NginxDirective(string Name, IReadOnlyList<string> Args, string File, int Line, IReadOnlyList<NginxDirective>? Block)
{
    public string Location => $"{File}:{Line}";

    public string Arg(int index) => index < Args.Count ? Args[index] : "";

    public IEnumerable<NginxDirective> Children(string name) =>
        (Block ?? []).Where(d => d.Name == name);

    public NginxDirective? Child(string name) => Children(name).LastOrDefault();

    public override string ToString() => Args.Count == 0 ? Name : $"{Name} {string.Join(' ', Args)}";
}

/// <summary>A syntax error that stops parsing, as nginx -t would.</summary>
internal sealed class NginxConfigException(string file, int line, string message) : Exception($"{file}:{line}: {message}")
{
    public string File { get; } = file;

    public int Line { get; } = line;
}
