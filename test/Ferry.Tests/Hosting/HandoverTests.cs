using System.Collections;
using System.Net;
using Ferry.Hosting;

namespace Ferry.Tests.Hosting;

public sealed class HandoverTests
{
    [Theory]
    [InlineData("ferry-sockets 1234", 1234)]
    [InlineData("ferry-sockets 0", null)]
    [InlineData("ferry-sockets -5", null)]
    [InlineData("ferry-sockets x", null)]
    [InlineData("ferry-socket 12", null)]
    [InlineData("", null)]
    public void SocketsMessage_NamesThePredecessorsProcess(string message, int? pid)
    {
        Assert.Equal(pid, Handover.ParseSocketsMessage(message));
    }

    [Fact]
    public void SystemdSockets_CountOnlyWhenPassedToThisProcess()
    {
        Assert.Equal(2, SystemdSockets.Count(Environment("42", "2"), 42));
        Assert.Equal(0, SystemdSockets.Count(Environment("41", "2"), 42)); // meant for another process (a parent)
        Assert.Equal(0, SystemdSockets.Count(Environment(null, "2"), 42));
        Assert.Equal(0, SystemdSockets.Count(Environment("42", null), 42));
        Assert.Equal(0, SystemdSockets.Count(Environment("42", "-1"), 42));
        Assert.Equal(0, SystemdSockets.Count(Environment("42", "two"), 42));
        Assert.Equal(Unix.MaxDescriptors, SystemdSockets.Count(Environment("42", "100000"), 42));
    }

    [Theory]
    [InlineData("127.0.0.1:8080", "127.0.0.1", 8080, true)]
    [InlineData("[::ffff:127.0.0.1]:8080", "127.0.0.1", 8080, true)]
    [InlineData("0.0.0.0:8080", "0.0.0.0", 8080, true)]
    [InlineData("[::]:8080", "::", 8080, true)]
    [InlineData("127.0.0.1:8080", "127.0.0.1", 8081, false)]
    [InlineData("127.0.0.1:8080", "0.0.0.0", 8080, false)]
    [InlineData("[::]:8080", "0.0.0.0", 8080, false)]
    public void AnInheritedSocketServesTheListenerOfItsExactAddress(string bound, string address, int port, bool same)
    {
        Assert.Equal(same, ListenSockets.SameEndPoint(IPEndPoint.Parse(bound), new IPEndPoint(IPAddress.Parse(address), port)));
    }

    private static Hashtable Environment(string? pid, string? fds)
    {
        var environment = new Hashtable();
        if (pid is not null)
        {
            environment["LISTEN_PID"] = pid;
        }
        if (fds is not null)
        {
            environment["LISTEN_FDS"] = fds;
        }
        return environment;
    }
}
