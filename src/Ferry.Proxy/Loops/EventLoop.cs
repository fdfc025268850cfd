using System.Collections.Concurrent;
using System.Diagnostics;
using System.IO.Pipelines;
using System.Runtime.CompilerServices;

namespace Ferry.Loops;

/// <summary>What a loop calls when a registered descriptor is ready. Always called on the loop's thread.</summary>
internal interface ILoopHandler
{
    /// <summary><paramref name="events"/>: the epoll flags (EPOLLIN, EPOLLOUT, EPOLLRDHUP, EPOLLHUP, EPOLLERR).</summary>
    void OnEvents(uint events);
}

/// <summary>
/// One thread with its own epoll instance: descriptors registered here have their readiness handled on this thread,
/// and work posted here runs on it, so that a connection's reads, writes and (through <see cref="PipeScheduler"/>)
/// the continuations of whoever reads its pipes run on one thread without a hand-off. Nothing that blocks may run
/// here: every other descriptor of the loop waits meanwhile.
/// <para>Registrations are made and removed on the loop's thread only (<see cref="Register"/>, <see cref="Unregister"/>);
/// other threads <see cref="Post"/> them. That keeps the handler table free of locks, and it is what makes it safe
/// to close a descriptor right after unregistering it: no event for it can be in flight on another thread.</para>
/// </summary>
internal sealed class EventLoop : PipeScheduler, IDisposable
{
    // The eventfd's registration; handler slots are numbered from 0 and never reach this.
    private const ulong WakeToken = ulong.MaxValue;
    private const int MaxEvents = 256;

    private readonly int _epoll;
    private readonly int _wake;
    private readonly Thread _thread;
    private readonly ConcurrentQueue<(Action<object?> Action, object? State)> _work = new();
    private readonly byte[] _events = new byte[MaxEvents * Native.EventSize];
    // Scratch buffers for epoll_ctl and the eventfd: one set per caller side, since Post's signal runs on any thread.
    private readonly byte[] _ctl = new byte[16];
    private readonly byte[] _loopEight = new byte[8];

    // The handler of each slot, and a generation per slot that changes on every unregistration: an event read in
    // the same epoll_wait batch as its descriptor's removal carries the old generation and is dropped, even if the
    // slot was given to a new descriptor meanwhile.
    private ILoopHandler?[] _handlers = new ILoopHandler?[64];
    private uint[] _generations = new uint[64];
    private readonly Stack<int> _free = new();
    private int _nextSlot;
    private int _threadId;
    // 1 while the eventfd has been (or is about to be) signalled and the loop has not drained its queue since: posts
    // meanwhile need no further write(2).
    private int _wakePending;
    private volatile bool _stopping;
    // The thread has ended: what is posted from now on (a connection closed by a pool disposed late) runs on the
    // caller, since no event of the loop can run concurrently any more.
    private volatile bool _stopped;
    private readonly TimerWheel _timers; // loop thread

    public EventLoop(int index)
    {
        Index = index;
        // A stall is the loop thread's real time, whatever clock the server's own rules are given (a test's).
        Activity = new LoopActivity(index, TimeProvider.System);
        _epoll = Native.EpollCreate();
        try
        {
            _wake = Native.EventFd();
            Native.Add(_epoll, _wake, Native.EpollIn, WakeToken, _ctl);
        }
        catch
        {
            Native.Close(_epoll);
            if (_wake > 0)
            {
                Native.Close(_wake);
            }
            throw;
        }
        _thread = new Thread(Run) { IsBackground = true, Name = $"ferry-loop-{index}" };
        // Real time, as for the stall watchdog: a connection whose deadlines follow a test's clock keeps its ITimer.
        _timers = new TimerWheel(TimeProvider.System) { OnError = ex => Logger?.LogError(ex, "Unhandled exception in a timer of event loop {Index}", Index) };
    }

    public int Index { get; }

    /// <summary>Whether the loop is in a batch of work and since when, for <see cref="LoopWatchdog"/>.</summary>
    public LoopActivity Activity { get; }

    /// <summary>Where an exception escaping a handler is reported; set once the host's logging exists.</summary>
    public ILogger? Logger { get; set; }

    /// <summary>
    /// Arms <paramref name="timer"/> in the loop's timer wheel to run, inline on the loop, once
    /// <paramref name="deadline"/> (a <see cref="TimeProvider.System"/> timestamp) has passed; moves it if it is armed.
    /// Loop thread only: a timer is armed, moved, cancelled and fired on one thread, without a lock.
    /// </summary>
    public void ArmTimer(LoopTimer timer, long deadline)
    {
        Debug.Assert(IsOnLoop);
        _timers.Arm(timer, deadline);
    }

