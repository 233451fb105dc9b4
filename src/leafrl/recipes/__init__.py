"""Named recipes: YAML files of settings in the shape of a config class, shipped with leafrl.

    recipes/train/NAME.yaml   TrainConfig settings (``leafrl train``, eval, compare, credit, forks,
                              inspect, plan: ``--recipe NAME``)
    recipes/sft/NAME.yaml     SFTConfig settings (``leafrl sft``, ``leafrl build-base``)

A recipe's first line is a comment saying what it is for (``leafrl recipes`` lists them). A
built-in regime NAME (a task, its base model and its settings) is the recipe ``builtin-NAME``,
which ``--builtin NAME`` picks; ``builtin-conventions`` is every command's default.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from leafrl.errors import UserError

HERE = Path(__file__).parent
KINDS = {"TrainConfig": "train", "SFTConfig": "sft"}
DEFAULT = "builtin-conventions"
BUILTIN_PREFIX = "builtin-"


@dataclass(frozen=True)
class Recipe:
    """One shipped recipe: its name, the command family it configures and its one-line summary."""

    name: str
    kind: str
    summary: str
    path: Path


def available(kind: str | None = None) -> list[Recipe]:
    """The shipped recipes (of one ``kind``, "train" or "sft", or all), by kind and name."""
    found = []
    for path in sorted(HERE.glob("*/*.yaml")):
        if kind is None or path.parent.name == kind:
            first = path.read_text(encoding="utf-8").splitlines()[0]
            found.append(Recipe(path.stem, path.parent.name, first.lstrip("# ").strip(), path))
    return found


def name_of(recipe: str | None, builtin: str | None) -> str:
    """The recipe a command starts from: ``--recipe`` or ``--builtin`` (never both), else the default."""
    if recipe is not None and builtin is not None:
        raise UserError(f"--recipe {recipe} and --builtin {builtin}: give one (--builtin NAME is the recipe "
                        f"{BUILTIN_PREFIX}NAME)")
    if builtin is not None:
        return BUILTIN_PREFIX + builtin
    return DEFAULT if recipe is None else recipe


def read(cls: type, name: str) -> dict:
    """The settings of recipe ``name`` for config class ``cls``; UserError listing the known ones."""
    kind = KINDS[cls.__name__]
    path = HERE / kind / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(r.name for r in available(kind))
        builtins = ", ".join(r.name.removeprefix(BUILTIN_PREFIX) for r in available(kind)
                             if r.name.startswith(BUILTIN_PREFIX))
        raise UserError(f"recipe {name!r}: no such {kind} recipe; known: {known} (--builtin takes: {builtins})")
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def model_note(name: str, cfg: Any) -> str | None:
    """A warning when a built-in recipe's settings, chosen for its own model, are used with
    another model (``cfg.model``, a TrainConfig's or an SFTConfig's); None otherwise."""
    kind = KINDS[type(cfg).__name__]
    own = read(type(cfg), name).get("model")
    if not name.startswith(BUILTIN_PREFIX) or _same_model(cfg.model, own):
        return None
    if kind == "sft":
        if cfg.align_steps == 0:
            return None
        return (f"recipe {name} trains a fresh tiny SALLM from scratch (align_steps {cfg.align_steps}, lr 2e-3, "
                f"all weights); for {cfg.model} set align_steps=0, finetune and a small optim.lr "
                "(`leafrl config show --sft` lists them)")
    return (f"recipe {name}'s settings were chosen for its own model, {own} (`leafrl config show --recipe {name}`); "
            f"for {cfg.model} start from the paper's with --recipe paper (`leafrl recipes`)")


def _same_model(a: str | None, b: str | None) -> bool:
    """Whether two model references name the same model (built-in references and local paths
    resolved)."""
    from leafrl.builtin import locate_model

    def where(ref: str | None) -> str | None:
        if ref is None:
            return None
        path = Path(locate_model(ref)).expanduser()
        return str(path.resolve()) if path.exists() else ref

    return where(a) == where(b)
