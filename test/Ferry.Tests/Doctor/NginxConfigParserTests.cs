using Ferry.Doctor;
using Ferry.Tests.Support;

namespace Ferry.Tests.Doctor;

public sealed class NginxConfigParserTests
{
    private static IReadOnlyList<NginxDirective> Parse(string text) => NginxConfigParser.ParseText(text, "test.conf", "/nonexistent");

    [Fact]
    public void TokenizesLikeNginx()
    {
        var directives = Parse("""
            # a comment line
            log_format main '$remote_addr "$request"' ;   # trailing comment
            set $x "a \"quoted\" \\ value";
            add_header X-Tab "a\tb";
            rewrite ^/(.*)\.php$ /$1 last;
            return 200 ${scheme}://x#not-a-comment;
            proxy_set_header Connection "";
            a;b;
            """);

        Assert.Equal(["log_format", "set", "add_header", "rewrite", "return", "proxy_set_header", "a", "b"], directives.Select(d => d.Name));
        Assert.Equal(["main", "$remote_addr \"$request\""], directives[0].Args);
        Assert.Equal(2, directives[0].Line);
        Assert.Equal(["$x", "a \"quoted\" \\ value"], directives[1].Args);
        Assert.Equal("a\tb", directives[2].Arg(1));
        // Unknown escapes keep their backslash, so regular expressions survive.
        Assert.Equal(@"^/(.*)\.php$", directives[3].Arg(0));
        // "${scheme}" is a variable, not a block; "#" inside a word is not a comment.
        Assert.Equal(["200", "${scheme}://x#not-a-comment"], directives[4].Args);
        Assert.Equal(["Connection", ""], directives[5].Args);
        Assert.Equal(8, directives[6].Line);
    }

    [Fact]
    public void ParsesNestedBlocksWithLines()
    {
        var directives = Parse("http {\n  server {\n    listen 80;\n    location = /x { proxy_pass http://b; }\n  }\n}\n");
        var http = Assert.Single(directives);
        var server = Assert.Single(http.Block!);
        Assert.Equal(2, server.Line);
        var location = server.Child("location")!;
        Assert.Equal(["=", "/x"], location.Args);
        Assert.Equal(4, location.Line);
        Assert.Equal("http://b", location.Child("proxy_pass")!.Arg(0));
        Assert.Equal(4, location.Child("proxy_pass")!.Line);
    }

    [Theory]
    [InlineData("http {\n server {\n", 2, "\"server\" block is not closed")]
    [InlineData("listen 80;\n}\n", 2, "unexpected \"}\"")]
    [InlineData("http {\n listen 80\n}\n", 3, "missing \";\"")]
    [InlineData("listen 80", 1, "unexpected end of file")]
    [InlineData("a \"unterminated;\n", 1, "unterminated quoted string")]
    [InlineData("a \"b\"c;\n", 1, "after a quoted string")]
    [InlineData("{ a; }", 1, "unexpected \"{\"")]
    public void ReportsSyntaxErrorsWithFileAndLine(string text, int line, string message)
    {
        var e = Assert.Throws<NginxConfigException>(() => Parse(text));
        Assert.Equal("test.conf", e.File);
        Assert.Equal(line, e.Line);
        Assert.Contains(message, e.Message);
    }

    [Fact]
    public void ExpandsIncludeGlobsRelativeToTheMainFileInSortedOrder()
    {
        using var dir = new TempDirectory();
        var main = dir.Write("nginx.conf", "http {\n    include conf.d/*.conf;\n    include extra/upstreams;\n}\n");
        dir.Write("conf.d/b.conf", "server { listen 81; }\n");
        dir.Write("conf.d/a.conf", "server { listen 80; }\n# nginx resolves includes against its prefix, not this file's directory\ninclude extra/upstreams;\n");
        dir.Write("conf.d/ignored.txt", "this is not read;\n");
        dir.Write("extra/upstreams", "upstream u { server 10.0.0.1; }\n");

        var (directives, files) = NginxConfigParser.ParseFile(main);

        var http = Assert.Single(directives).Block!;
        Assert.Equal(["server", "upstream", "server", "upstream"], http.Select(d => d.Name));
        Assert.Equal(Path.Combine(dir.Path, "conf.d/a.conf"), http[0].File);
        Assert.Equal(1, http[0].Line);
        Assert.Equal(Path.Combine(dir.Path, "extra/upstreams"), http[1].File);
        Assert.Equal(Path.Combine(dir.Path, "conf.d/b.conf"), http[2].File);
        Assert.Equal(5, files.Count);
    }

    [Fact]
    public void AGlobMatchingNothingIsFineAMissingFileIsNot()
    {
        using var dir = new TempDirectory();
        var main = dir.Write("nginx.conf", "include sites-enabled/*;\nevents {}\n");
        Assert.Equal("events", Assert.Single(NginxConfigParser.ParseFile(main).Directives).Name);

        var missing = dir.Write("missing.conf", "\ninclude nope.conf;\n");
        var e = Assert.Throws<NginxConfigException>(() => NginxConfigParser.ParseFile(missing));
        Assert.Equal(2, e.Line);
        Assert.Contains("no such file", e.Message);
    }

    [Fact]
    public void ReportsIncludeCycles()
    {
        using var dir = new TempDirectory();
        var main = dir.Write("nginx.conf", "include a.conf;\n");
        dir.Write("a.conf", "include b.conf;\n");
        dir.Write("b.conf", "\ninclude a.conf;\n");

        var e = Assert.Throws<NginxConfigException>(() => NginxConfigParser.ParseFile(main));
        Assert.Equal(Path.Combine(dir.Path, "b.conf"), e.File);
        Assert.Equal(2, e.Line);
        Assert.Contains("include cycle", e.Message);
    }

    [Theory]
    [InlineData("60s", 60_000)]
    [InlineData("60", 60_000)]
    [InlineData("500ms", 500)]
    [InlineData("1m30s", 90_000)]
    [InlineData("1h", 3_600_000)]
    [InlineData("2d", 172_800_000)]
    public void ParsesNginxTimes(string text, long milliseconds)
    {
        Assert.True(NginxTime.TryParse(text, out var value));
        Assert.Equal(TimeSpan.FromMilliseconds(milliseconds), value);
    }

    [Theory]
    [InlineData("")]
    [InlineData("s")]
    [InlineData("5x")]
    [InlineData("-5s")]
    public void RejectsBadNginxTimes(string text) => Assert.False(NginxTime.TryParse(text, out _));
}
