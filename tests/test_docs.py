"""Every command the README and the docs show runs as written, in a dry form: a ``leafrl``
command's options are parsed by the command itself and its settings resolved (the recipe, the
options and every ``--set``); a benchmark script parses its options and prints its help. Lines
that need the network, a GPU or another project (pip, apt-get, wget, verl) are left out."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main

from leafrl import recipes
from leafrl.cli import app
from leafrl.config import SFTConfig, TrainConfig, load_config

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
OFFLINE = ("leafrl", "python benchmarks/", "accelerate launch", "torchrun")


def shell_lines(page: Path) -> list[str]:
    """The commands of a page: each line of its bash blocks, each ``$ ``-prompted line of its text
    blocks and, in docs/results.md, the command column of the current figures."""
    text = page.read_text(encoding="utf-8")
    lines = []
    for kind, body in re.findall(r"```(bash|text)\n(.*?)```", text, re.S):
        for line in body.splitlines():
            line = line.strip()
            if kind == "text":
                if not line.startswith("$ "):
                    continue
                line = line[2:]
            if line and not line.startswith("#"):
                lines.append(line)
    if page.name == "results.md":
        current = text.split("## Current figures")[1].split("## History")[0]
        lines += [row.rsplit("|", 2)[-2].strip().strip("`") for row in current.splitlines()[6:] if row.startswith("|")]
    return lines


COMMANDS = [(page.relative_to(ROOT).as_posix(), line) for page in PAGES for line in shell_lines(page)
            if line.startswith(OFFLINE)]


def leafrl_args(line: str) -> list[str] | None:
    """The arguments of the ``leafrl`` command in ``line`` (direct, or under accelerate / torchrun),
    without a trailing comment or redirection; None for a script."""
    words = shlex.split(line, comments=True)
    for stop in (">", "|", "&&"):
        if stop in words:
            words = words[: words.index(stop)]
    if words[0] == "leafrl":
        return words[1:]
    if "leafrl.cli" in words:
        return words[words.index("leafrl.cli") + 1:]
    return None


def dry_run(args: list[str]) -> None:
    """Parse ``args`` with the command they name and resolve its settings, without running it."""
    command = typer.main.get_command(app)  # typer's own click: groups are told by their commands
    path = ["leafrl"]
    while hasattr(command, "commands") and args and args[0] in command.commands:
        command, path, args = command.commands[args[0]], [*path, args[0]], args[1:]
    assert not hasattr(command, "commands"), f"no command in {path}"
    params = command.make_context(" ".join(path), list(args)).params
    if "set_" not in params or params.get("resume"):
        return
    cls = SFTConfig if path[-1] == "sft" or params.get("sft") else TrainConfig
    config = params.get("config")
    given = {k: params.get(k) for k in ("model", "data", "out", "steps", "algo")
             if isinstance(params.get(k), str | int) and k in cls.__dataclass_fields__}
    load_config(cls, recipe=recipes.name_of(params.get("recipe"), params.get("builtin")),
                path=config if config is not None and Path(config).is_file() else None,
                overrides=params["set_"], **given)


def test_the_pages_show_commands():
    pages = {page for page, _ in COMMANDS}
    assert {"README.md", "docs/commands.md", "docs/data.md", "docs/results.md"} <= pages
    assert sum(line.startswith("leafrl") for _, line in COMMANDS) > 30


@pytest.mark.parametrize("page, line", COMMANDS, ids=[f"{p}: {line[:60]}" for p, line in COMMANDS])
def test_each_command_runs_as_written(page, line):
    args = leafrl_args(line)
    if args is not None:
        dry_run(args)
        return
    words = shlex.split(line, comments=True)
    result = subprocess.run([sys.executable, *words[1:], "--help"], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0 and "usage:" in result.stdout, result.stderr[-2000:]


def test_a_command_with_a_wrong_setting_fails_the_dry_run():
    """The dry run can fail: an unknown option, an unknown setting and an unknown recipe."""
    from leafrl.errors import UserError

    with pytest.raises(Exception, match="No such option: --stepz"):
        dry_run(["train", "--stepz", "3"])
    with pytest.raises(Exception, match="No such option: --adapter"):
        dry_run(["data", "convert", "covost2", "a", "b", "--adapter", "x"])
    with pytest.raises(UserError, match="lora_settings"):
        dry_run(["train", "--set", "lora_settings.rank=4"])
    with pytest.raises(UserError, match="recipe 'nope'"):
        dry_run(["eval", "--recipe", "nope"])
