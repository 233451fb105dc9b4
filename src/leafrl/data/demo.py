"""The built-in spoken tasks: English speech synthesized with espeak-ng, in two tasks, drawn by
a ``Mix`` (``MIXES``: "conventions", both tasks, mostly one-clause sentences; "local",
translation of two-clause sentences).

``build_demo(out_dir)`` writes ``train.jsonl``, ``valid.jsonl``, ``test.jsonl`` (one JSON object
per line), ``audio/<split>/<id>.flac`` (mono, ``sampling_rate`` Hz) and ``summary.json``.
A row is ``{"id", "audio" (relative to out_dir), "prompt", "reference", "task", "transcript",
["question", "answer",] "voice", "speed", "pitch", "held_out_pair", "held_out_voice", "duration"}``:

  - task "ast": speech translation; the transcript is an English sentence from
    :mod:`leafrl.data.grammar` and the reference its rule-built German translation;
  - task "sqa": spoken QA; the audio describes a scene, the prompt asks a question about it and
    the reference is a short English answer.

Speakers: each row draws a voice ``<accent>+<variant>`` (espeak-ng), a speed in words per
minute and a pitch from the seeded RNG. A clip longer than MAX_SECONDS is spoken again faster
(its row records the speed used), so every clip fits the built-in model's 8 s feature window.

Held out of train (both appear only in valid and test, each in about half of their rows):
  - the ``(color, noun)`` pairs of HELD_OUT_PAIRS ("red car", ...): no train transcript or
    question contains one, though train has every color and every noun;
  - every voice whose variant is in HELD_OUT_VARIANTS (new speakers of the same accents).
No transcript (the spoken text) occurs twice in the whole dataset, so the splits are disjoint.

Determinism: the rows come from ``random.Random`` seeded by (seed, split); valid and test are
drawn first, so they do not change with ``n_train``. The same seed gives byte-identical
manifests with the same espeak-ng (``duration`` is the only field that depends on its version).

Interruptions: a build first deletes an old ``summary.json`` and the manifests, then writes the
audio, then the three manifests, then ``summary.json`` (each file atomically: temporary name,
then ``os.replace``). So a directory holds manifests only for audio that is all there, and
``summary.json`` marks a complete build. Building into a directory whose ``summary.json`` has
the same settings (seed, sizes, sampling rate, format version) does nothing and returns that
summary; delete ``summary.json`` to force a rebuild. Stale ``.flac`` files that a new build does
not reference are deleted from ``audio/<split>/``.
"""

from __future__ import annotations

import functools
import io
import json
import math
import random
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import nullcontext
from multiprocessing import get_context
from pathlib import Path
from typing import NamedTuple

import numpy as np
import soundfile as sf

from leafrl._files import write_text_atomic
from leafrl.audio.io import resample, write_audio
from leafrl.data import grammar
from leafrl.errors import UserError

FORMAT_VERSION = 4  # 4: sqa rows carry the bare "answer" (the built-in base corpus uses it)
SPLITS = ("train", "valid", "test")
DRAW_ORDER = ("valid", "test", "train")  # evaluation splits first: independent of n_train


class Mix(NamedTuple):
    """What a built-in task draws: the share of spoken-QA rows (the rest translation) and the
    weights of 1, 2 and 3 clauses in a translation's sentence."""

    sqa_fraction: float
    clause_weights: dict[int, float]


MIXES = {
    # both tasks, mostly one-clause sentences: the built-in task (builtin:conventions)
    "conventions": Mix(0.5, grammar.CLAUSE_COUNT_WEIGHTS),
    # translation of two-clause sentences: long answers with many independent word choices (builtin:local)
    "local": Mix(0.0, {2: 1.0}),
}
EVAL_HELD_OUT_PAIR_FRACTION = 0.5  # of valid/test rows required to contain a held-out pair
EVAL_HELD_OUT_VOICE_FRACTION = 0.5  # of valid/test rows spoken by a held-out voice
HELD_OUT_PAIRS = frozenset({
    ("red", "car"), ("blue", "cat"), ("green", "apple"), ("yellow", "dog"), ("black", "book"),
    ("white", "cup"), ("brown", "horse"), ("gray", "lamp"), ("red", "bottle"), ("blue", "house"),
    ("green", "chair"), ("yellow", "egg"),
})
# Eight training voices and four held-out ones: acoustic variety costs a tiny model trained from
# scratch hearing time (docs/results.md).
ACCENTS = ("en-us", "en-gb")
TRAIN_VARIANTS = ("m1", "m3", "f1", "f3")
HELD_OUT_VARIANTS = ("m2", "f2")
TRAIN_VOICES = tuple(f"{a}+{v}" for a in ACCENTS for v in TRAIN_VARIANTS)
HELD_OUT_VOICES = tuple(f"{a}+{v}" for a in ACCENTS for v in HELD_OUT_VARIANTS)
SPEED_WPM = (140, 180)  # espeak-ng -s, drawn uniformly (inclusive)
PITCH = (40, 60)  # espeak-ng -p (0-99, default 50), drawn uniformly (inclusive)
MAX_SECONDS = 7.5  # a longer clip is spoken again, faster (the built-in model's window is 8 s)
MAX_SPEED_WPM = 450  # espeak-ng speaks no faster
AMPLITUDE = 60  # espeak-ng -a; at the default 100 voices clip (peak 1.0, > 1 after resampling)
# (the "klatt" variant is left out: it peaks near 1.0 even at -a 60; the others stay below ~0.7)
MAX_TRIES = 1000
CHUNKSIZE = 8
INSTALL_HINT = ("install it with `apt-get install espeak-ng` (Debian/Ubuntu) or "
                "`brew install espeak-ng` (macOS)")


