using Ferry.Configuration;
using Microsoft.Extensions.Configuration;

namespace Ferry.Tests.Configuration;

/// <summary>The unknown-key check of <see cref="ConfigReader"/>: what a reader asks for is what it knows.</summary>
public sealed class ConfigReaderKeysTests
{
    private static IConfigurationSection Section(params (string Key, string Value)[] settings) =>
        new ConfigurationBuilder()
            .AddInMemoryCollection(settings.Select(s => new KeyValuePair<string, string?>("S:" + s.Key, s.Value)))
            .Build()
            .GetSection("S");

    [Fact]
    public void KeysThatAreReadAreKnownAndTheOthersAreWarnedAbout()
    {
        var reader = new ConfigReader();
        var section = Section(("Enabled", "true"), ("Enabeld", "true"), ("Zzzz", "1"), ("Size", "1"));

        using (reader.CheckKeys(section))
        {
            reader.Bool(section, "Enabled", false);
            reader.Int(section, "Size", 0);
            reader.String(section, "Absent");
        }

        Assert.Equal(["S:Enabeld: unknown setting (did you mean 'Enabled'?)", "S:Zzzz: unknown setting"], reader.Warnings);
        Assert.Equal(["Enabled", "Size", "Absent"], reader.KeysRead(section));
    }

    [Fact]
    public void EveryKindOfReadCountsAndCaseDoesNotMatter()
    {
        var reader = new ConfigReader();
        var section = Section(("a", "1"), ("B:X", "1"), ("c:0", "x"), ("D:e:F", "1"), ("g", "1"), ("h", "1s"), ("i", "1k"), ("j", "x"), ("k", "1"));

        using (reader.CheckKeys(section))
        {
            reader.String(section, "A");
            reader.Section(section, "b");
            reader.List(section, "C");
            reader.Entries(section, "d");
            reader.Setting(section, "G");
            reader.Duration(section, "H", TimeSpan.Zero);
            reader.Size(section, "I", 0);
            reader.Choice(section, "J", 0, "a letter", ("x", 1));
            reader.Known(section, "K");
        }

        Assert.Equal([], reader.Warnings);
    }

    [Fact]
    public void WarningsKeepThePlaceTheCheckStartedAt()
    {
        var reader = new ConfigReader();
        var outer = Section(("Typo", "1"), ("Inner:Typo", "1"), ("Inner:Value", "1"));
        var inner = outer.GetSection("Inner");

        using (reader.CheckKeys(outer))
        {
            reader.Warning("first", "before the inner section");
            using (reader.CheckKeys(reader.Section(outer, "Inner")))
            {
                reader.Warning("second", "inside the inner section");
                reader.String(inner, "Value");
            }
            reader.Warning("third", "after the inner section");
        }

        Assert.Equal(
            [
                "S:Typo: unknown setting",
                "first: before the inner section",
                "S:Inner:Typo: unknown setting",
                "second: inside the inner section",
                "third: after the inner section",
            ],
            reader.Warnings);
    }

    [Fact]
    public void ExplainNamesAKeyKnownElsewhere()
    {
        var reader = new ConfigReader();
        var section = Section(("Window", "1s"), ("Windw", "1s"));

        using (reader.CheckKeys(section, (child, known) =>
            child.Key == "Window" ? $"has no effect here (its settings: {string.Join(", ", known)})" : null))
        {
            reader.Int(section, "PermitLimit", 0);
        }

        Assert.Equal(["S:Window: has no effect here (its settings: PermitLimit)", "S:Windw: unknown setting"], reader.Warnings);
    }

    [Fact]
    public void ASectionWithoutAScopeIsNotChecked()
    {
        var reader = new ConfigReader();
        var section = Section(("Zzzz", "1"));

        reader.String(section, "Other");

        Assert.Equal([], reader.Warnings);
    }
}
