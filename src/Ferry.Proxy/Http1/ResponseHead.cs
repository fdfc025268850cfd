using System.Text;

namespace Ferry.Http1;

/// <summary>One parsed response head. The fields that decide framing and reuse are interpreted while the head is
/// parsed, so nothing downstream re-scans the headers. One instance per connection, reused: Reset() clears it.</summary>
internal sealed class ResponseHead
{
    private readonly List<string> _connectionTokens = [];

    // The previous response's fields. An upstream sends the same values again and again on a connection (Server,
    // Content-Type, Date within its second): a value whose bytes equal the previous response's at the same position,
    // under the same name, reuses that string instead of allocating one. Kestrel reuses request header strings on a
    // connection the same way.
    private List<KeyValuePair<string, string>> _previous = [];

    // Transfer codings seen across every Transfer-Encoding line, and whether the first was "chunked": the only
    // accepted list is exactly one "chunked".
    private int _transferCodingCount;
    private bool _firstCodingIsChunked;

    public ResponseHead()
    {
        Reset();
    }

    /// <summary>100..999.</summary>
    public int StatusCode { get; private set; }

    /// <summary>0 for HTTP/1.0, 1 for HTTP/1.1 (and for a higher 1.x, RFC 9110 §2.5).</summary>
    public int MinorVersion { get; private set; }

    /// <summary>May be empty.</summary>
    public string ReasonPhrase { get; private set; } = string.Empty;

    /// <summary>Every field line in order: name as received, value without surrounding OWS, Latin-1 decoded.</summary>
    public List<KeyValuePair<string, string>> Headers { get; private set; } = [];

    /// <summary>-1 when absent or unusable (see <see cref="ContentLengthError"/>).</summary>
    public long ContentLength { get; private set; }

    /// <summary>At least one Content-Length line was received, valid or not.</summary>
    public bool HasContentLength { get; private set; }

    /// <summary>Set when the Content-Length lines are invalid or disagree; ResponseFraming decides whether that
    /// matters (it does not for HEAD, 1xx, 204 and 304).</summary>
    public Http1Error? ContentLengthError { get; private set; }

    public bool HasTransferEncoding { get; private set; }

    public bool IsChunked => HasTransferEncoding && _transferCodingCount == 1 && _firstCodingIsChunked;

    public bool ConnectionClose { get; private set; }

    public bool ConnectionKeepAlive { get; private set; }

    public bool ConnectionUpgrade { get; private set; }

    /// <summary>The other Connection tokens, lower case: the names of further hop-by-hop fields to strip.</summary>
    public IReadOnlyList<string> ConnectionTokens => _connectionTokens;

    /// <summary>From "Keep-Alive: timeout=N"; -1 when absent or invalid.</summary>
    public int KeepAliveTimeoutSeconds { get; private set; }

    /// <summary>From "Keep-Alive: max=M"; -1 when absent or invalid.</summary>
    public int KeepAliveMax { get; private set; }

    public bool IsInformational => StatusCode is >= 100 and < 200;

    public void Reset()
    {
        StatusCode = 0;
        MinorVersion = 0;
        ReasonPhrase = string.Empty;
        (_previous, Headers) = (Headers, _previous);
        Headers.Clear();
        ContentLength = -1;
        HasContentLength = false;
        ContentLengthError = null;
        HasTransferEncoding = false;
        _transferCodingCount = 0;
        _firstCodingIsChunked = false;
        ConnectionClose = false;
        ConnectionKeepAlive = false;
        ConnectionUpgrade = false;
        _connectionTokens.Clear();
        KeepAliveTimeoutSeconds = -1;
        KeepAliveMax = -1;
    }

    internal void SetStatusLine(int minorVersion, int statusCode, string reasonPhrase)
    {
        MinorVersion = minorVersion;
        StatusCode = statusCode;
        ReasonPhrase = reasonPhrase;
    }