    /// <summary>Disarms <paramref name="timer"/> (armed on this loop, or not at all). Loop thread only, or once the
    /// loop has stopped.</summary>
    public void CancelTimer(LoopTimer timer)
    {
        Debug.Assert(IsOnLoop || _stopped);
        _timers.Cancel(timer);
    }

    /// <summary>Timers fired on this loop since it started: not those cancelled in time, but those that found their
    /// owner's deadline moved or cleared when they fired.</summary>
    public long TimersFired => _timers.Fired;

    /// <summary>Descriptors registered now: what a test checks comes back to its starting value.</summary>
    public int Registered { get; private set; }

    private int _clients;

    /// <summary>Client connections given to this loop and not closed yet; read from any thread to balance accepts.</summary>
    public int Clients => Volatile.Read(ref _clients);

    /// <summary>Counts a client connection given to the loop, from the accepting thread; <see cref="ClientClosed"/> ends it.</summary>
    public void ClientAssigned() => Interlocked.Increment(ref _clients);

    public void ClientClosed() => Interlocked.Decrement(ref _clients);

    public bool IsOnLoop => Environment.CurrentManagedThreadId == Volatile.Read(ref _threadId);

    /// <summary>The thread has ended (<see cref="Dispose"/>): what is posted from now on runs on its caller.</summary>
    public bool IsStopped => _stopped;

    /// <summary>
    /// Awaited, continues the async method on the loop: at once when it runs there already, else through
    /// <see cref="Post"/> (after the loop has stopped: on the thread that posts).
    /// </summary>
    public LoopSwitch SwitchTo() => new(this);

    public void Start() => _thread.Start();

    /// <summary>Runs <paramref name="action"/> on the loop after what is queued; from any thread.</summary>
    public void Post(Action<object?> action, object? state)
    {
        _work.Enqueue((action, state));
        if (_stopped)
        {
            RunLeftovers();
            return;
        }
        if (IsOnLoop)
        {
            // The loop drains its queue after this batch and does not sleep while work is queued: no wake-up needed.
            return;
        }
        if (Interlocked.Exchange(ref _wakePending, 1) == 0)
        {
            // A buffer per call: Post runs on any thread. Cheap next to the write(2) it goes with.
            Native.Signal(_wake, new byte[8]);
        }
    }

    /// <summary>
    /// Pipes use the loop as their scheduler: a continuation runs inline when it becomes ready on the loop (the
    /// request runs on the thread that read its bytes), and is posted to the loop from any other thread.
    /// </summary>
    public override void Schedule(Action<object?> action, object? state)
    {
        if (IsOnLoop)
        {
            action(state);
        }
        else
        {
            Post(action, state);
        }
    }

    /// <summary>
    /// A scheduler that always queues to the loop, even from the loop: what it schedules runs after the current batch
    /// of events. The send side of a client connection uses it, so that what several events of one batch wrote (a
    /// large response relayed in 16 KiB reads) leaves in one system call rather than one per write.
    /// </summary>
    public PipeScheduler Deferred => _deferred ??= new DeferredScheduler(this);

    private DeferredScheduler? _deferred;

    private sealed class DeferredScheduler(EventLoop loop) : PipeScheduler
    {
        public override void Schedule(Action<object?> action, object? state) => loop.Post(action, state);
    }

    /// <summary>
    /// Resumes the awaiting method on the loop after the work queued there now: a relay that writes a large response
    /// lets the connection's deferred send drain the output before it writes more.
    /// </summary>
    public LoopYield Yield() => new(this);

    /// <summary>The awaitable of <see cref="Yield"/>; the default one completes at once.</summary>
    public readonly struct LoopYield(EventLoop? loop) : ICriticalNotifyCompletion
    {
        public LoopYield GetAwaiter() => this;

        public bool IsCompleted => loop is null;

        public void GetResult()
        {
        }

        public void OnCompleted(Action continuation)
        {
            var context = ExecutionContext.Capture();
            UnsafeOnCompleted(context is null ? continuation : () => ExecutionContext.Run(context, static c => ((Action)c!)(), continuation));
        }

        public void UnsafeOnCompleted(Action continuation) => loop!.Post(static c => ((Action)c!)(), continuation);
    }

    /// <summary>Runs <paramref name="action"/> on the loop and completes when it has run (or failed).</summary>
    public Task InvokeAsync(Action action)
    {
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        Post(_ =>
        {
            try
            {
                action();
                done.SetResult();
            }
            catch (Exception ex)
            {
                done.SetException(ex);
            }
        }, null);
        return done.Task;
    }

