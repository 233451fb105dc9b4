"""Generic long-audio spoken QA (DailyTalk, Europarl/VoxPopuli clips) from a metadata table.

The paper trains on QA over long clips (<= 40 s) from DailyTalk (dialogues,
github.com/keonlee9420/DailyTalk) and Europarl/VoxPopuli (parliament speech,
github.com/facebookresearch/voxpopuli). Those releases ship the audio, not the question/answer
pairs, and our spec does not say how the authors built theirs. So this converter takes any
table that pairs an audio file with a question and an answer:

- ``.csv`` (comma), ``.tsv`` (tab), ``.jsonl`` (one object per line) or ``.json`` (an array of
  objects), with a header / keys ``audio``, ``question``, ``answer``, ``split`` (column names
  configurable) and optionally an id column;
- ``audio`` paths relative to the table's directory, or absolute;
- ``split`` values ``train``; ``valid``, ``validation`` or ``dev``; ``test``.

Clips longer than ``max_seconds`` (default 40, the paper's limit) are dropped and counted; the
duration comes from the file header (soundfile), without decoding. Several questions may share
one clip.

Then: ``leafrl data convert longaudio dailytalk_qa.csv data/dailytalk_qa``

Rows: ``task="sqa"``, prompt = one of the 3 spoken QA templates chosen by the question's hash,
reference = the answer, ``meta["duration"]`` = clip seconds.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import soundfile as sf

from leafrl.data.converters import ManifestWriter, check_missing_audio, require_file
from leafrl.data.schema import DataError, Example
from leafrl.data.templates import TASK_SQA, sqa_prompt
from leafrl.errors import UserError

SPLIT_NAMES = {"train": "train", "valid": "valid", "validation": "valid", "dev": "valid", "test": "test"}
TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json")


def read_table(path: Path) -> Iterator[tuple[str, dict]]:
    """Yield ``(where, row)`` from a CSV/TSV/JSONL/JSON table; ``where`` is ``file:line`` or
    ``file record i`` for error messages."""
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise DataError(f"{path}: unsupported table type {suffix!r}; expected one of {TABLE_SUFFIXES}")
    with path.open(encoding="utf-8", newline="") as f:
        if suffix in (".csv", ".tsv"):
            reader = csv.DictReader(f, delimiter="," if suffix == ".csv" else "\t")
            for row in reader:
                yield f"{path}:{reader.line_num}", row
            return
        try:
            if suffix == ".json":
                records = json.load(f)
                if not isinstance(records, list):
                    raise DataError(f"{path}: expected a JSON array of objects")
                yield from ((f"{path} record {i}", r) for i, r in enumerate(records))
                return
            for line_no, line in enumerate(f, start=1):
                if line.strip():
                    yield f"{path}:{line_no}", json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}: invalid JSON at line {err.lineno} ({err.msg})") from err


def clip_seconds(path: Path, where: str) -> float:
    """Duration of an audio file from its header (no decoding); DataError if unreadable."""
    try:
        info = sf.info(str(path))
    except (sf.SoundFileError, RuntimeError) as err:
        raise DataError(f"{where}: cannot read audio header of {path}: {err}") from None
    return info.frames / info.samplerate


def convert_longaudio(src: Path, out: Path, *, limit: int | None = None, max_seconds: float = 40.0,
                      dataset: str = "longaudio", audio_column: str = "audio",
                      question_column: str = "question", answer_column: str = "answer",
                      split_column: str = "split", id_column: str | None = None,
                      on_missing_audio: str = "error") -> dict:
    """Convert a long-audio QA table to ``out/{train,valid,test}.jsonl``; returns the summary.

    Args:
        src: the table file (.csv, .tsv, .jsonl or .json).
        out: output directory.
        limit: at most this many rows per split (the first ones in table order).
        max_seconds: longest clip kept (the paper: 40 s); longer ones are skipped and counted.
        dataset: name stored in ``meta["dataset"]`` and used in generated ids.
        id_column: column with row ids; ``None``: ids are ``"{dataset}-{row index}"``.
        on_missing_audio: ``"error"`` (default) or ``"skip"`` rows whose audio is absent.
    """
    check_missing_audio(on_missing_audio)
    if not max_seconds > 0:
        raise UserError(f"max_seconds must be > 0, got {max_seconds}")
    table = require_file(Path(src), "long-audio QA table")
    columns = (audio_column, question_column, answer_column, split_column,
               *([id_column] if id_column else []))
    base_dir = table.parent.absolute()
    durations: dict[Path, float] = {}
    with ManifestWriter(out, dataset, limit) as writer:
        writer.summary["max_seconds"] = max_seconds
        for index, (where, row) in enumerate(read_table(table)):
            text = _fields(row, columns, where)
            row_id = text.pop("id", None) or f"{dataset}-{index}"
            split = SPLIT_NAMES.get(text["split"])
            if split is None:
                raise DataError(f"{where}: row {row_id!r}: unknown split {text['split']!r}; "
                                f"expected one of {sorted(SPLIT_NAMES)}")
            if not text["question"] or not text["answer"]:
                writer.skip("empty question" if not text["question"] else "empty answer", row_id)
                continue
            if writer.full(split):
                continue
            audio = base_dir / Path(text["audio"]).expanduser()
            if not audio.is_file():
                writer.missing_audio(on_missing_audio, row_id, f"{audio} ({where})")
                continue
            if audio not in durations:
                durations[audio] = clip_seconds(audio, f"{where}: row {row_id!r}")
            if durations[audio] > max_seconds:
                writer.skip(f"longer than {max_seconds:g} s", row_id)
                continue
            meta = {"dataset": dataset, "question": text["question"], "duration": durations[audio]}
            writer.add(split, Example(id=row_id, audio=str(audio), prompt=sqa_prompt(text["question"]),
                                      reference=text["answer"], task=TASK_SQA, meta=meta))
    return writer.summary


def _fields(row: object, columns: tuple[str, ...], where: str) -> dict[str, str]:
    """The stripped string values of ``columns`` (audio, question, answer, split[, id]) of a row."""
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected an object, got {type(row).__name__}")
    names = ("audio", "question", "answer", "split", "id")
    values = {}
    for name, column in zip(names, columns):
        value = row.get(column)
        if column not in row or value is None:
            raise DataError(f"{where}: missing column {column!r} (row has {sorted(row)})")
        if isinstance(value, int) and name == "id":
            value = str(value)
        if not isinstance(value, str):
            raise DataError(f"{where}: {column!r} must be a string, got {type(value).__name__}")
        values[name] = value.strip()
    for name in ("audio", "id"):
        if name in values and not values[name]:
            raise DataError(f"{where}: empty {columns[names.index(name)]!r}")
    return values
