namespace Ferry.FunctionalTests.Support;

// A test that runs openssl: skipped on a machine without it, but not on CI, where a missing openssl must fail.
public sealed class OpenSslFactAttribute : FactAttribute
{
    public const string OpenSsl = "/usr/bin/openssl";

    public OpenSslFactAttribute()
    {
        if (!File.Exists(OpenSsl) && !string.Equals(Environment.GetEnvironmentVariable("CI"), "true", StringComparison.OrdinalIgnoreCase))
        {
            Skip = $"openssl is not installed ({OpenSsl} missing; apt-get install openssl)";
        }
    }
}