    /// <summary>Adds <paramref name="fd"/> with <paramref name="events"/>; the token returned unregisters it. Loop thread only.</summary>
    public long Register(int fd, uint events, ILoopHandler handler)
    {
        AssertOnLoop();
        var slot = _free.Count > 0 ? _free.Pop() : _nextSlot++;
        if (slot == _handlers.Length)
        {
            Array.Resize(ref _handlers, slot * 2);
            Array.Resize(ref _generations, slot * 2);
        }
        var token = ((long)_generations[slot] << 32) | (uint)slot;
        Native.Add(_epoll, fd, events, (ulong)token, _ctl);
        _handlers[slot] = handler;
        Registered++;
        return token;
    }

    /// <summary>
    /// Removes <paramref name="fd"/> from the epoll instance and forgets its handler: once this returns, the
    /// descriptor may be closed (and its number reused) without an event of the old one reaching anyone. Loop thread
    /// only, or any thread once the loop has stopped.
    /// </summary>
    public void Unregister(int fd, long token)
    {
        var slot = (int)(uint)token;
        if (_stopped)
        {
            // The epoll instance is closed and its registrations went with it: only the handler is forgotten, so that
            // the owner goes on to close the descriptor. Posts now run on their callers, maybe several at once.
            lock (_free)
            {
                if (IsCurrent(slot, token))
                {
                    Forget(slot);
                }
            }
            return;
        }
        AssertOnLoop();
        if (!IsCurrent(slot, token))
        {
            return;
        }
        Native.Remove(_epoll, fd, _ctl);
        Forget(slot);
    }

    private bool IsCurrent(int slot, long token) => _handlers[slot] is not null && _generations[slot] == (uint)(token >> 32);

    private void Forget(int slot)
    {
        _handlers[slot] = null;
        _generations[slot]++;
        _free.Push(slot);
        Registered--;
    }

    private void AssertOnLoop()
    {
        if (!IsOnLoop)
        {
            throw new InvalidOperationException("epoll registrations are changed on the loop's own thread");
        }
    }

    private void Run()
    {
        Volatile.Write(ref _threadId, Environment.CurrentManagedThreadId);
        Activity.OnLoopThread();
        while (!_stopping)
        {
            // Work posted by the loop itself (a continuation that posted the next one) must not wait for an event;
            // with nothing posted, the loop sleeps until the next timer is due, or for good when none is armed.
            var count = Native.Wait(_epoll, _events, _work.IsEmpty ? _timers.TimeoutMs() : 0);
            Activity.Begin();
            NoteReadiness(count);
            for (var i = 0; i < count; i++)
            {
                var (events, data) = Native.ReadEvent(_events, i);
                if (data == WakeToken)
                {
                    Native.Drain(_wake, _loopEight);
                    continue;
                }
                var slot = (int)(uint)data;
                if (slot < _handlers.Length && _handlers[slot] is { } handler && _generations[slot] == (uint)(data >> 32))
                {
                    Guard(static (h, e) => h.OnEvents(e), handler, events);
                }
            }
            // Reset before draining: a post that finds 0 after this signals again, and one before it is drained below.
            Volatile.Write(ref _wakePending, 0);
            // Only what is queued now: work that posts more work does not keep the loop from epoll_wait forever.
            for (var n = _work.Count; n > 0 && _work.TryDequeue(out var item); n--)
            {
                Guard(static (a, s) => a(s), item.Action, item.State);
            }
            // After the events: a response that arrived just as its deadline passed is taken rather than timed out.
            if (_timers.Count > 0)
            {
                _timers.Advance();
            }
            Activity.End();
            if (count > 0)
            {
                // A loop under load never sleeps in epoll_wait, so the scheduler treats it as a processor hog: a client
                // on the same processor then waits a whole time slice for the loop's responses, and the loop's
                // connections wait a whole slice when it is the one preempted. Giving the processor up after each
                // batch lets whoever is runnable go at once, and costs a system call that returns at once when nobody
                // is: bare Kestrel on the loops, with wrk on the same two processors, had a p99 of 7.2-7.5 ms without
                // it, 1.1-2.2 ms with it (docs/decisions/2026-12-03-bodies-on-loops.md).
                Native.Yield();
            }
        }
    }

    // Upstream connections learn of this batch's events before any handler runs: a request handled first in the
    // batch that leases an idle connection whose close is further down the same batch sees the close (LoopStream.Pump)
    // without a system call to look for it.
    private void NoteReadiness(int count)
    {
        for (var i = 0; i < count; i++)
        {
            var (events, data) = Native.ReadEvent(_events, i);
            var slot = (int)(uint)data;
            if (data != WakeToken && slot < _handlers.Length && _handlers[slot] is LoopStream stream && _generations[slot] == (uint)(data >> 32))
            {
                stream.NoteEvents(events);
            }
        }
    }

