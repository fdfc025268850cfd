using Ferry.AccessLog;
using Ferry.Configuration;
using Ferry.Tests.Support;
using Microsoft.Extensions.Logging.Abstractions;

namespace Ferry.Tests.AccessLog;

public sealed class AccessLogWriterTests : IAsyncLifetime
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(10);
    private readonly TestRecords _records = new();
    private readonly string _directory = Directory.CreateTempSubdirectory("ferry-access-log-").FullName;

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        await _records.DisposeAsync();
        Directory.Delete(_directory, recursive: true);
    }

    [Fact]
    public async Task FullChannel_DropsAndCounts_WithoutBlocking()
    {
        var stream = new GatedStream();
        var writer = new AccessLogWriter(AccessLogConfig.Default with { BufferSize = 2 }, NullLogger.Instance, stream);
        try
        {
            // The first line reaches the stream, whose write then blocks: the writer is stuck behind a slow disk.
            writer.Enqueue(_records.Reused());
            await stream.WriteEntered.Task.WaitAsync(Bound);

            // Two more fill the channel; every further one is dropped at once.
            for (var i = 0; i < 5; i++)
            {
                writer.Enqueue(_records.Reused());
            }

            Assert.Equal(3, writer.Dropped);
        }
        finally
        {
            stream.Release.Set();
            await writer.DisposeAsync().AsTask().WaitAsync(Bound);
        }
        Assert.Equal(3, writer.Written);
        Assert.Equal(3, stream.Lines);
    }

    [Fact]
    public async Task DisposeAsync_WritesEveryQueuedLine()
    {
        var path = Path.Combine(_directory, "access.log");
        var writer = new AccessLogWriter(new AccessLogConfig(true, AccessLogFormat.Json, path, 64), NullLogger<AccessLogWriter>.Instance);
        for (var i = 0; i < 10; i++)
        {
            writer.Enqueue(_records.Reused());
        }

        await writer.DisposeAsync().AsTask().WaitAsync(Bound);

        Assert.Equal(10, File.ReadAllLines(path).Length);
        Assert.Equal(0, writer.Dropped);
    }

    [Fact]
    public async Task Reopen_AfterRename_ContinuesInANewFile()
    {
        var path = Path.Combine(_directory, "access.log");
        var writer = new AccessLogWriter(new AccessLogConfig(true, AccessLogFormat.Combined, path, 64), NullLogger<AccessLogWriter>.Instance);
        try
        {
            writer.Enqueue(_records.Reused());
            await WaitForWrittenAsync(writer, 1);

            // What logrotate does before sending SIGHUP.
            File.Move(path, path + ".1");
            writer.Enqueue(_records.Replayed());
            await WaitForWrittenAsync(writer, 2);
            writer.Reopen();
            writer.Enqueue(_records.BadGateway());
        }
        finally
        {
            await writer.DisposeAsync().AsTask().WaitAsync(Bound);
        }

        var rotated = File.ReadAllLines(path + ".1");
        var current = File.ReadAllLines(path);
        Assert.Equal(2, rotated.Length);
        Assert.Contains("\"GET /items", rotated[0]);
        Assert.Contains("\"PUT /orders/1", rotated[1]);
        Assert.Contains("\"GET / HTTP/1.1\" 502", Assert.Single(current));
    }

    [Fact]
    public async Task Reopen_OnStdout_KeepsWriting()
    {
        var stream = new MemoryStream();
        var writer = new AccessLogWriter(AccessLogConfig.Default, NullLogger.Instance, stream);
        writer.Reopen();
        writer.Enqueue(_records.Reused());
        await writer.DisposeAsync().AsTask().WaitAsync(Bound);

        Assert.Equal(1, writer.Written);
        Assert.False(writer.IsFile);
    }

    private static async Task WaitForWrittenAsync(AccessLogWriter writer, long lines)
    {
        // The writer runs on its own task; its counter is the only signal that a line is on disk.
        var deadline = DateTime.UtcNow + Bound;
        while (writer.Written < lines)
        {
            Assert.True(DateTime.UtcNow < deadline, $"only {writer.Written} of {lines} lines written");
            await Task.Delay(5);
        }
    }

    // A stream whose writes wait until the test releases them, standing in for a stalled disk or a blocked pipe.
    private sealed class GatedStream : Stream
    {
        public TaskCompletionSource WriteEntered { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public ManualResetEventSlim Release { get; } = new();
        public int Lines { get; private set; }

        public override void Write(ReadOnlySpan<byte> buffer)
        {
            WriteEntered.TrySetResult();
            Release.Wait(Bound);
            Lines += buffer.ToArray().Count(b => b == '\n');
        }

        public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

        public override void Flush()
        {
        }

        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
    }
}
