"""LibriSQA Part I (free-form spoken QA over LibriSpeech) from the public release.

Download:

1. The LibriSQA metafiles from the Hugging Face dataset ``ZihanZhao/LibriSQA`` (linked from
   github.com/ZihanZhaoSJTU/LibriSQA), keeping its layout::

       LibriSQA/LibriSQA-PartI/LibriSQA-PartI-train.json
       LibriSQA/LibriSQA-PartI/LibriSQA-PartI-test.json

2. LibriSpeech from https://www.openslr.org/12: ``train-clean-360.tar.gz`` (LibriSQA's train
   set) and ``test-clean.tar.gz`` (its test set), both extracted into one directory, which
   gives ``LibriSpeech/<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac``.

Then: ``leafrl data convert librisqa LibriSQA data/librisqa --librispeech LibriSpeech``

Release format (the dataset card, and code that reads the files with ``json.load``): each
metafile is a JSON array of objects with ``speech_path`` (path to the utterance), ``question``,
``answer`` (the reference), ``text`` (the transcript) and ``duration``. What is not pinned down
by anything we could read is the exact form of ``speech_path``: readers replace a ``.wav``
suffix by ``.flac`` and strip an optional ``LibriSpeech/`` prefix. So we take only the
utterance id (``<speaker>-<chapter>-<utt>``, the file stem) and, when present, the LibriSpeech
subset named in the path (else train-clean-360 for train, test-clean for test, as the LibriSQA
README says), and look for ``<subset>/<speaker>/<chapter>/<id>.flac`` (or ``.wav``) under
``librispeech`` or ``librispeech/LibriSpeech``. A JSON Lines metafile is read too.

LibriSQA has no validation split: ``valid`` is carved out of train by whole LibriSpeech
chapters (SHA-256 of ``<speaker>-<chapter>``, a ``valid_fraction`` of chapters), so no
passage is shared between train and valid. Rows: ``task="sqa"``, prompt = one of the 3 spoken
QA templates chosen by the question's hash, reference = the answer.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path, PurePosixPath

from leafrl.data.converters import ManifestWriter, check_missing_audio, require_dir, require_file
from leafrl.data.schema import DataError, Example
from leafrl.data.templates import TASK_SQA, sqa_prompt
from leafrl.errors import UserError

PART_DIR = "LibriSQA-PartI"
METAFILES = {"train": "LibriSQA-PartI-train.json", "test": "LibriSQA-PartI-test.json"}
DEFAULT_SUBSET = {"train": "train-clean-360", "test": "test-clean"}
LIBRISPEECH_SUBSETS = {"train-clean-100", "train-clean-360", "train-other-500", "dev-clean",
                       "dev-other", "test-clean", "test-other"}
UTTERANCE = re.compile(r"^(\d+)-(\d+)-(\d+)$")


def read_metafile(path: Path) -> list[dict]:
    """The records of a LibriSQA metafile: a JSON array of objects (or JSON Lines)."""
    text = path.read_text(encoding="utf-8")
    try:
        if text.lstrip().startswith("["):
            records = json.loads(text)
        else:
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: invalid JSON at line {err.lineno} ({err.msg})") from err
    bad = next((i for i, r in enumerate(records) if not isinstance(r, dict)), None)
    if bad is not None:
        raise DataError(f"{path}: record {bad} is not an object")
    return records


def audio_candidates(librispeech: Path, speech_path: str, default_subset: str) -> list[Path]:
    """Where the utterance of ``speech_path`` may lie under ``librispeech``, in search order."""
    parts = PurePosixPath(speech_path.replace("\\", "/")).parts
    stem = PurePosixPath(parts[-1]).stem if parts else ""
    match = UTTERANCE.match(stem)
    if match is None:
        raise DataError(f"speech_path {speech_path!r} does not end in a LibriSpeech utterance id "
                        "(<speaker>-<chapter>-<utt>)")
    subset = next((p for p in parts if p in LIBRISPEECH_SUBSETS), default_subset)
    relative = Path(subset, match[1], match[2])
    return [root / relative / f"{stem}{ext}" for root in (librispeech, librispeech / "LibriSpeech")
            for ext in (".flac", ".wav")]


def in_valid(utterance: str, valid_fraction: float) -> bool:
    """True when the chapter of ``utterance`` goes to valid (stable SHA-256 of speaker-chapter)."""
    chapter = utterance.rsplit("-", 1)[0]
    digest = hashlib.sha256(chapter.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64 < valid_fraction


def convert_librisqa(src: Path, out: Path, *, librispeech: Path, limit: int | None = None,
                     valid_fraction: float = 0.02, on_missing_audio: str = "error") -> dict:
    """Convert LibriSQA Part I to ``out/{train,valid,test}.jsonl``; returns the summary.

    Args:
        src: the LibriSQA download (holding ``LibriSQA-PartI/``), or that ``LibriSQA-PartI``
            directory itself.
        out: output directory.
        librispeech: the directory with the LibriSpeech subsets (or its parent).
        limit: at most this many rows per split (the first ones in file order).
        valid_fraction: share of train chapters held out as ``valid`` (0 for none).
        on_missing_audio: ``"error"`` (default) or ``"skip"`` rows whose audio is absent.
    """
    check_missing_audio(on_missing_audio)
    if not 0.0 <= valid_fraction < 1.0:
        raise UserError(f"valid_fraction must be in [0, 1), got {valid_fraction}")
    src, librispeech = Path(src), require_dir(Path(librispeech), "LibriSpeech directory").absolute()
    part = src / PART_DIR if (src / PART_DIR).is_dir() else src
    metafiles = {split: require_file(part / name, f"LibriSQA Part I {split} metafile")
                 for split, name in METAFILES.items()}
    with ManifestWriter(out, "librisqa", limit) as writer:
        seen: set[str] = set()
        for source_split, path in metafiles.items():
            for index, record in enumerate(read_metafile(path)):
                _convert_record(writer, record, f"{path} record {index}", source_split, librispeech,
                                valid_fraction, on_missing_audio, seen)
    return writer.summary


def _fields(record: dict, where: str) -> tuple[str, str, str, str]:
    """``(speech_path, utterance id, question, answer)`` of a record; raises on missing/non-string."""
    values = []
    for name in ("speech_path", "question", "answer"):
        value = record.get(name)
        if not isinstance(value, str):
            raise DataError(f"{where}: {name!r} must be a string, got {type(value).__name__}")
        values.append(value.strip())
    speech_path, question, answer = values
    if not speech_path:
        raise DataError(f"{where}: empty 'speech_path'")
    return speech_path, PurePosixPath(speech_path.replace("\\", "/")).stem, question, answer


def _convert_record(writer: ManifestWriter, record: dict, where: str, source_split: str,
                    librispeech: Path, valid_fraction: float, on_missing_audio: str,
                    seen: set[str]) -> None:
    """Write one LibriSQA record to its split, or count it as skipped."""
    speech_path, utterance, question, answer = _fields(record, where)
    if not question or not answer:
        return writer.skip("empty question" if not question else "empty answer", utterance)
    split = source_split
    if split == "train" and in_valid(utterance, valid_fraction):
        split = "valid"
    if writer.full(split):
        return None
    try:
        candidates = audio_candidates(librispeech, speech_path, DEFAULT_SUBSET[source_split])
    except DataError as err:
        raise DataError(f"{where}: {err}") from None
    audio = next((p for p in candidates if p.is_file()), None)
    if audio is None:
        tried = ", ".join(str(p) for p in candidates)
        try:
            return writer.missing_audio(on_missing_audio, utterance, f"tried {tried}")
        except DataError as err:
            raise DataError(f"{where}: {err}") from None
    row_id, n = utterance, 1
    while row_id in seen:  # several questions on one utterance
        n += 1
        row_id = f"{utterance}-q{n}"
    seen.add(row_id)
    meta = {"dataset": "librisqa", "utterance": utterance, "question": question,
            "transcript": record.get("text"), "duration": record.get("duration"),
            "librisqa_split": source_split}
    writer.add(split, Example(id=row_id, audio=str(audio), prompt=sqa_prompt(question),
                              reference=answer, task=TASK_SQA, meta=meta))
    return None
