"""Readers that turn files on disk (or a datasets hub name) into a stream of :class:`Example`.

Two formats:

- a JSONL manifest (``read_manifest``): one row per line as described in
  :mod:`leafrl.data.schema`, audio paths relative to the manifest's directory;
- a Hugging Face dataset (``read_hf_dataset``): a ``save_to_disk`` directory or anything
  ``datasets.load_dataset`` takes. The audio column is cast to ``Audio(decode=False)``, so rows
  carry ``{"bytes", "path"}`` and decoding happens later in :mod:`leafrl.audio.io`.

``load_split(data, split)`` picks the right reader for a data directory: ``train.jsonl`` /
``valid.jsonl`` / ``test.jsonl`` (the layout of the demo task and of the converters in
:mod:`leafrl.data.converters`) or a ``save_to_disk`` directory. A missing split is an error listing
the splits that exist; it never falls back to another split. A path that cannot be read is named
with the cause (``leafrl._files.path_problem``): a manifest file given for the directory, a
symlink loop, no permission.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from leafrl._files import path_problem
from leafrl.data.schema import DataError, Example, example_from_row

MANIFEST_SPLITS = ("train", "valid", "test")
VALID_NAMES = ("valid", "validation", "dev")
"""Names of the validation split; one of them may stand for another when it is the only one."""


def read_manifest(path: str | Path) -> Iterator[Example]:
    """Yield the Examples of a JSONL manifest, one line at a time.

    Blank lines are skipped. Bytes that are not UTF-8, bad JSON, a bad row, a missing audio file
    or a repeated id raise DataError naming ``path:line`` and the row id; so does a file with no rows.
    """
    path = Path(path)
    if (problem := path_problem(path)) is not None:
        raise DataError(f"manifest {problem}: {path}")
    base_dir = path.resolve().parent
    seen: set[str] = set()
    with path.open("rb") as f:
        for line_no, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataError(f"{path}:{line_no}: not valid UTF-8 (byte {raw[err.start]:#04x} at column "
                                f"{err.start + 1}); save the file as UTF-8") from err
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{line_no}: invalid JSON ({err.msg})") from err
            example = example_from_row(row, source=str(path), line=line_no, base_dir=base_dir)
            if example.id in seen:
                raise DataError(f"{path}:{line_no}: duplicate id {example.id!r}")
            seen.add(example.id)
            yield example
    if not seen:
        raise DataError(f"{path}: no rows (the file is empty)")


def is_saved_dataset(path: str | Path) -> bool:
    """True when ``path`` is a ``save_to_disk`` directory (a DatasetDict or a single Dataset)."""
    path = Path(path)
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


def _pick_split(available: list[str], split: str, where: str) -> str:
    """The split to read: ``split`` itself, or the one validation name present (see VALID_NAMES)."""
    if split in available:
        return split
    if split in VALID_NAMES:
        present = [name for name in VALID_NAMES if name in available]
        if len(present) == 1:
            return present[0]
    raise DataError(f"{where}: no split {split!r}; available: {sorted(available)}")


def _load_hf(path_or_name: str | Path, split: str | None, streaming: bool):
    """Load one split with ``datasets``: load_from_disk for a save_to_disk directory, else
    load_dataset (a hub name, or a local folder of parquet/csv/json files)."""
    import datasets

    if is_saved_dataset(path_or_name):
        loaded = datasets.load_from_disk(str(path_or_name))
        if isinstance(loaded, datasets.DatasetDict):
            if split is None:
                raise DataError(f"{path_or_name}: a DatasetDict; pass one of {sorted(loaded)} as split")
            return loaded[_pick_split(list(loaded), split, str(path_or_name))]
        if split is not None:
            raise DataError(f"{path_or_name}: a single Dataset without splits; pass split=None "
                            f"to read it whole (asked for {split!r})")
        return loaded
    if split is None:
        raise DataError(f"{path_or_name}: pass a split to load it with datasets.load_dataset")
    return datasets.load_dataset(str(path_or_name), split=split, streaming=streaming)


def _hf_audio(value: Any, base_dir: Path | None, where: str) -> Any:
    """The Example audio of one ``Audio(decode=False)`` cell: the HF dict when it holds bytes,
    else the path (relative paths resolved against the dataset directory)."""
    if not isinstance(value, dict) or not (value.get("bytes") or value.get("path")):
        raise DataError(f"{where}: empty audio cell")
    if value.get("bytes"):
        return value
    audio = Path(value["path"]).expanduser()
    if not audio.is_absolute() and base_dir is not None:
        audio = base_dir / audio
    return str(audio)


def read_hf_dataset(path_or_name: str | Path, split: str | None, *, audio_column: str = "audio",
                    prompt_column: str = "prompt", reference_column: str = "reference",
                    id_column: str | None = None, task: str | None = None,
                    streaming: bool = False) -> Iterator[Example]:
    """Yield Examples from a Hugging Face dataset split.

    Args:
        path_or_name: a ``save_to_disk`` directory (read with ``load_from_disk``), else a hub
            name or a local folder of data files for ``load_dataset``. Relative audio paths are
            resolved against a local directory.
        split: the split to read; for a DatasetDict a missing split raises, listing the others.
            ``None`` only for a single saved Dataset.
        id_column: column holding row ids (ints become strings); ``None``: ids are
            ``"{split}-{row index}"``. Other scalar columns go to ``Example.meta``.
        task: task name for every row; ``None``: read it from a ``task`` column.
        streaming: passed to ``load_dataset`` (hub or data files); ignored for saved datasets,
            which are memory-mapped anyway.
    """
    import datasets

    ds = _load_hf(path_or_name, split, streaming)
    source = f"{path_or_name}[{split}]"
    columns = list(ds.column_names or [])  # empty when a stream does not know its features
    needed = [audio_column, prompt_column, reference_column, *([id_column] if id_column else []),
              *(["task"] if task is None else [])]
    missing = [c for c in needed if c not in columns]
    if columns and missing:
        raise DataError(f"{source}: missing column(s) {missing}; columns: {columns}")
    ds = ds.cast_column(audio_column, datasets.Audio(decode=False))
    base_dir = Path(path_or_name) if Path(path_or_name).is_dir() else None
    used = {audio_column, prompt_column, reference_column, id_column, "task"}
    index = None
    for index, row in enumerate(ds):
        row_id = f"{split or 'row'}-{index}" if id_column is None else row[id_column]
        row_id = str(row_id) if isinstance(row_id, int) else row_id
        where = f"{source} row {index} (id {row_id!r})"
        text = {"id": row_id, "prompt": row[prompt_column], "reference": row[reference_column],
                "task": task if task is not None else row["task"]}
        for name, value in text.items():
            if not isinstance(value, str) or not value.strip():
                raise DataError(f"{where}: {name} must be a non-empty string, got {value!r}")
        meta = {k: v for k, v in row.items() if k not in used and isinstance(v, str | int | float | bool)}
        yield Example(audio=_hf_audio(row[audio_column], base_dir, where), meta=meta, **text)
    if index is None:
        raise DataError(f"{source}: no rows")


def manifest_path(data: str | Path, split: str) -> Path:
    """The JSONL file of ``split`` in a manifest directory; raises listing what exists, or saying
    why ``data`` is no directory it can read (one manifest given for the directory: pass that)."""
    data = Path(data)
    if data.is_file():  # the commands read both train and valid: one manifest is not enough
        parent = f" (here {data.parent})" if data.suffix == ".jsonl" else ", or a save_to_disk dataset"
        raise DataError(f"--data {data} is a file: pass the directory that holds train.jsonl and "
                        f"valid.jsonl{parent}")
    if (problem := path_problem(data, directory=True)) is not None:
        raise DataError(f"data directory {problem}: {data}")
    available = sorted(p.stem for p in data.glob("*.jsonl"))
    return data / f"{_pick_split(available, split, str(data))}.jsonl"


def load_split(data: str | Path, split: str) -> Iterator[Example]:
    """Examples of ``split`` from a data directory: ``<split>.jsonl`` manifests or a
    ``save_to_disk`` dataset, or a built-in task (``builtin:NAME``, synthesized on first use). A
    missing split raises DataError naming the directory and the splits it has."""
    data = locate(data)
    if is_saved_dataset(data):
        return read_hf_dataset(data, split)
    return read_manifest(manifest_path(data, split))


def split_source(data: str | Path, split: str) -> str:
    """How errors name ``split`` of a data directory: its manifest file, or ``DATA[split]``."""
    data = locate(data)
    return f"{data}[{split}]" if is_saved_dataset(data) else str(manifest_path(data, split))


def count_rows(data: str | Path, split: str) -> int:
    """Rows in ``split`` without validating them: non-blank lines of the manifest, or the
    saved dataset's ``num_rows`` (read from its metadata)."""
    data = locate(data)
    if is_saved_dataset(data):
        import datasets

        loaded = datasets.load_from_disk(str(data))
        if isinstance(loaded, datasets.DatasetDict):
            return loaded[_pick_split(list(loaded), split, str(data))].num_rows
        raise DataError(f"{data}: a single Dataset without splits (asked for {split!r})")
    with manifest_path(data, split).open("rb") as f:
        return sum(1 for line in f if line.strip())


def locate(data: str | Path) -> str | Path:
    """The directory of ``data``: a built-in task's (``builtin:NAME``) or ``data`` itself."""
    from leafrl.builtin import locate_data

    return locate_data(data)
