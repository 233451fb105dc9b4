"""Converters from public dataset releases (downloaded by the user) to our manifest layout.

Each ``convert_<name>(src, out, *, limit=None, ...)`` reads a release as published and writes
``out/train.jsonl``, ``out/valid.jsonl`` and ``out/test.jsonl`` (rows as in
:mod:`leafrl.data.schema`) plus ``out/summary.json``, and returns that summary: rows per split
and rows skipped, by reason.

Audio paths in the manifests are **absolute paths into the source tree**. The releases hold
hundreds of GB of audio; copying or transcoding them into ``out`` would double that, and paths
relative to ``out`` would break as soon as either tree moves on its own. Keep the source tree
where it was when you converted (or convert again after moving it).

Manifests are written atomically: rows stream into temporary files next to the targets, which
are renamed into place only when the whole conversion succeeded, so a failed run leaves any
previous manifests untouched. Missing inputs raise :class:`~leafrl.data.schema.DataError`
naming the file that was expected and where.

- :mod:`~leafrl.data.converters.librisqa`: LibriSQA Part I (spoken QA over LibriSpeech)
- :mod:`~leafrl.data.converters.covost2`: CoVoST 2 En->De (speech translation, Common Voice clips)
- :mod:`~leafrl.data.converters.longaudio`: generic long-audio QA (DailyTalk, Europarl/VoxPopuli)
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

from leafrl.data.schema import DataError, Example
from leafrl.errors import UserError

SPLITS = ("train", "valid", "test")
MISSING_AUDIO = ("error", "skip")
MAX_EXAMPLES_PER_REASON = 5


def require_file(path: Path, what: str) -> Path:
    """Return ``path`` if it is a file, else raise DataError saying what was expected where."""
    if not path.is_file():
        raise DataError(f"{what} not found: expected {path}")
    return path


def require_dir(path: Path, what: str) -> Path:
    """Return ``path`` if it is a directory, else raise DataError saying what was expected where."""
    if not path.is_dir():
        raise DataError(f"{what} not found: expected a directory at {path}")
    return path


def check_missing_audio(policy: str) -> None:
    """Validate an ``on_missing_audio`` argument ("error" | "skip")."""
    if policy not in MISSING_AUDIO:
        raise UserError(f"on_missing_audio must be one of {MISSING_AUDIO}, got {policy!r}")


class ManifestWriter:
    """Stream Examples into ``out/<split>.jsonl`` atomically and keep the conversion summary.

    Use as a context manager; ``add`` writes a row (False once the split holds ``limit`` rows),
    ``skip`` counts a dropped row under a reason. On a clean exit the temporary files replace
    the manifests and ``summary.json`` is written; on an exception they are deleted.
    """

    def __init__(self, out: Path, dataset: str, limit: int | None = None) -> None:
        if limit is not None and limit < 1:
            raise UserError(f"limit must be >= 1 or None, got {limit}")
        self.out, self.limit = Path(out), limit
        self.summary: dict = {"dataset": dataset, "out": str(self.out.resolve()),
                              "audio_paths": "absolute (into the source tree)",
                              "rows": dict.fromkeys(SPLITS, 0), "skipped": Counter(),
                              "skipped_examples": {}}
        self._tmp = {s: self.out / f".{s}.jsonl.tmp" for s in SPLITS}
        self._files: dict = {}

    def __enter__(self) -> ManifestWriter:
        self.out.mkdir(parents=True, exist_ok=True)
        self._files = {s: p.open("w", encoding="utf-8") for s, p in self._tmp.items()}
        return self

    def full(self, split: str) -> bool:
        """True when ``split`` already holds ``limit`` rows."""
        return self.limit is not None and self.summary["rows"][split] >= self.limit

    def add(self, split: str, example: Example) -> bool:
        """Write ``example`` to ``split``; returns False (and writes nothing) when it is full."""
        if self.full(split):
            return False
        self._files[split].write(json.dumps(example.to_row(), ensure_ascii=False) + "\n")
        self.summary["rows"][split] += 1
        return True

    def skip(self, reason: str, row_id: str) -> None:
        """Count a dropped row under ``reason``; the first few ids per reason are kept."""
        self.summary["skipped"][reason] += 1
        ids = self.summary["skipped_examples"].setdefault(reason, [])
        if len(ids) < MAX_EXAMPLES_PER_REASON:
            ids.append(row_id)

    def missing_audio(self, policy: str, row_id: str, path: Path | str) -> None:
        """A row whose audio is absent: raise (``policy="error"``) or count it as skipped."""
        if policy == "error":
            raise DataError(f"row {row_id!r}: audio file not found: {path} "
                            "(on_missing_audio='skip' drops such rows and counts them)")
        self.skip("missing audio", row_id)

    def __exit__(self, exc_type, exc, tb) -> None:
        for f in self._files.values():
            f.close()
        if exc_type is not None:
            for p in self._tmp.values():
                p.unlink(missing_ok=True)
            return
        self.summary["skipped"] = dict(self.summary["skipped"])
        for split, tmp in self._tmp.items():
            os.replace(tmp, self.out / f"{split}.jsonl")
        summary_tmp = self.out / ".summary.json.tmp"
        summary_tmp.write_text(json.dumps(self.summary, indent=2, ensure_ascii=False) + "\n")
        os.replace(summary_tmp, self.out / "summary.json")


DATASETS = ("covost2", "librisqa", "longaudio")


def convert(dataset: str, src: Path, out: Path, *, librispeech: Path | None = None, limit: int | None = None) -> dict:
    """``leafrl data convert``: the converter of ``dataset`` on the release in ``src``, into ``out``;
    returns its summary."""
    from leafrl.data.converters.covost2 import convert_covost2
    from leafrl.data.converters.librisqa import convert_librisqa
    from leafrl.data.converters.longaudio import convert_longaudio

    converters = {"covost2": convert_covost2, "librisqa": convert_librisqa, "longaudio": convert_longaudio}
    if dataset not in converters:
        raise UserError(f"dataset {dataset!r}: leafrl converts {', '.join(DATASETS)} (docs/data.md)")
    if librispeech is not None and dataset != "librisqa":
        raise UserError(f"--librispeech is for librisqa only, not {dataset}")
    extra = {"librispeech": librispeech} if librispeech is not None else {}
    return converters[dataset](src, out, limit=limit, **extra)