    private void RunLeftovers()
    {
        while (_work.TryDequeue(out var item))
        {
            Guard(static (a, s) => a(s), item.Action, item.State);
        }
    }

    // An exception escaping a handler would end the loop and strand every connection on it; it is a bug, logged.
    private void Guard<TA, TB>(Action<TA, TB> run, TA a, TB b)
    {
        try
        {
            run(a, b);
        }
        catch (Exception ex)
        {
            Logger?.LogError(ex, "Unhandled exception on event loop {Index}", Index);
        }
    }

    /// <summary>Stops the thread, then closes the epoll instance and the eventfd. Descriptors still registered are
    /// not closed: their owners close them.</summary>
    public void Dispose()
    {
        if (_stopping)
        {
            return;
        }
        _stopping = true;
        if (_thread.IsAlive)
        {
            Native.Signal(_wake, new byte[8]);
            if (!IsOnLoop)
            {
                _thread.Join();
            }
        }
        _stopped = true;
        RunLeftovers();
        Native.Close(_wake);
        Native.Close(_epoll);
    }
}

/// <summary>The awaitable of <see cref="EventLoop.SwitchTo"/>.</summary>
internal readonly struct LoopSwitch(EventLoop loop) : ICriticalNotifyCompletion
{
    private static readonly Action<object?> s_run = static s => ((Action)s!)();

    public LoopSwitch GetAwaiter() => this;

    public bool IsCompleted => loop.IsOnLoop;

    public void GetResult()
    {
    }

    public void OnCompleted(Action continuation) => loop.Post(s_run, continuation);

    public void UnsafeOnCompleted(Action continuation) => loop.Post(s_run, continuation);
}

/// <summary>The loops of one process, started together and stopped together.</summary>
internal sealed class EventLoops : IDisposable
{
    private readonly EventLoop[] _loops;
    private int _next;
    private LoopWatchdog? _watchdog;

    /// <param name="count">0: one loop per processor.</param>
    public EventLoops(int count = 0)
    {
        if (!Native.IsSupported)
        {
            throw new PlatformNotSupportedException("event loops need Linux on a 64-bit processor");
        }
        _loops = new EventLoop[count > 0 ? count : Environment.ProcessorCount];
        try
        {
            for (var i = 0; i < _loops.Length; i++)
            {
                _loops[i] = new EventLoop(i);
            }
        }
        catch
        {
            foreach (var loop in _loops)
            {
                loop?.Dispose();
            }
            throw;
        }
        foreach (var loop in _loops)
        {
            loop.Start();
        }
    }

    public IReadOnlyList<EventLoop> All => _loops;

    public LoopTransportCounters Connections { get; } = new();

    public void UseLogger(ILogger logger)
    {
        foreach (var loop in _loops)
        {
            loop.Logger = logger;
        }
    }

    /// <summary>
    /// The loop with the fewest client connections, <paramref name="preferred"/> on a tie. Accepting alone does not
    /// spread connections: the kernel wakes the first idle loop waiting on a listener, which takes a batch of them, so
    /// 64 connections opened at once were seen to land 55 on one loop and 9 on the other, one processor doing most of
    /// the work while the other idled.
    /// </summary>
    public EventLoop LeastLoaded(EventLoop preferred)
    {
        var best = preferred;
        var fewest = preferred.Clients;
        foreach (var loop in _loops)
        {
            var clients = loop.Clients;
            if (clients < fewest)
            {
                best = loop;
                fewest = clients;
            }
        }
        return best;
    }

    /// <summary>The loops in turn, for work that has no loop of its own yet.</summary>
    public EventLoop Next() => _loops[(int)((uint)Interlocked.Increment(ref _next) % (uint)_loops.Length)];

    /// <summary>The stall watchdog, once <see cref="Watch"/> has started it.</summary>
    public LoopWatchdog? Watchdog => _watchdog;

    /// <summary>Starts reporting a loop that stays longer than <paramref name="threshold"/> in one batch of work.</summary>
    public void Watch(TimeSpan threshold, ILogger logger)
    {
        _watchdog = new LoopWatchdog([.. _loops.Select(l => l.Activity)], threshold, TimeProvider.System, logger);
        _watchdog.Start();
    }

    public void Dispose()
    {
        _watchdog?.Dispose();
        foreach (var loop in _loops)
        {
            loop.Dispose();
        }
    }
}
