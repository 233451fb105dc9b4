"""Options and config resolution that the ``leafrl`` commands share (typer reads an Option's
declaration; it holds no value).

``@with_config_sources`` gives a command the four options that choose its settings, declared here
once, and hands them to it as one ``ConfigSources`` value: ``--recipe``, ``--builtin``, ``--config``
and ``--set``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from leafrl import recipes
from leafrl.errors import UserError

MODEL = typer.Option(None, help="hub name, HF directory, GGUF file or builtin:NAME", show_default="the recipe's")
DATA = typer.Option(None, help="data directory, saved dataset or builtin:NAME", show_default="the recipe's")
QUIET = typer.Option(False, help="no progress bar")
SETTINGS_OPTIONS = [
    ("recipe", str | None, typer.Option(None, help="start from this recipe (`leafrl recipes` lists them)",
                                        show_default=recipes.DEFAULT)),
    ("builtin", str | None, typer.Option(None, help="a built-in regime: the same as --recipe builtin-NAME",
                                         show_default=False)),
    ("config", Path | None, typer.Option(None, help="a YAML file of settings, applied over the recipe")),
    ("set_", list[str], typer.Option([], "--set", help="a setting, applied last: --set optim.lr=1e-5 (repeatable; "
                                     "`leafrl config show` lists them)")),
]


def at_least(option: str, value: float | None, low: int, what: str) -> None:
    """Refuse a number given on the command line below ``low`` (None: not given), like a setting
    of the config, with one line naming the option: ``--limit -3: give a number of rows >= 1``."""
    if value is not None and value < low:
        raise UserError(f"{option} {value}: give a number of {what} >= {low}")


def default(config: type, field: str) -> str:
    """A config dataclass's default for --help, so the CLI never restates one."""
    return str(getattr(config(), field))


@dataclass(frozen=True)
class ConfigSources:
    """What a command's --recipe, --builtin, --config and --set chose."""

    recipe: str | None
    builtin: str | None
    config: Path | None
    set_: list[str]

    @property
    def recipe_name(self) -> str:
        return recipes.name_of(self.recipe, self.builtin)

    def resolve(self, cls: type, *, config: Path | None = None, overrides: list[str] = (), **given: Any) -> Any:
        """The config of class ``cls`` the command runs with: the recipe, --config (or ``config``
        where --config is not given), the command's own options (``given``, None: not given),
        ``overrides``, then --set. A built-in recipe's settings, chosen for its own small model,
        meeting another model are warned about."""
        from leafrl.config import load_config
        from leafrl.tracking import warn

        cfg = load_config(cls, recipe=self.recipe_name, path=self.config or config,
                          overrides=[*overrides, *self.set_], **given)
        if (note := recipes.model_note(self.recipe_name, cfg)) is not None:
            warn(note)
        return cfg


def with_config_sources(command: Callable) -> Callable:
    """The command with --recipe, --builtin, --config and --set, passed to it as ``sources``."""
    signature = inspect.signature(command)
    added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind)
             for name, kind, option in SETTINGS_OPTIONS]
    own = [p for p in signature.parameters.values() if p.name != "sources"]

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> Any:
        chosen = ConfigSources(**{name: kwargs.pop(name) for name, _, _ in SETTINGS_OPTIONS})
        return command(sources=chosen, **kwargs)

    wrapper.__signature__ = signature.replace(parameters=[*own, *added])
    return wrapper
