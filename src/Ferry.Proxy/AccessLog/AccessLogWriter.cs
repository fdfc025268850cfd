using System.Buffers;
using System.Runtime.InteropServices;
using System.Threading.Channels;
using Ferry.Configuration;
using Ferry.Forwarding;

namespace Ferry.AccessLog;

// Writes access log lines off the request path: requests hand their record to a bounded channel and never wait;
// one background task formats and writes. When the channel is full the record is dropped and counted, because a
// slow disk must never slow down (or stop) proxying.
internal sealed partial class AccessLogWriter : IAsyncDisposable
{
    // Lines are written to the stream in batches of about this size, then flushed when the channel runs dry.
    private const int BatchBytes = 64 * 1024;

    private readonly AccessLogConfig _config;
    private readonly ILogger _logger;
    private readonly Channel<RequestRecord> _channel;
    private readonly Lock _streamLock = new();
    private readonly Task _loop;
    private Stream _stream;
    private long _dropped;  // records that could not be queued (channel full, writer stopped) or failed to write
    private long _written;  // lines written to the stream
    private PosixSignalRegistration? _sighup;

    // Opens the destination now, so that a bad path fails at startup rather than at the first request.
    public AccessLogWriter(AccessLogConfig config, ILogger<AccessLogWriter> logger)
        : this(config, logger, Open(config.Path))
    {
    }

    internal AccessLogWriter(AccessLogConfig config, ILogger logger, Stream stream)
    {
        _config = config;
        _logger = logger;
        _stream = stream;
        _channel = Channel.CreateBounded<RequestRecord>(new BoundedChannelOptions(config.BufferSize)
        {
            // Wait (not DropWrite) so that TryWrite reports a full channel and the drop can be counted.
            FullMode = BoundedChannelFullMode.Wait,
            SingleReader = true,
        });
        _loop = Task.Run(RunAsync);
    }

    public long Dropped => Interlocked.Read(ref _dropped);

    public long Written => Interlocked.Read(ref _written);

    public bool IsFile => !IsStdout(_config.Path);

    // Never blocks: the record is queued or dropped. The caller must not change the record afterwards.
    public void Enqueue(RequestRecord record)
    {
        if (!_channel.Writer.TryWrite(record))
        {
            Interlocked.Increment(ref _dropped);
        }
    }

    // Log rotation: `mv access.log access.log.1 && kill -HUP <ferry>` makes Ferry continue in a new access.log,
    // like nginx's USR1 (logrotate's usual postrotate step). Lines already written stay in the renamed file.
    public void ListenForSighup()
    {
        if (IsFile && !OperatingSystem.IsWindows())
        {
            _sighup = PosixSignalRegistration.Create(PosixSignal.SIGHUP, context =>
            {
                // Handled: the default action of SIGHUP would end the process.
                context.Cancel = true;
                Reopen();
            });
        }
    }

    // Closes the file and opens the configured path again (a new file if the old one was renamed).
    public void Reopen()
    {
        if (!IsFile)
        {
            return;
        }
        lock (_streamLock)
        {
            try
            {
                var reopened = Open(_config.Path);
                _stream.Flush();
                _stream.Dispose();
                _stream = reopened;
                LogReopened(_config.Path);
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                // Keep writing to the old file rather than losing lines.
                LogReopenFailed(_config.Path, ex.Message);
            }
        }
    }

    private async Task RunAsync()
    {
        var buffer = new ArrayBufferWriter<byte>(BatchBytes);
        var reader = _channel.Reader;
        var pending = 0;
        while (await reader.WaitToReadAsync().ConfigureAwait(false))
        {
            while (reader.TryRead(out var record))
            {
                try
                {
                    AccessLogFormatter.Write(_config.Format, record, buffer);
                    pending++;
                }
                catch (Exception ex) when (ex is InvalidOperationException or ArgumentException)
                {
                    Interlocked.Increment(ref _dropped);
                    LogFormatFailed(ex.Message);
                }
                if (buffer.WrittenCount >= BatchBytes)
                {
                    WriteBatch(buffer, pending, flush: false);
                    pending = 0;
                }
            }
            WriteBatch(buffer, pending, flush: true);
            pending = 0;
        }
    }

    private void WriteBatch(ArrayBufferWriter<byte> buffer, int lines, bool flush)
    {
        lock (_streamLock)
        {
            try
            {
                if (buffer.WrittenCount > 0)
                {
                    _stream.Write(buffer.WrittenSpan);
                    Interlocked.Add(ref _written, lines);
                }
                if (flush)
                {
                    _stream.Flush();
                }
            }
            catch (IOException ex)
            {
                Interlocked.Add(ref _dropped, lines);
                LogWriteFailed(_config.Path, ex.Message);
            }
        }
        buffer.ResetWrittenCount();
    }

    private static bool IsStdout(string path) => path.Equals(AccessLogConfig.Stdout, StringComparison.OrdinalIgnoreCase);

    private static Stream Open(string path)
    {
        if (IsStdout(path))
        {
            return Console.OpenStandardOutput();
        }
        var directory = Path.GetDirectoryName(Path.GetFullPath(path));
        if (directory is not null)
        {
            Directory.CreateDirectory(directory);
        }
        // Delete sharing lets a rotation tool rename or remove the file while it is open.
        return new FileStream(path, FileMode.Append, FileAccess.Write, FileShare.ReadWrite | FileShare.Delete, bufferSize: 0);
    }

    // Drains what is queued (bounded by the host's shutdown timeout through the caller), then closes the file.
    public async ValueTask DisposeAsync()
    {
        _sighup?.Dispose();
        _channel.Writer.TryComplete();
        await _loop.ConfigureAwait(false);
        lock (_streamLock)
        {
            _stream.Flush();
            _stream.Dispose();
        }
    }

    [LoggerMessage(EventId = 101, Level = LogLevel.Information, Message = "access log reopened: {Path}")]
    private partial void LogReopened(string path);

    [LoggerMessage(EventId = 102, Level = LogLevel.Error, Message = "access log {Path} could not be reopened, still writing to the previous file: {Reason}")]
    private partial void LogReopenFailed(string path, string reason);

    [LoggerMessage(EventId = 103, Level = LogLevel.Error, Message = "access log {Path}: write failed, lines dropped: {Reason}")]
    private partial void LogWriteFailed(string path, string reason);

    [LoggerMessage(EventId = 104, Level = LogLevel.Error, Message = "access log line could not be formatted: {Reason}")]
    private partial void LogFormatFailed(string reason);
}
