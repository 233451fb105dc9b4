"""One training/evaluation row, and the checks every reader runs before yielding it.

An :class:`Example` is what the rollout sees: an id, the audio (anything
:func:`leafrl.audio.io.load_audio` accepts), a plain-text prompt with no model tokens (the
model family adds its audio placeholder and chat template), the reference the reward compares
against, a task name and free-form metadata.

A manifest row is the JSON form of an Example::

    {"id": "...", "audio": "clips/a.wav", "prompt": "...", "reference": "...", "task": "ast",
     "meta": {...}}

``id``, ``prompt``, ``reference`` and ``task`` are required non-empty strings; ``audio`` is a
non-empty path string, or null / absent for text-only rows (LEAF also trains text LMs);
``meta`` is an optional object, and any other top-level key is kept in ``meta`` too. Every
failure raises :class:`DataError` naming the file and the row id (or the line when the id
itself is the problem).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from leafrl._files import path_problem
from leafrl.errors import UserError

REQUIRED_FIELDS = ("id", "prompt", "reference", "task")
FIELDS = ("id", "audio", "prompt", "reference", "task")


class DataError(UserError):
    """A data row or file is malformed; the message names the file and the row id or line."""


def _audio_ok(audio: Any) -> bool:
    """True for the audio forms load_audio accepts: path, bytes, HF dict, array dict, (array, rate)."""
    if isinstance(audio, str | Path):
        return str(audio) != ""
    if isinstance(audio, bytes | bytearray):
        return len(audio) > 0
    if isinstance(audio, Mapping):
        return bool(audio.get("bytes") or audio.get("path")) or (
            "array" in audio and "sampling_rate" in audio)
    if isinstance(audio, tuple) and len(audio) == 2:
        return isinstance(audio[0], np.ndarray) and isinstance(audio[1], int | np.integer)
    return False


@dataclass(frozen=True)
class Example:
    """One row: ``audio`` is an absolute path string, bytes, an HF ``{"bytes", "path"}`` dict,
    ``{"array", "sampling_rate"}``, ``(array, rate)``, or None for a text-only row; the text
    fields are plain strings."""

    id: str
    audio: Any
    prompt: str
    reference: str
    task: str
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id.strip():
            raise DataError(f"Example.id must be a non-empty string, got {self.id!r}")
        for name in ("prompt", "reference", "task"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise DataError(f"example {self.id!r}: {name} must be a non-empty string, got {value!r}")
        if self.audio is not None and not _audio_ok(self.audio):
            raise DataError(f"example {self.id!r}: unsupported or empty audio of type "
                            f"{type(self.audio).__name__}")
        if not isinstance(self.meta, dict):
            raise DataError(f"example {self.id!r}: meta must be a dict, got {type(self.meta).__name__}")

    def to_row(self) -> dict:
        """The manifest (JSON) form; only valid when ``audio`` is a path string."""
        if self.audio is not None and not isinstance(self.audio, str):
            raise DataError(f"example {self.id!r}: only path audio can be written to a manifest")
        return {"id": self.id, "audio": self.audio, "prompt": self.prompt,
                "reference": self.reference, "task": self.task, "meta": self.meta}


def _where(source: str, line: int | None) -> str:
    return f"{source}:{line}" if line is not None else source


def example_from_row(row: Any, *, source: str, line: int | None = None,
                     base_dir: Path | None = None) -> Example:
    """Validate one manifest row and build its Example.

    Relative audio paths are resolved against ``base_dir`` (the manifest's directory) and
    must name a readable file (the error says why not: missing, a directory, a symlink loop...).
    Raises DataError naming ``source`` and the row id, or ``source:line`` when the row has no
    usable id.
    """
    where = _where(source, line)
    if not isinstance(row, Mapping):
        raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
    row_id = row.get("id")
    if not isinstance(row_id, str) or not row_id.strip():
        raise DataError(f"{where}: missing or empty 'id' (got {row_id!r})")
    for name in REQUIRED_FIELDS[1:]:  # the text fields
        value = row.get(name)
        if name not in row:
            raise DataError(f"{where}: row {row_id!r} has no {name!r} field")
        if not isinstance(value, str):
            raise DataError(f"{where}: row {row_id!r}: {name!r} must be a string, got {type(value).__name__}")
        if not value.strip():
            raise DataError(f"{where}: row {row_id!r}: {name!r} is empty")
    meta = row.get("meta", {})
    if not isinstance(meta, dict):
        raise DataError(f"{where}: row {row_id!r}: 'meta' must be an object, got {type(meta).__name__}")
    extra = {k: v for k, v in row.items() if k not in FIELDS and k != "meta"}
    audio = row.get("audio")
    if audio is not None:
        if not isinstance(audio, str) or not audio.strip():
            raise DataError(f"{where}: row {row_id!r}: 'audio' must be a path string or null, got {audio!r}")
        path = Path(audio).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        if (problem := path_problem(path)) is not None:  # "not found", "is a directory", ...
            raise DataError(f"{where}: row {row_id!r}: audio file {problem}: {path}")
        audio = os.path.abspath(path)
    return Example(id=row_id, audio=audio, prompt=row["prompt"],
                   reference=row["reference"], task=row["task"], meta={**extra, **meta})
