"""The built-in task in text, for text-only models (``builtin:text``): the spoken-QA half of the
built-in task (:mod:`leafrl.data.demo`) with the scene written instead of spoken.

A row asks one question about a written scene and wants the task's short English sentence::

    prompt:    Answer the question about the scene with one short English sentence.
               Scene: In the room there are five blue boxes and three black cats.
               Question: What is black?
    reference: The cats are black.

The rows are the spoken task's QA rows of the same seed (same scenes, questions, references and
held-out colour-noun pairs; ``audio`` null), so nothing is synthesized: a build takes a second.
A small English instruct model answers these at length and in its own words; the task's
convention (one short sentence in the reference's form) is what RL with the BLEU reward teaches.

``build_text_task(out_dir)`` writes train/valid/test.jsonl and summary.json (each atomically,
summary last); a directory whose summary.json has the same settings is left as it is.
"""

from __future__ import annotations

import json
from pathlib import Path

from leafrl._files import write_text_atomic
from leafrl.data.demo import SPLITS, _check_args, draw_all, manifest_text

FORMAT_VERSION = 1
INSTRUCTION = "Answer the question about the scene with one short English sentence."


def text_row(row: dict) -> dict:
    """A spoken-QA manifest row of the built-in task as a text row (its scene written in the prompt)."""
    prompt = f"{INSTRUCTION}\nScene: {row['transcript']}\nQuestion: {row['question']}"
    return {"id": row["id"], "audio": None, "prompt": prompt, "reference": row["reference"], "task": "qa",
            "answer": row["answer"], "held_out_pair": row["held_out_pair"]}


def build_text_task(out_dir: Path, *, seed: int = 0, n_train: int = 5000, n_valid: int = 300,
                    n_test: int = 300) -> dict:
    """Write the text task of the spoken task drawn with these settings (about half its rows: the
    QA ones) into ``out_dir``; its summary (a no-op returning it when already built)."""
    sizes = {"train": n_train, "valid": n_valid, "test": n_test}
    _check_args(sizes, 16000, 1, seed, "conventions")
    out_dir = Path(out_dir)
    settings = {"seed": seed, **{f"n_{s}": n for s, n in sizes.items()}, "format_version": FORMAT_VERSION}
    summary_path = out_dir / "summary.json"
    if summary_path.is_file() and all((out_dir / f"{s}.jsonl").is_file() for s in SPLITS):
        existing = json.loads(summary_path.read_text(encoding="utf-8"))
        if existing.get("settings") == settings:
            return existing
    rows = {split: [text_row(r) for r in drawn if r["task"] == "sqa"] for split, drawn in draw_all(seed, sizes).items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    summary_path.unlink(missing_ok=True)
    for split in SPLITS:
        write_text_atomic(out_dir / f"{split}.jsonl", manifest_text(rows[split]))
    summary = {"format_version": FORMAT_VERSION, "settings": settings,
               "counts": {split: {"rows": len(r), "held_out_pair": sum(x["held_out_pair"] for x in r)}
                          for split, r in rows.items()}}
    write_text_atomic(summary_path, json.dumps(summary, indent=2) + "\n")
    return summary
