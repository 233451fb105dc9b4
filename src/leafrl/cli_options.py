"""Options and config resolution that the ``leafrl`` commands share (typer reads an Option's
declaration; it holds no value)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from leafrl import recipes

RECIPE = typer.Option(None, help="start from this recipe (`leafrl recipes` lists them)",
                      show_default=recipes.DEFAULT)
BUILTIN = typer.Option(None, help="a built-in regime: the same as --recipe builtin-NAME", show_default=False)
CONFIG = typer.Option(None, help="a YAML file of settings, applied over the recipe")
MODEL = typer.Option(None, help="hub name, HF directory or builtin:NAME", show_default="the recipe's")
DATA = typer.Option(None, help="data directory, saved dataset or builtin:NAME", show_default="the recipe's")
SET = typer.Option([], "--set", help="a setting, last: --set optim.lr=1e-5 (repeatable; `leafrl config show`)")
QUIET = typer.Option(False, help="no progress bar")


def default(config: type, field: str) -> str:
    """A config dataclass's default for --help, so the CLI never restates one."""
    return str(getattr(config(), field))


def resolve(cls: type, recipe: str | None, builtin: str | None, config: Path | None, overrides: list[str],
            **given: Any) -> Any:
    """The config of class ``cls`` a command runs with; a warning when a built-in recipe's settings
    (chosen for its own small model) meet another model."""
    from leafrl.config import load_config
    from leafrl.tracking import warn

    name = recipes.name_of(recipe, builtin)
    cfg = load_config(cls, recipe=name, path=config, overrides=overrides, **given)
    if (note := recipes.model_note(cls, name, cfg.model)) is not None:
        warn(note)
    return cfg
