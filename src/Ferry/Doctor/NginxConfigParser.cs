using System.IO.Enumeration;
using System.Text;

namespace Ferry.Doctor;

/// <summary>
/// Parses nginx configuration with nginx's own token rules (ngx_conf_file.c, ngx_conf_read_token): words separated by
/// whitespace, <c>;</c> and <c>{</c>; <c>"..."</c> and <c>'...'</c> quoting; backslash escapes; <c>#</c> comments only at
/// the start of a word; <c>${var}</c> braces belong to the variable; <c>}</c> inside a word belongs to the word.
/// <c>include</c> is expanded where it appears, with glob patterns.
/// </summary>
internal sealed class NginxConfigParser
{
    // nginx has no include depth limit and loops forever on a cycle; a cycle here is reported instead.
    private const int MaxIncludeDepth = 16;

    private readonly string _prefix;
    private readonly List<string> _files = [];
    private readonly Stack<string> _including = new();

    private NginxConfigParser(string prefix) => _prefix = prefix;

    /// <summary>Every file read, main file first, in reading order.</summary>
    public IReadOnlyList<string> Files => _files;

    /// <summary>
    /// Parses <paramref name="path"/> and its includes. Relative include paths are resolved against the main file's
    /// directory: nginx resolves them against its configuration prefix (ngx_conf_full_name), which is the directory of
    /// nginx.conf, not the directory of the including file.
    /// </summary>
    public static (IReadOnlyList<NginxDirective> Directives, IReadOnlyList<string> Files) ParseFile(string path)
    {
        var full = Path.GetFullPath(path);
        var parser = new NginxConfigParser(Path.GetDirectoryName(full)!);
        var directives = parser.ParseIncluded(full, full, 0);
        return (directives, parser.Files);
    }

    public static IReadOnlyList<NginxDirective> ParseText(string text, string file, string prefix)
    {
        var parser = new NginxConfigParser(prefix);
        var tokens = new Tokenizer(text, file).Tokens().GetEnumerator();
        return parser.ParseBlock(tokens, file, null, 0);
    }

    private List<NginxDirective> ParseIncluded(string path, string includedFrom, int includedAt)
    {
        if (_including.Contains(path, StringComparer.Ordinal) || _including.Count >= MaxIncludeDepth)
        {
            throw new NginxConfigException(includedFrom, includedAt, $"include cycle through \"{path}\"");
        }

        _files.Add(path);
        _including.Push(path);
        string text;
        try
        {
            text = File.ReadAllText(path);
        }
        catch (IOException e)
        {
            throw new NginxConfigException(includedFrom, includedAt, $"cannot read \"{path}\": {e.Message}");
        }

        var tokens = new Tokenizer(text, path).Tokens().GetEnumerator();
        var directives = ParseBlock(tokens, path, null, 0);
        _including.Pop();
        return directives;
    }

    private List<NginxDirective> ParseBlock(IEnumerator<Token> tokens, string file, string? blockName, int blockLine)
    {
        var directives = new List<NginxDirective>();
        var words = new List<Token>();
        while (tokens.MoveNext())
        {
            var token = tokens.Current;
            switch (token.Kind)
            {
                case TokenKind.Word:
                    words.Add(token);
                    break;
                case TokenKind.Semicolon:
                    if (words.Count == 0)
                    {
                        throw new NginxConfigException(file, token.Line, "unexpected \";\"");
                    }

                    var directive = new NginxDirective(words[0].Text, words.Skip(1).Select(w => w.Text).ToArray(), file, words[0].Line, null);
                    if (directive.Name == "include" && !words[0].Quoted)
                    {
                        directives.AddRange(Include(directive));
                    }
                    else
                    {
                        directives.Add(directive);
                    }

                    words.Clear();
                    break;
                case TokenKind.OpenBrace:
                    if (words.Count == 0)
                    {
                        throw new NginxConfigException(file, token.Line, "unexpected \"{\"");
                    }

                    var block = ParseBlock(tokens, file, words[0].Text, words[0].Line);
                    directives.Add(new NginxDirective(words[0].Text, words.Skip(1).Select(w => w.Text).ToArray(), file, words[0].Line, block));
                    words.Clear();
                    break;
                case TokenKind.CloseBrace:
                    if (words.Count > 0)
                    {
                        throw new NginxConfigException(file, token.Line, $"unexpected \"}}\" after \"{words[0].Text}\" (missing \";\"?)");
                    }

                    if (blockName is null)
                    {
                        throw new NginxConfigException(file, token.Line, "unexpected \"}\"");
                    }

                    return directives;
            }
        }

        if (words.Count > 0)
        {
            throw new NginxConfigException(file, words[0].Line, $"unexpected end of file after \"{words[0].Text}\", expecting \";\" or \"}}\"");
        }

        if (blockName is not null)
        {
            throw new NginxConfigException(file, blockLine, $"unexpected end of file, \"{blockName}\" block is not closed (expecting \"}}\")");
        }

        return directives;
    }

    private List<NginxDirective> Include(NginxDirective include)
    {
        if (include.Args.Count != 1)
        {
            throw new NginxConfigException(include.File, include.Line, "\"include\" takes exactly one argument");
        }

        var pattern = include.Args[0];
        var full = Path.IsPathRooted(pattern) ? pattern : Path.Combine(_prefix, pattern);
        var included = new List<NginxDirective>();
        if (pattern.AsSpan().IndexOfAny("*?[") < 0)
        {
            // A plain path must exist (nginx: open() failed); a glob may match nothing.
            if (!File.Exists(full))
            {
                throw new NginxConfigException(include.File, include.Line, $"include \"{full}\": no such file");
            }

            included.AddRange(ParseIncluded(full, include.File, include.Line));
            return included;
        }

        // glob(3) returns matches sorted, which is the order nginx reads them in.
        foreach (var file in Glob(full).Order(StringComparer.Ordinal))
        {
            included.AddRange(ParseIncluded(file, include.File, include.Line));
        }

        return included;
    }

