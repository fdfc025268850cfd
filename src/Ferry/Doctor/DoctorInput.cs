using System.IO.Compression;
using System.Text;

namespace Ferry.Doctor;

internal enum DoctorInputKind
{
    ErrorLog,
    NginxConfig,
}

/// <summary>Opens what `ferry doctor` is given: plain or gzip'd (rotated) text, read as a stream, never loaded whole.</summary>
internal static class DoctorInput
{
    // Non-empty lines inspected to tell a log from a configuration: a log's every line starts with its timestamp.
    private const int SniffLines = 5;

    // nginx formats an error line into a 2048-byte buffer (NGX_MAX_ERROR_STR); anything far longer is not its error
    // log, and bounding lines keeps a file without newlines from being read into memory.
    public const int MaxLineChars = 64 * 1024;

    public static TextReader OpenText(string path)
    {
        var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, 64 * 1024, FileOptions.SequentialScan);
        try
        {
            Span<byte> magic = stackalloc byte[2];
            var read = stream.ReadAtLeast(magic, 2, throwOnEndOfStream: false);
            stream.Position = 0;
            // RFC 1952 §2.3.1: every gzip member starts with ID1 = 0x1f, ID2 = 0x8b, whatever the file is called.
            Stream content = read == 2 && magic[0] == 0x1f && magic[1] == 0x8b
                ? new GZipStream(stream, CompressionMode.Decompress)
                : stream;
            return new StreamReader(content, Encoding.UTF8, detectEncodingFromByteOrderMarks: true, bufferSize: 64 * 1024);
        }
        catch
        {
            stream.Dispose();
            throw;
        }
    }

    public static DoctorInputKind Detect(string path)
    {
        using var reader = OpenText(path);
        var seen = 0;
        foreach (var (line, _) in ReadLines(reader))
        {
            if (line.Trim().Length == 0)
            {
                continue;
            }

            if (ErrorLogLine.LooksLikeErrorLog(line))
            {
                return DoctorInputKind.ErrorLog;
            }

            if (++seen == SniffLines)
            {
                break;
            }
        }

        return DoctorInputKind.NginxConfig;
    }

    /// <summary>Lines of at most <see cref="MaxLineChars"/>; a longer line is cut and flagged as truncated.</summary>
    public static IEnumerable<(string Line, bool Truncated)> ReadLines(TextReader reader)
    {
        var buffer = new char[16 * 1024];
        var line = new StringBuilder();
        var truncated = false;
        int count;
        while ((count = reader.Read(buffer, 0, buffer.Length)) > 0)
        {
            var start = 0;
            for (var i = 0; i < count; i++)
            {
                if (buffer[i] != '\n')
                {
                    continue;
                }

                Append(buffer.AsSpan(start, i - start));
                yield return (TrimCarriageReturn(line), truncated);
                line.Clear();
                truncated = false;
                start = i + 1;
            }

            Append(buffer.AsSpan(start, count - start));
        }

        if (line.Length > 0 || truncated)
        {
            yield return (TrimCarriageReturn(line), truncated);
        }

        void Append(ReadOnlySpan<char> chars)
        {
            var room = MaxLineChars - line.Length;
            if (chars.Length > room)
            {
                truncated = true;
                chars = chars[..room];
            }

            line.Append(chars);
        }
    }

    private static string TrimCarriageReturn(StringBuilder line) =>
        line.Length > 0 && line[^1] == '\r' ? line.ToString(0, line.Length - 1) : line.ToString();
}
