return await Ferry.Cli.FerryCommandLine.InvokeAsync(args);