class EspeakError(UserError):
    """espeak-ng is missing, lacks a voice, or failed on an utterance (the message says which)."""


# ---- espeak-ng --------------------------------------------------------------------------------

def find_espeak() -> str:
    """Path of the espeak-ng executable on PATH, or EspeakError saying how to install it."""
    path = shutil.which("espeak-ng")
    if path is None:
        raise EspeakError(f"espeak-ng is not on PATH; the demo dataset needs it: {INSTALL_HINT}")
    return path


def espeak_version(espeak: str) -> str:
    """The version espeak-ng reports, e.g. "1.51"."""
    out = subprocess.run([espeak, "--version"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"text-to-speech:\s*(\S+)", out)
    if match is None:
        raise EspeakError(f"cannot read a version from `{espeak} --version`: {out.strip()!r}")
    return match.group(1)


def synthesize(espeak: str, text: str, voice: str, speed: int, pitch: int) -> tuple[np.ndarray, int]:
    """Speak ``text`` -> (float32 mono [S], rate); espeak-ng writes 16-bit WAV, 22050 Hz."""
    cmd = [espeak, "-v", voice, "-s", str(speed), "-p", str(pitch), "-a", str(AMPLITUDE), "--stdout", text]
    result = subprocess.run(cmd, capture_output=True)
    if result.returncode != 0 or not result.stdout:
        raise EspeakError(f"espeak-ng failed (exit {result.returncode}) with voice {voice!r} on {text!r}: "
                          f"{result.stderr.decode(errors='replace').strip()}")
    audio, rate = sf.read(io.BytesIO(result.stdout), dtype="float32")
    if audio.ndim != 1 or audio.size == 0:
        raise EspeakError(f"espeak-ng gave audio of shape {list(audio.shape)} for {text!r} ({voice!r})")
    return audio, rate


def check_voices(espeak: str) -> None:
    """Raise EspeakError if espeak-ng lacks an accent or a variant this module uses.

    An unknown accent makes espeak-ng exit non-zero, but an unknown variant is silently
    replaced by the accent's default voice, so each variant must sound different from it.
    """
    for accent in ACCENTS:
        synthesize(espeak, "hello", accent, 160, 50)
    plain, _ = synthesize(espeak, "hello", ACCENTS[0], 160, 50)
    for variant in TRAIN_VARIANTS + HELD_OUT_VARIANTS:
        audio, _ = synthesize(espeak, "hello", f"{ACCENTS[0]}+{variant}", 160, 50)
        if np.array_equal(audio, plain):
            raise EspeakError(f"this espeak-ng ({espeak}) has no voice variant {variant!r}: it "
                              "spoke with the default voice instead; install a newer espeak-ng")


# ---- rows (pure) ------------------------------------------------------------------------------

def _draw_utterance(rng: random.Random, split: str, seen: set[str], mix: Mix) -> grammar.Utterance:
    """A task and its text: no held-out pair in train, one in half of valid/test, never seen before."""
    want_pair = split != "train" and rng.random() < EVAL_HELD_OUT_PAIR_FRACTION
    sample = (grammar.sample_sqa if rng.random() < mix.sqa_fraction
              else functools.partial(grammar.sample_ast, clause_weights=mix.clause_weights))
    for _ in range(MAX_TRIES):
        utterance = sample(rng)
        has_pair = bool(utterance.pairs & HELD_OUT_PAIRS)
        unwanted = has_pair if split == "train" else want_pair and not has_pair
        if not unwanted and utterance.transcript not in seen:
            seen.add(utterance.transcript)
            return utterance
    raise RuntimeError(f"split {split!r}: no new utterance in {MAX_TRIES} tries (seen {len(seen)})")


def draw_rows(split: str, n: int, seed: int, seen: set[str], mix: str = "conventions") -> list[dict]:
    """The ``n`` manifest rows of ``split`` (without ``duration``) drawn by ``MIXES[mix]``; adds
    their transcripts to ``seen``."""
    prefix = "leafrl-demo" if mix == "conventions" else f"leafrl-demo-{mix}"
    rng = random.Random(f"{prefix}/{seed}/{split}")
    rows = []
    for index in range(n):
        utterance = _draw_utterance(rng, split, seen, MIXES[mix])
        held_voice = split != "train" and rng.random() < EVAL_HELD_OUT_VOICE_FRACTION
        row_id = f"{split}-{index:05d}"
        row = {"id": row_id, "audio": f"audio/{split}/{row_id}.flac", "prompt": utterance.prompt,
               "reference": utterance.reference, "task": utterance.task,
               "transcript": utterance.transcript}
        if utterance.question is not None:
            row |= {"question": utterance.question, "answer": utterance.answer}
        row |= {"voice": rng.choice(HELD_OUT_VOICES if held_voice else TRAIN_VOICES),
                "speed": rng.randint(*SPEED_WPM), "pitch": rng.randint(*PITCH),
                "held_out_pair": bool(utterance.pairs & HELD_OUT_PAIRS), "held_out_voice": held_voice}
        rows.append(row)
    return rows


def draw_all(seed: int, sizes: dict[str, int], mix: str = "conventions") -> dict[str, list[dict]]:
    """Rows of every split, drawn in DRAW_ORDER with one shared set of seen transcripts."""
    seen: set[str] = set()
    drawn = {split: draw_rows(split, sizes[split], seed, seen, mix) for split in DRAW_ORDER}
    return {split: drawn[split] for split in SPLITS}


# ---- synthesis --------------------------------------------------------------------------------

class Job(NamedTuple):
    espeak: str
    text: str
    voice: str
    speed: int
    pitch: int
    path: str
    sampling_rate: int


def render_job(job: Job) -> tuple[int, int]:
    """Synthesize one row, resample, write its FLAC; returns (length in samples, speed used):
    a clip longer than MAX_SECONDS is spoken again at the speed that fits it, plus 5%."""
    speed = job.speed
    audio, rate = synthesize(job.espeak, job.text, job.voice, speed, job.pitch)
    while len(audio) > MAX_SECONDS * rate:
        speed = math.ceil(speed * len(audio) / (MAX_SECONDS * rate) * 1.05)
        if speed > MAX_SPEED_WPM:
            raise EspeakError(f"{job.text!r} ({job.voice!r}) lasts over {MAX_SECONDS:g} s even at "
                              f"{MAX_SPEED_WPM} words a minute; shorten it")
        audio, rate = synthesize(job.espeak, job.text, job.voice, speed, job.pitch)
    audio = resample(audio, rate, job.sampling_rate)
    write_audio(job.path, audio, job.sampling_rate)
    return len(audio), speed


def _progress(enabled: bool):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

    return Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=Console(stderr=True),
                    disable=not enabled)


