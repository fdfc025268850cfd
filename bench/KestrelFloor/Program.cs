// The floor under any proxy built on Kestrel: Kestrel answering the small scenario's 6-byte body itself, with no
// upstream, no routing, no logging and no metrics listener. bench/run measures it as the `kestrel` target, and with
// `--loops` (Kestrel on Ferry's event loops, Engine: Loops's client side) as `kestrel-loops`.
using System.Net;
using Ferry.Hosting;
using Ferry.Loops;
using Microsoft.AspNetCore.Connections;

var url = args.FirstOrDefault(a => !a.StartsWith("--", StringComparison.Ordinal)) ?? "http://127.0.0.1:5000";
var onLoops = args.Contains("--loops");
var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { ContentRootPath = AppContext.BaseDirectory });
builder.Logging.ClearProviders();
EventLoops? loops = null;
ListenSockets? sockets = null;
if (onLoops)
{
    loops = new EventLoops();
    sockets = new ListenSockets();
    var uri = new Uri(url);
    var socket = sockets.Acquire(new IPEndPoint(IPAddress.Parse(uri.Host), uri.Port));
    builder.WebHost.ConfigureKestrel(options => options.Listen(new OwnedListenEndPoint(socket, sockets)));
    builder.Services.AddSingleton<IConnectionListenerFactory>(sp => new OwnedLoopTransportFactory(loops, sp));
}
else
{
    builder.WebHost.UseUrls(url);
}
var app = builder.Build();
var hello = "hello\n"u8.ToArray();
app.Run(context =>
{
    context.Response.ContentLength = hello.Length;
    return context.Response.Body.WriteAsync(hello, 0, hello.Length);
});
app.Run();
sockets?.Dispose();
loops?.Dispose();
