// The floor under any proxy built on Kestrel: Kestrel answering the small scenario's 6-byte body itself, with no
// upstream, no routing, no logging and no metrics listener. bench/run measures it as the `kestrel` target.
var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { ContentRootPath = AppContext.BaseDirectory });
builder.Logging.ClearProviders();
builder.WebHost.UseUrls(args.Length > 0 ? args[0] : "http://127.0.0.1:5000");
var app = builder.Build();
var hello = "hello\n"u8.ToArray();
app.Run(context =>
{
    context.Response.ContentLength = hello.Length;
    return context.Response.Body.WriteAsync(hello, 0, hello.Length);
});
app.Run();
