"""Settings of any config dataclass, outside the classes themselves: YAML in and out,
``--set section.field=value`` overrides parsed into the dataclass and type-checked, the one order
in which a run's settings are resolved, and each setting's one-line doc read from its class.

    the class's defaults  <  a named recipe (``leafrl.recipes``)  <  a YAML file
        <  command options  <  ``--set``
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from leafrl import recipes
from leafrl._files import write_text_atomic
from leafrl.errors import UserError

C = TypeVar("C")


def resolve_paths(cfg: C) -> C:
    """``cfg`` (a TrainConfig or SFTConfig) with ``out`` absolute, and ``model`` and ``data`` absolute
    when they name local paths (a hub name or builtin:NAME stays as it is): the config saved in a
    run directory then means the same from any working directory."""
    def local(value: str | None) -> str | None:
        path = None if value is None else Path(value).expanduser()
        return str(path.resolve()) if path is not None and path.exists() else value

    return dataclasses.replace(cfg, out=str(Path(cfg.out).expanduser().resolve()), model=local(cfg.model),
                               data=local(cfg.data))


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(cls: type[C], data: dict, where: str = "") -> C:
    """Build dataclass ``cls`` from a nested dict; unknown keys and bad values raise UserError
    naming the setting."""
    where = where or cls.__name__
    if not isinstance(data, dict):
        raise UserError(f"{where}: expected a mapping of settings, got {data!r}")
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise UserError(f"{where}: unknown setting(s) {unknown}; known: {sorted(names)} "
                        "(`leafrl config show` lists every setting)")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        kind = hints[key]
        if dataclasses.is_dataclass(kind):
            value = from_dict(kind, value, f"{where}.{key}")
        kwargs[key] = _coerce(value, kind, f"{where}.{key}")
    try:
        return cls(**kwargs)
    except UserError:
        raise
    except ValueError as err:  # a check in a class outside this module (LeafConfig, TinyConfig)
        raise UserError(str(err)) from err


def _coerce(value: Any, kind: Any, name: str) -> Any:
    """Check ``value`` against a field type (ints are accepted for floats)."""
    union = isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union
    options = typing.get_args(kind) if union else (kind,)
    for option in options:
        if option is type(None) and value is None:
            return None
        if option is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if option is float and isinstance(value, str):  # YAML 1.1 reads "3e-4" as a string
            try:
                return float(value)
            except ValueError:
                pass
        is_bool_for_int = option is int and isinstance(value, bool)
        if isinstance(option, type) and isinstance(value, option) and not is_bool_for_int:
            return value
    raise UserError(f"{name}: expected {getattr(kind, '__name__', kind)}, got {value!r}")


def apply_overrides(cfg: C, overrides: list[str]) -> C:
    """``["optim.lr=1e-4", "lora.rank=16"]`` -> a new config; values are parsed as YAML."""
    data = to_dict(cfg)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set {item!r}: expected section.field=value")
        node = data
        *parents, leaf = key.strip().split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                raise UserError(f"--set {item!r}: {part!r} is not a section of {type(cfg).__name__}")
            node = node[part]
        if leaf not in node:
            raise UserError(f"--set {item!r}: unknown setting {key!r} (`leafrl config show` lists every setting)")
        node[leaf] = yaml.safe_load(raw)
    return from_dict(type(cfg), data)


def read_yaml(path: str | Path) -> dict:
    """A YAML file of settings as a dict; UserError naming the file when it is missing or no mapping."""
    path = Path(path)
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise UserError(f"{path}: cannot read it as YAML ({type(err).__name__}: {err})") from err
    if not isinstance(loaded, dict):
        raise UserError(f"{path}: expected a mapping of settings")
    return loaded


def load_config(cls: type[C], *, recipe: str | None = None, path: str | Path | None = None,
                overrides: list[str] | None = None, **given: Any) -> C:
    """The config ``cls`` resolved in leafrl's one order: the class defaults, then the named
    ``recipe``, then the YAML file ``path``, then ``given`` (command options; None means not
    given), then ``overrides`` (``--set``). Each layer changes only the settings it names."""
    data = to_dict(cls())
    for layer in ([recipes.read(cls, recipe)] if recipe is not None else []) + ([read_yaml(path)] if path else []):
        data = _merge(data, layer)
    data.update({k: v for k, v in given.items() if v is not None})
    return apply_overrides(from_dict(cls, data), overrides or [])


def _merge(base: dict, new: dict) -> dict:
    out = dict(base)
    for key, value in new.items():
        nested = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = _merge(out[key], value) if nested else value
    return out


def save_config(cfg: Any, path: str | Path) -> None:
    """Write the resolved config as YAML, atomically."""
    write_text_atomic(Path(path), yaml.safe_dump(to_dict(cfg), sort_keys=False))


# ------------------------------------------------------------------ settings and their docs


@dataclass(frozen=True)
class Setting:
    """One setting of a config: its dotted name, value, class default and one-line doc."""

    name: str
    value: Any
    default: Any
    doc: str


def field_docs(cls: type) -> dict[str, str]:
    """{field: the first paragraph of the string under it in the class body, its one-line summary}
    for a dataclass and its bases (a subclass's string wins), whitespace folded."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__[:-1]):
        body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body
        for node, after in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(after, ast.Expr)
                    and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
                docs[node.target.id] = " ".join(after.value.value.split("\n\n")[0].split())
    return docs


def settings(cfg: Any, prefix: str = "") -> list[Setting]:
    """Every leaf setting of ``cfg`` with its value, its class default and its doc, in field order."""
    cls, docs = type(cfg), field_docs(type(cfg))
    default = cls()
    out = []
    for f in dataclasses.fields(cls):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            out += settings(value, f"{prefix}{f.name}.")
        else:
            out.append(Setting(prefix + f.name, value, getattr(default, f.name), docs.get(f.name, "")))
    return out
