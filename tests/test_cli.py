"""The leafrl command line (typer): commands listed, explain runs and validates options."""

from typer.testing import CliRunner

from leafrl import __version__
from leafrl.cli import app

runner = CliRunner()


def test_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "explain" in result.output and "version" in result.output


def test_version():
    result = runner.invoke(app, ["version"])
    assert result.exit_code == 0 and result.output.strip() == __version__


def test_explain_shows_the_worked_example():
    result = runner.invoke(app, ["explain"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "boundaries [3, 7]" in result.output
    # spec's z-scored spans of response 1 and the GRPO value beside it
    for value in ("+0.28", "+0.60", "+1.22", "-2.08", "+0.90"):
        assert value in result.output


def test_explain_options_change_the_result():
    result = runner.invoke(app, ["explain", "--fork-budget", "1"], terminal_width=200)
    assert result.exit_code == 0 and "boundaries [3]" in result.output
    result = runner.invoke(app, ["explain", "--boundaries", "trie", "--normalize", "none"],
                           terminal_width=200)
    assert result.exit_code == 0 and "+0.40" in result.output  # raw tail of response 1


def test_explain_rejects_bad_option_naming_it():
    result = runner.invoke(app, ["explain", "--terms", "sideways"])
    assert result.exit_code == 2
    assert "LeafConfig.terms" in result.output