    /// <summary>Adds a validated field and interprets it when it affects framing or reuse.</summary>
    internal void AddField(string name, FramingHeader framing, ReadOnlySpan<byte> value)
    {
        Headers.Add(new(name, DecodeValue(name, value)));
        switch (framing)
        {
            case FramingHeader.ContentLength:
                AddContentLength(value);
                break;
            case FramingHeader.TransferEncoding:
                AddTransferCodings(value);
                break;
            case FramingHeader.Connection:
                AddConnectionOptions(value);
                break;
            case FramingHeader.KeepAlive:
                AddKeepAliveParameters(value);
                break;
        }
    }

    private string DecodeValue(string name, ReadOnlySpan<byte> value)
    {
        var index = Headers.Count;
        if (index < _previous.Count && _previous[index] is var (previousName, previousValue)
            && string.Equals(previousName, name, StringComparison.Ordinal) && Ascii.Equals(value, previousValue))
        {
            return previousValue;
        }
        return Http1Syntax.DecodeLatin1(value);
    }

    private void AddContentLength(ReadOnlySpan<byte> value)
    {
        HasContentLength = true;
        if (ContentLengthError is not null)
        {
            return;
        }

        // RFC 9110 §8.6: a list of identical values ("42, 42", or repeated lines) may be taken as that one value;
        // anything else is unrecoverable framing.
        int count = 0;
        foreach (ReadOnlySpan<byte> element in new FieldListEnumerator(value))
        {
            count++;
            if (!Http1Syntax.TryParseDecimal(element, out long length))
            {
                Fail(Http1Error.InvalidContentLength);
                return;
            }

            if (ContentLength >= 0 && ContentLength != length)
            {
                Fail(Http1Error.ConflictingContentLength);
                return;
            }

            ContentLength = length;
        }

        if (count == 0)
        {
            Fail(Http1Error.InvalidContentLength);
        }

        void Fail(Http1Error error)
        {
            ContentLengthError = error;
            ContentLength = -1;
        }
    }

    private void AddTransferCodings(ReadOnlySpan<byte> value)
    {
        HasTransferEncoding = true;
        foreach (ReadOnlySpan<byte> coding in new FieldListEnumerator(value))
        {
            if (_transferCodingCount++ == 0)
            {
                _firstCodingIsChunked = Ascii.EqualsIgnoreCase(coding, "chunked"u8);
            }
        }
    }

    private void AddConnectionOptions(ReadOnlySpan<byte> value)
    {
        foreach (ReadOnlySpan<byte> option in new FieldListEnumerator(value))
        {
            if (Ascii.EqualsIgnoreCase(option, "close"u8))
            {
                ConnectionClose = true;
            }
            else if (Ascii.EqualsIgnoreCase(option, "keep-alive"u8))
            {
                ConnectionKeepAlive = true;
            }
            else if (Ascii.EqualsIgnoreCase(option, "upgrade"u8))
            {
                ConnectionUpgrade = true;
            }
            else
            {
                _connectionTokens.Add(KnownHeaders.GetLowerCase(option));
            }
        }
    }

    // "Keep-Alive: timeout=5, max=100" (RFC 2068 §19.7.1.1, still what Apache, nginx and Node send). A later valid
    // parameter replaces an earlier one; an invalid one is ignored rather than trusted.
    private void AddKeepAliveParameters(ReadOnlySpan<byte> value)
    {
        foreach (ReadOnlySpan<byte> parameter in new FieldListEnumerator(value))
        {
            int equals = parameter.IndexOf((byte)'=');
            if (equals < 0)
            {
                continue;
            }

            ReadOnlySpan<byte> name = Http1Syntax.TrimOws(parameter[..equals]);
            ReadOnlySpan<byte> argument = Http1Syntax.TrimOws(parameter[(equals + 1)..]);
            if (!Http1Syntax.TryParseDecimal(argument, out long number) || number > int.MaxValue)
            {
                continue;
            }

            if (Ascii.EqualsIgnoreCase(name, "timeout"u8))
            {
                KeepAliveTimeoutSeconds = (int)number;
            }
            else if (Ascii.EqualsIgnoreCase(name, "max"u8))
            {
                KeepAliveMax = (int)number;
            }
        }
    }
}