def render_all(jobs: list[Job], workers: int, progress: bool) -> list[tuple[int, int]]:
    """Run ``jobs`` in order on ``workers`` processes (in this one when 1); their
    (length, speed) in order."""
    # The pool is started before the progress bar's thread, so forking copies no thread.
    with get_context().Pool(workers) if workers > 1 else nullcontext() as pool, _progress(progress) as bar:
        task = bar.add_task("synthesizing speech", total=len(jobs))
        results: Iterator[tuple[int, int]] = pool.imap(render_job, jobs, CHUNKSIZE) if pool else map(render_job, jobs)
        done = []
        for result in results:
            done.append(result)
            bar.advance(task)
    return done


# ---- files ------------------------------------------------------------------------------------

def manifest_text(rows: list[dict]) -> str:
    """JSONL: one object per line, UTF-8 (no ASCII escapes), keys in row order."""
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def _existing_build(out_dir: Path, settings: dict) -> dict | None:
    """The summary of a complete build of ``settings`` in ``out_dir``, else None."""
    path = out_dir / "summary.json"
    if not path.is_file():
        return None
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise UserError(f"{path} is not a leafrl demo summary ({err}); remove it or pick another "
                         "out_dir") from None
    complete = all((out_dir / f"{split}.jsonl").is_file() for split in SPLITS)
    return summary if complete and summary.get("settings") == settings else None


