using System.Runtime.InteropServices;

namespace LoopIo;

/// <summary>
/// The epoll back end, done as Ferry's loops do it (src/Ferry.Proxy/Loops): non-blocking sockets registered once,
/// edge-triggered, for input, output and the peer's close; a read is tried at once when the loop's readiness flag says
/// the socket may hold data, and a read that did not fill its buffer drained the socket, so the flag drops and the next
/// read waits for the next edge without a system call; a write is tried at once and waits for EPOLLOUT only after
/// EAGAIN.
/// </summary>
internal sealed unsafe class EpollLoop : ILoop
{
    private const int MaxEvents = 256;
    private const int AcceptsPerWake = 16;
    private const ulong ListenerToken = ulong.MaxValue;

    private readonly int _index;
    private readonly ushort _upstreamPort;
    private readonly ushort _listenPort;
    private readonly List<Pair> _pairs = [];
    private readonly Stack<int> _free = new();

    private int _listener;
    private int _epoll;
    private Sys.EpollEvent* _events;

    public EpollLoop(int index, ushort listenPort, ushort upstreamPort)
    {
        _index = index;
        _listenPort = listenPort;
        _upstreamPort = upstreamPort;
    }

    public void Setup()
    {
        _listener = Sys.Listen(_listenPort, nonBlocking: true);
        _epoll = Sys.epoll_create1(Sys.SockCloexec);
        Sys.Check(_epoll, "epoll_create1");
        Sys.EpollCtl(_epoll, Sys.EpollCtlAdd, _listener, Sys.EpollIn, ListenerToken);
        _events = (Sys.EpollEvent*)NativeMemory.Alloc(MaxEvents, (nuint)sizeof(Sys.EpollEvent));
    }

    public LoopStats Stats { get; } = new();

    public string Describe() => $"loop {_index}: epoll, edge-triggered, non-blocking recv/send";

    public void Run()
    {
        while (true)
        {
            var n = Sys.epoll_wait(_epoll, _events, MaxEvents, -1);
            Stats.Waits++;
            if (n < 0)
            {
                if (Sys.Errno == Sys.EIntr)
                {
                    continue;
                }
                throw new IOException($"epoll_wait failed: errno {Sys.Errno}");
            }
            Stats.Events += n;
            for (var i = 0; i < n; i++)
            {
                var ev = _events[i];
                if (ev.Data == ListenerToken)
                {
                    Accept();
                    continue;
                }
                var index = (int)((ev.Data >> 1) & 0x7FFFFFFF);
                var pair = _pairs[index];
                // An event read in the same batch as its pair's close, or for a slot given to a new pair since.
                if (pair.Closed || pair.Generation != (uint)(ev.Data >> 32))
                {
                    continue;
                }
                var from = (int)(ev.Data & 1);
                var side = pair.Sides[from];
                if ((ev.Events & (Sys.EpollIn | Sys.EpollRdHup | Sys.EpollHup | Sys.EpollErr)) != 0)
                {
                    side.Readable = true;
                }
                if ((ev.Events & (Sys.EpollRdHup | Sys.EpollHup | Sys.EpollErr)) != 0)
                {
                    side.PeerClosed = true;
                }
                if ((ev.Events & (Sys.EpollOut | Sys.EpollHup | Sys.EpollErr)) != 0)
                {
                    side.Writable = true;
                }
                Pump(pair, from);
                if (!pair.Closed)
                {
                    Pump(pair, 1 - from);
                }
            }
        }
    }

