"""CoVoST 2 English->German (speech translation) from the public release.

Download (the audio is Common Voice's; CoVoST 2 adds the translations and the splits):

1. Common Voice **English, version 4** (``cv-corpus-4-2019-12-10/en``: ``validated.tsv`` and
   ``clips/*.mp3``) from https://commonvoice.mozilla.org/en/datasets. CoVoST 2 is defined on
   that version; later versions hold the same clip names but more of them.
2. https://dl.fbaipublicfiles.com/covost/covost_v2.en_de.tsv.tar.gz, extracted into that same
   ``en/`` directory (where fairseq's ``prep_covost_data.py`` also looks for it)::

       tar -xzf covost_v2.en_de.tsv.tar.gz -C cv-corpus-4-2019-12-10/en

Then: ``leafrl data convert covost2 cv-corpus-4-2019-12-10/en data/covost2_en_de``

Release format, as read by the official ``get_covost_splits.py`` (facebookresearch/covost) and
the ``covost2`` loader of ``datasets``: both TSVs are tab-separated with a header row, no
quoting and ``\\`` as escape character. From ``covost_v2.en_de.tsv`` we read ``path`` (the clip
file name, e.g. ``common_voice_en_19664034.mp3``), ``translation`` (German) and ``split``
(``train``/``train_covost`` -> train, ``dev`` -> valid, ``test`` -> test; other values are
skipped and counted). The English transcript (``sentence``) and speaker (``client_id``) come
from Common Voice's ``validated.tsv``, joined on ``path`` (an inner join, as the official
script does: CoVoST rows absent from ``validated.tsv`` are skipped and counted).

Rows: ``task="ast"``, reference = the German translation; train prompts are one of the 3 AST
templates chosen by the hash of the English transcript, valid/test prompts the fixed AST
evaluation prompt (:mod:`leafrl.data.templates`). The transcript is kept in
``meta["source_text"]``.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

from leafrl.data.converters import ManifestWriter, check_missing_audio, require_dir, require_file
from leafrl.data.schema import DataError, Example
from leafrl.data.templates import TASK_AST, ast_prompt

COVOST_TSV = "covost_v2.en_de.tsv"
SPLIT_MAP = {"train": "train", "train_covost": "train", "dev": "valid", "test": "test"}


def read_tsv(path: Path, columns: tuple[str, ...]) -> Iterator[tuple[int, dict]]:
    """Yield ``(line, row)`` of a CoVoST/Common Voice TSV (no quoting, ``\\`` escapes), checking
    that the header has ``columns``."""
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\")
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path}: missing column(s) {missing}; header: {reader.fieldnames}")
        for row in reader:
            yield reader.line_num, row


def _transcripts(validated: Path, wanted: set[str]) -> dict[str, tuple[str, str]]:
    """``path -> (sentence, client_id)`` from Common Voice ``validated.tsv`` for ``wanted`` clips."""
    found = {}
    for _, row in read_tsv(validated, ("path", "sentence", "client_id")):
        if row["path"] in wanted:
            found[row["path"]] = (row["sentence"] or "", row["client_id"] or "")
    return found


def convert_covost2(src: Path, out: Path, *, limit: int | None = None, covost_tsv: Path | None = None,
                    on_missing_audio: str = "error") -> dict:
    """Convert CoVoST 2 En->De to ``out/{train,valid,test}.jsonl``; returns the summary.

    Args:
        src: the Common Voice English directory (``validated.tsv``, ``clips/``).
        out: output directory.
        limit: at most this many rows per split (the first ones in TSV order).
        covost_tsv: the CoVoST TSV; default ``src/covost_v2.en_de.tsv``.
        on_missing_audio: ``"error"`` (default) or ``"skip"`` rows whose clip is absent.
    """
    check_missing_audio(on_missing_audio)
    src = Path(src)
    clips = require_dir(src / "clips", "Common Voice clips directory").absolute()
    validated = require_file(src / "validated.tsv", "Common Voice validated.tsv")
    tsv = require_file(Path(covost_tsv) if covost_tsv else src / COVOST_TSV,
                       f"CoVoST 2 translations ({COVOST_TSV}, from {COVOST_TSV}.tar.gz)")
    rows = [(line, row) for line, row in read_tsv(tsv, ("path", "translation", "split"))]
    transcripts = _transcripts(validated, {row["path"] for _, row in rows})
    seen: set[str] = set()
    with ManifestWriter(out, "covost2", limit) as writer:
        for line, row in rows:
            split = SPLIT_MAP.get(row["split"])
            row_id = Path(row["path"]).stem
            if split is None:
                writer.skip(f"split {row['split']!r} not used", row_id)
            elif row["path"] not in transcripts:
                writer.skip("not in validated.tsv", row_id)
            elif row_id in seen:
                writer.skip("duplicate clip", row_id)
            elif not writer.full(split):
                seen.add(row_id)
                _add_row(writer, split, row, transcripts[row["path"]], clips / row["path"],
                         on_missing_audio, f"{tsv}:{line}")
            if all(writer.full(s) for s in SPLIT_MAP.values()):
                break
    return writer.summary


def _add_row(writer: ManifestWriter, split: str, row: dict, transcript: tuple[str, str], clip: Path,
             on_missing_audio: str, where: str) -> None:
    """Write one CoVoST row, or count it as skipped (empty text, missing clip)."""
    row_id = clip.stem
    sentence, client_id = transcript
    translation = (row["translation"] or "").strip()
    if not translation:
        return writer.skip("empty translation", row_id)
    if not sentence.strip():
        return writer.skip("empty transcript", row_id)
    if not clip.is_file():
        try:
            return writer.missing_audio(on_missing_audio, row_id, clip)
        except DataError as err:
            raise DataError(f"{where}: {err}") from None
    prompt = ast_prompt(sentence, evaluation=split != "train")
    meta = {"dataset": "covost2", "source_text": sentence.strip(), "client_id": client_id,
            "covost_split": row["split"]}
    writer.add(split, Example(id=row_id, audio=str(clip), prompt=prompt,
                              reference=translation, task=TASK_AST, meta=meta))
