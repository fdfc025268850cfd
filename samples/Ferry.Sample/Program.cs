using Ferry;

var builder = WebApplication.CreateBuilder(args);
builder.Services.AddFerry(builder.Configuration.GetSection("Ferry"));

var app = builder.Build();
// The app's own endpoints come first; every other request goes to Ferry's routes.
app.MapGet("/app/hello", () => "hello from the app\n");
app.MapFerry();
app.Run();