def _prune_audio(out_dir: Path, rows: dict[str, list[dict]]) -> None:
    """Delete ``audio/<split>/*.flac`` files that no row references (left by an earlier build)."""
    keep = {row["audio"] for split_rows in rows.values() for row in split_rows}
    for split in SPLITS:
        for path in (out_dir / "audio" / split).glob("*.flac"):
            if path.relative_to(out_dir).as_posix() not in keep:
                path.unlink()


def _summary(settings: dict, rows: dict[str, list[dict]], espeak: str, seconds: float) -> dict:
    counts = {split: {"rows": len(r), **{t: sum(x["task"] == t for x in r) for t in ("ast", "sqa")},
                      "held_out_pair": sum(x["held_out_pair"] for x in r),
                      "held_out_voice": sum(x["held_out_voice"] for x in r)} for split, r in rows.items()}
    durations = [row["duration"] for split_rows in rows.values() for row in split_rows]
    return {"format_version": FORMAT_VERSION, "settings": settings, "counts": counts,
            "held_out_pairs": sorted(f"{c} {n}" for c, n in HELD_OUT_PAIRS),
            "voices": {"train": list(TRAIN_VOICES), "held_out": list(HELD_OUT_VOICES)},
            "speed_wpm": list(SPEED_WPM), "pitch": list(PITCH), "amplitude": AMPLITUDE,
            "mean_duration_s": round(float(np.mean(durations)), 3) if durations else 0.0,
            "total_duration_h": round(sum(durations) / 3600, 3),
            "build_seconds": round(seconds, 1), "espeak_ng": espeak_version(espeak)}


def _check_args(sizes: dict[str, int], sampling_rate: int, workers: int, seed: int, mix: str) -> None:
    def is_int(x: object) -> bool:
        return isinstance(x, int) and not isinstance(x, bool)

    for split, n in sizes.items():
        if not is_int(n) or n < 0:
            raise UserError(f"n_{split} must be an int >= 0, got {n!r}")
    if not is_int(sampling_rate) or sampling_rate <= 0:
        raise UserError(f"sampling_rate must be a positive int, got {sampling_rate!r}")
    if not is_int(workers) or workers < 1:
        raise UserError(f"workers must be an int >= 1, got {workers!r}")
    if not is_int(seed):
        raise UserError(f"seed must be an int, got {seed!r}")
    if mix not in MIXES:
        raise UserError(f"mix must be one of {', '.join(MIXES)}, got {mix!r}")


def build_demo(out_dir: Path, *, seed: int = 0, n_train: int = 5000, n_valid: int = 300, n_test: int = 300,
               sampling_rate: int = 16000, workers: int = 2, progress: bool = True,
               mix: str = "conventions") -> dict:
    """Build the demo dataset in ``out_dir`` (see the module docstring) and return its summary.

    ``mix`` names what the rows draw (``MIXES``). A no-op returning the existing summary when
    ``out_dir`` already holds a complete build with the same seed, sizes, sampling rate and mix.
    ``workers`` processes run espeak-ng (~15 ms per utterance each); ``progress`` shows a rich
    progress bar on stderr.
    """
    sizes = {"train": n_train, "valid": n_valid, "test": n_test}
    _check_args(sizes, sampling_rate, workers, seed, mix)
    out_dir = Path(out_dir)
    settings = {"seed": seed, **{f"n_{s}": n for s, n in sizes.items()}, "sampling_rate": sampling_rate,
                "format_version": FORMAT_VERSION, **({} if mix == "conventions" else {"mix": mix})}
    existing = _existing_build(out_dir, settings)
    if existing is not None:
        return existing
    start = time.perf_counter()
    espeak = find_espeak()
    check_voices(espeak)
    rows = draw_all(seed, sizes, mix)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in ("summary.json", *(f"{split}.jsonl" for split in SPLITS)):
        (out_dir / name).unlink(missing_ok=True)
    ordered = [row for split in SPLITS for row in rows[split]]
    jobs = [Job(espeak, row["transcript"], row["voice"], row["speed"], row["pitch"],
                str(out_dir / row["audio"]), sampling_rate) for row in ordered]
    for row, (length, speed) in zip(ordered, render_all(jobs, workers, progress)):
        row["speed"], row["duration"] = speed, round(length / sampling_rate, 3)
    _prune_audio(out_dir, rows)
    for split in SPLITS:
        write_text_atomic(out_dir / f"{split}.jsonl", manifest_text(rows[split]))
    summary = _summary(settings, rows, espeak, time.perf_counter() - start)
    write_text_atomic(out_dir / "summary.json", json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return summary