    private void Accept()
    {
        for (var i = 0; i < AcceptsPerWake; i++)
        {
            var client = Sys.accept4(_listener, null, null, Sys.SockNonblock | Sys.SockCloexec);
            if (client < 0)
            {
                var errno = Sys.Errno;
                if (errno is Sys.EAgain or Sys.EIntr)
                {
                    return;
                }
                throw new IOException($"accept4 failed: errno {errno}");
            }
            Stats.Accepted++;
            Sys.SetOption(client, Sys.IpProtoTcp, Sys.TcpNoDelay, 1);
            var upstream = Sys.Connect(_upstreamPort, nonBlocking: true);
            if (upstream < 0)
            {
                Console.Error.WriteLine($"loop {_index}: connect to the upstream failed: errno {-upstream}");
                Sys.close(client);
                continue;
            }
            var pair = Take(client, upstream);
            var events = Sys.EpollIn | Sys.EpollOut | Sys.EpollRdHup | Sys.EpollEt;
            Sys.EpollCtl(_epoll, Sys.EpollCtlAdd, client, events, Token(pair, 0));
            Sys.EpollCtl(_epoll, Sys.EpollCtlAdd, upstream, events, Token(pair, 1));
        }
    }

    private static ulong Token(Pair pair, int side) => ((ulong)pair.Generation << 32) | ((ulong)pair.Index << 1) | (uint)side;

    // Forwards what side `from` has read, and reads more from it, until the peer cannot take more or `from` has nothing.
    private void Pump(Pair pair, int from)
    {
        var source = pair.Sides[from];
        var destination = pair.Sides[1 - from];
        while (true)
        {
            if (source.Length > 0)
            {
                if (!destination.Writable)
                {
                    return;
                }
                var sent = Sys.send(destination.Fd, source.Buffer + source.Offset, source.Length, Sys.MsgNoSignal);
                Stats.Sends++;
                if (sent < 0)
                {
                    if (Sys.Errno == Sys.EAgain)
                    {
                        destination.Writable = false;
                        return;
                    }
                    Close(pair);
                    return;
                }
                source.Offset += (int)sent;
                source.Length -= (int)sent;
                continue;
            }
            if (!source.Readable)
            {
                return;
            }
            var received = Sys.recv(source.Fd, source.Buffer, Side.BufferSize, 0);
            Stats.Receives++;
            if (received < 0)
            {
                if (Sys.Errno == Sys.EAgain)
                {
                    source.Readable = false;
                    return;
                }
                Close(pair);
                return;
            }
            if (received == 0)
            {
                Close(pair);
                return;
            }
            // A short read drained the socket: data arriving later makes a new edge. Not so once the peer has closed,
            // whose end shows only as a read of 0 and brings no further edge.
            if (received < Side.BufferSize && !source.PeerClosed)
            {
                source.Readable = false;
            }
            source.Offset = 0;
            source.Length = (int)received;
        }
    }

    private Pair Take(int client, int upstream)
    {
        Pair pair;
        if (_free.TryPop(out var index))
        {
            pair = _pairs[index];
        }
        else
        {
            pair = new Pair(_pairs.Count);
            _pairs.Add(pair);
        }
        pair.Open(client, upstream);
        return pair;
    }

    private void Close(Pair pair)
    {
        foreach (var side in pair.Sides)
        {
            Sys.EpollCtl(_epoll, Sys.EpollCtlDel, side.Fd, 0, 0);
            Sys.close(side.Fd);
        }
        pair.Closed = true;
        pair.Generation++;
        _free.Push(pair.Index);
        Stats.Closed++;
    }

    private sealed class Pair(int index)
    {
        public readonly int Index = index;
        public readonly Side[] Sides = [new(), new()];
        public uint Generation;
        public bool Closed = true;

        public void Open(int client, int upstream)
        {
            Sides[0].Open(client);
            Sides[1].Open(upstream);
            Closed = false;
        }
    }

    private sealed class Side
    {
        public const int BufferSize = 16384;
        public readonly byte* Buffer = (byte*)NativeMemory.Alloc(BufferSize);
        public int Fd;
        // Bytes read from this side, not yet sent to the other.
        public int Offset;
        public int Length;
        // Epoll said so since the last EAGAIN or short read (Readable), or since the last EAGAIN on send (Writable).
        public bool Readable;
        public bool Writable;
        public bool PeerClosed;

        public void Open(int fd)
        {
            Fd = fd;
            Offset = Length = 0;
            // Registration reports the socket's state as a first edge; until then a read would be a guess.
            Readable = false;
            Writable = true;
            PeerClosed = false;
        }
    }
}