    /// <summary>Matches <c>*</c> and <c>?</c> in any path segment; files only.</summary>
    private static IEnumerable<string> Glob(string pattern)
    {
        var root = Path.GetPathRoot(pattern) ?? "";
        var segments = pattern[root.Length..].Split(Path.DirectorySeparatorChar, StringSplitOptions.RemoveEmptyEntries);
        IEnumerable<string> current = [root.Length == 0 ? "." : root];
        for (var i = 0; i < segments.Length; i++)
        {
            var segment = segments[i];
            var last = i == segments.Length - 1;
            current = current.SelectMany(dir => Expand(dir, segment, last)).ToList();
        }

        return current;

        static IEnumerable<string> Expand(string dir, string segment, bool last)
        {
            if (!Directory.Exists(dir))
            {
                return [];
            }

            if (segment.AsSpan().IndexOfAny("*?[") < 0)
            {
                var path = Path.Combine(dir, segment);
                return last ? (File.Exists(path) ? [path] : []) : (Directory.Exists(path) ? [path] : []);
            }

            var entries = last ? Directory.EnumerateFiles(dir) : Directory.EnumerateDirectories(dir);
            return entries.Where(e => FileSystemName.MatchesSimpleExpression(segment, Path.GetFileName(e), ignoreCase: false));
        }
    }

    private enum TokenKind
    {
        Word,
        Semicolon,
        OpenBrace,
        CloseBrace,
    }

    private readonly record struct Token(TokenKind Kind, string Text, int Line, bool Quoted);

    private sealed class Tokenizer(string text, string file)
    {
        private int _pos;
        private int _line = 1;

        public IEnumerable<Token> Tokens()
        {
            while (true)
            {
                SkipSpaceAndComments();
                if (_pos >= text.Length)
                {
                    yield break;
                }

                var ch = text[_pos];
                var line = _line;
                switch (ch)
                {
                    case ';':
                        _pos++;
                        yield return new Token(TokenKind.Semicolon, ";", line, false);
                        break;
                    case '{':
                        _pos++;
                        yield return new Token(TokenKind.OpenBrace, "{", line, false);
                        break;
                    case '}':
                        _pos++;
                        yield return new Token(TokenKind.CloseBrace, "}", line, false);
                        break;
                    case '"' or '\'':
                        yield return new Token(TokenKind.Word, Quoted(ch), line, true);
                        break;
                    default:
                        yield return new Token(TokenKind.Word, Word(), line, false);
                        break;
                }
            }
        }

        private void SkipSpaceAndComments()
        {
            while (_pos < text.Length)
            {
                var ch = text[_pos];
                if (ch == '#')
                {
                    while (_pos < text.Length && text[_pos] != '\n')
                    {
                        _pos++;
                    }
                }
                else if (char.IsWhiteSpace(ch))
                {
                    if (ch == '\n')
                    {
                        _line++;
                    }

                    _pos++;
                }
                else
                {
                    return;
                }
            }
        }

        private string Quoted(char quote)
        {
            var startLine = _line;
            var value = new StringBuilder();
            _pos++;
            while (_pos < text.Length)
            {
                var ch = text[_pos++];
                if (ch == quote)
                {
                    // ngx_conf_read_token: after a quoted word comes whitespace, ";", "{" or ")".
                    if (_pos < text.Length && !char.IsWhiteSpace(text[_pos]) && text[_pos] is not (';' or '{' or ')'))
                    {
                        throw new NginxConfigException(file, _line, $"unexpected \"{text[_pos]}\" after a quoted string");
                    }

                    return value.ToString();
                }

                if (ch == '\n')
                {
                    _line++;
                }

                if (ch == '\\' && _pos < text.Length)
                {
                    AppendEscape(value, text[_pos++]);
                    continue;
                }

                value.Append(ch);
            }

            throw new NginxConfigException(file, startLine, "unexpected end of file, unterminated quoted string");
        }

        private string Word()
        {
            var value = new StringBuilder();
            var variable = false;
            while (_pos < text.Length)
            {
                var ch = text[_pos];
                if (ch == '{' && variable)
                {
                    // "${name}": the brace opens a variable name, not a block.
                    value.Append(ch);
                    _pos++;
                    continue;
                }

                variable = false;
                if (char.IsWhiteSpace(ch) || ch is ';' or '{')
                {
                    break;
                }

                _pos++;
                if (ch == '\\' && _pos < text.Length)
                {
                    AppendEscape(value, text[_pos++]);
                    continue;
                }

                variable = ch == '$';
                value.Append(ch);
            }

            return value.ToString();
        }

        // The escapes nginx resolves when it copies a word (ngx_conf_read_token); any other "\x" keeps its backslash,
        // which is how regular expressions such as "\.php$" survive.
        private static void AppendEscape(StringBuilder value, char next)
        {
            switch (next)
            {
                case '"' or '\'' or '\\':
                    value.Append(next);
                    break;
                case 't':
                    value.Append('\t');
                    break;
                case 'r':
                    value.Append('\r');
                    break;
                case 'n':
                    value.Append('\n');
                    break;
                default:
                    value.Append('\\').Append(next);
                    break;
            }
        }
    }
}
