// LoopIo: a measurement tool, not a proxy. It answers one question for Ferry's event loops (issue 14,
// docs/decisions/2026-12-03-io-uring.md): what does a proxied request cost in CPU on a loop driven by epoll with
// non-blocking recv/send (as Ferry's loops are), and on one driven by io_uring? It is the smallest relay that makes
// the same system calls per request as a proxy would: N single-threaded loops, each with its own listener
// (SO_REUSEPORT), each client connection paired with one upstream connection opened by the same loop, the client's
// bytes sent to the upstream and the upstream's back, both as they come. Pairing a client with an upstream
// connection for life makes HTTP/1.1 framing unnecessary: it relays GET / and any other exchange nginx answers on a
// kept-alive connection, and an upstream's close (nginx's keepalive_requests) closes its client, which reconnects.
// No TLS, no HTTP parsing, no pooling, no timeouts, 127.0.0.1 only; it runs for --duration seconds or until SIGTERM.
//
//   LoopIo --listen 127.0.0.1:8080 --upstream 127.0.0.1:8081 --backend epoll|uring [--loops 2] [--duration 0]
//          [--uring-setup defer|coop|plain] [--uring-recv multishot|single]
//   LoopIo --probe        what this kernel's io_uring accepts
//
// Exit status: 0 after --duration or SIGTERM; 2 bad arguments; 3 io_uring refused by the kernel (setup, a flag,
// or multishot receive); 1 anything else.
using System.Runtime.InteropServices;
using LoopIo;

const int ExitRefused = 3;

string? Option(string name)
{
    var i = Array.IndexOf(args, name);
    return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
}

static ushort Port(string? value, string name)
{
    var text = value?.StartsWith("127.0.0.1:", StringComparison.Ordinal) == true ? value["127.0.0.1:".Length..] : value;
    if (!ushort.TryParse(text, out var port) || port == 0)
    {
        Console.Error.WriteLine($"loopio: {name} needs 127.0.0.1:PORT or PORT (got '{value}')");
        Environment.Exit(2);
    }
    return port;
}

if (args.Contains("--probe"))
{
    return Probe.Run();
}

var listenPort = Port(Option("--listen"), "--listen");
var upstreamPort = Port(Option("--upstream"), "--upstream");
var backend = Option("--backend") ?? "epoll";
var loopCount = int.TryParse(Option("--loops") ?? "2", out var l) && l > 0 ? l : 0;
var duration = int.TryParse(Option("--duration") ?? "0", out var d) && d >= 0 ? d : -1;
uint? setupFlags = (Option("--uring-setup") ?? "defer") switch
{
    "defer" => Uring.SetupSingleIssuer | Uring.SetupDeferTaskrun | Uring.SetupSubmitAll,
    "coop" => Uring.SetupSingleIssuer | Uring.SetupCoopTaskrun | Uring.SetupSubmitAll,
    "plain" => 0u,
    _ => null,
};
var recvMode = Option("--uring-recv") ?? "multishot";
if (backend is not ("epoll" or "uring") || loopCount == 0 || duration < 0 || setupFlags is null || recvMode is not ("multishot" or "single"))
{
    Console.Error.WriteLine("loopio: --backend epoll|uring, --loops N>0, --duration S>=0, --uring-setup defer|coop|plain, --uring-recv multishot|single");
    return 2;
}

var loops = new ILoop[loopCount];
var threads = new Thread[loopCount];
var ready = new CountdownEvent(loopCount);
Exception? setupError = null;
for (var i = 0; i < loopCount; i++)
{
    ILoop loop = backend == "epoll"
        ? new EpollLoop(i, listenPort, upstreamPort)
        : new UringLoop(i, listenPort, upstreamPort, setupFlags.Value, recvMode == "multishot");
    loops[i] = loop;
    threads[i] = new Thread(() =>
    {
        try
        {
            loop.Setup();
        }
        catch (Exception e)
        {
            setupError ??= e;
            ready.Signal();
            return;
        }
        ready.Signal();
        try
        {
            loop.Run();
        }
        catch (Exception e)
        {
            Console.Error.WriteLine($"loopio: a loop failed: {e}");
            Environment.Exit(e is UringRefusedException ? ExitRefused : 1);
        }
    })
    { IsBackground = true, Name = $"loopio-{i}" };
    threads[i].Start();
}
ready.Wait();
if (setupError is not null)
{
    Console.Error.WriteLine($"loopio: {setupError.Message}");
    return setupError is UringRefusedException ? ExitRefused : 1;
}
foreach (var loop in loops)
{
    Console.WriteLine(loop.Describe());
}
Console.WriteLine($"listening on 127.0.0.1:{listenPort}, upstream 127.0.0.1:{upstreamPort}");

void Stop()
{
    foreach (var (loop, i) in loops.Select((loop, i) => (loop, i)))
    {
        Console.WriteLine($"loop {i}: {loop.Stats}");
    }
    Environment.Exit(0);
}

using var term = PosixSignalRegistration.Create(PosixSignal.SIGTERM, context =>
{
    context.Cancel = true;
    Stop();
});
using var interrupt = PosixSignalRegistration.Create(PosixSignal.SIGINT, context =>
{
    context.Cancel = true;
    Stop();
});
if (duration > 0)
{
    Thread.Sleep(TimeSpan.FromSeconds(duration));
    Stop();
}
Thread.Sleep(Timeout.Infinite);
return 0;

namespace LoopIo
{
    internal interface ILoop
    {
        LoopStats Stats { get; }

        /// <summary>Runs on the loop's own thread before <see cref="Run"/>; throws when the back end is refused.</summary>
        void Setup();

        void Run();

        string Describe();
    }

    /// <summary>Written by the loop's thread only; read once, at exit.</summary>
    internal sealed class LoopStats
    {
        public long Waits;
        public long Events;
        public long Receives;
        public long Sends;
        public long Accepted;
        public long Closed;
        public long Starved;
        public Func<long>? ExtraEnters;

        public override string ToString() =>
            $"{Waits} waits (epoll_wait or io_uring_enter), {Events} events or completions, {Receives} receives with data, " +
            $"{Sends} sends, {Accepted} accepted, {Closed} closed, {Starved} receives out of buffers" +
            (ExtraEnters is null ? "" : $", {ExtraEnters()} extra io_uring_enter to free submission slots");
    }
}
