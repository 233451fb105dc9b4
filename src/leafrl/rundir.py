"""A run directory: what ``leafrl train`` and ``leafrl sft`` write there, and how a new run,
``--resume`` and ``--overwrite`` treat what is already there, and how a run stops (stdlib only).

    OUT/config.yaml          the resolved settings; local paths absolute, so it reads the same
                             from any working directory (``config.resolve_paths``)
    OUT/metrics.jsonl        one object per step
    OUT/tensorboard/         the same metrics as TensorBoard events
    OUT/before.json          held-out metrics and predictions before training (after.json: after)
    OUT/summary.json         written last: its presence marks a finished run
    OUT/rollouts/step-N.json rollout groups saved at evaluations (``leafrl inspect``)
    OUT/checkpoints/step-N/  LoRA adapter, optimizer, state and a manifest that verifies them
    OUT/model/               (``leafrl sft``) the trained model

A new run into a directory that holds any of these is refused unless ``overwrite`` (which
deletes those, and nothing else); ``resume`` continues the run there and writes only there.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from leafrl._files import write_text_atomic
from leafrl.errors import UserError

TRAIN_FILES = ("config.yaml", "metrics.jsonl", "tensorboard", "before.json", "after.json", "summary.json",
               "rollouts", "checkpoints")
SFT_FILES = ("config.yaml", "metrics.jsonl", "tensorboard", "summary.json", "model")


def run_files(out: Path, names: tuple[str, ...] = TRAIN_FILES) -> list[str]:
    """The run files among ``names`` that ``out`` holds."""
    return [name for name in names if (Path(out) / name).exists()]


def claim(out: Path, *, resume: bool, overwrite: bool, names: tuple[str, ...] = TRAIN_FILES) -> list[str]:
    """Check that a run may write into ``out``: with ``resume`` it must hold a run (its
    config.yaml); without, it must hold none, unless ``overwrite``. Returns the run files that
    ``overwrite`` replaces: delete them with ``remove`` once the new run is known to start, so a
    mistake found on the way costs nothing. Raises ValueError naming the directory."""
    out = Path(out)
    if resume and overwrite:
        raise UserError("--resume and --overwrite: give one (--resume continues the run, --overwrite deletes it)")
    present = run_files(out, names)
    if resume:
        if "config.yaml" not in present:
            raise UserError(f"--resume {out}: no run there (no config.yaml)")
        return []
    if present and not overwrite:
        raise UserError(f"{out} already holds a run ({', '.join(present)}): continue it with --resume {out}, or "
                         "start again with --overwrite (which deletes those)")
    return present


def remove(out: Path, names: list[str]) -> None:
    """Delete the run files ``names`` (from ``claim``) in ``out``."""
    for name in names:
        path = Path(out) / name
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)


def rewind(out: Path, step: int) -> None:
    """Make ``out`` hold what a run stopped after ``step`` (its checkpoint) holds: metrics.jsonl
    cut to the rows of steps <= ``step``, later rollouts and the finished-run files (after.json,
    summary.json) removed, and temporaries of interrupted writes deleted."""
    out = Path(out)
    metrics = out / "metrics.jsonl"
    if metrics.is_file():
        lines = metrics.read_text(encoding="utf-8").splitlines()
        kept = []
        for line in lines:
            try:
                if json.loads(line)["step"] <= step:
                    kept.append(line)
            except (json.JSONDecodeError, KeyError, TypeError):
                continue  # a line cut short by a kill: the step it began is repeated anyway
        write_text_atomic(metrics, "".join(line + "\n" for line in kept))
    for record in (out / "rollouts").glob("step-*.json"):
        if int(record.stem.removeprefix("step-")) > step:
            record.unlink()
    for name in ("after.json", "summary.json"):
        (out / name).unlink(missing_ok=True)
    for tmp in (out / "checkpoints").glob(".step-*"):
        shutil.rmtree(tmp, ignore_errors=True)
    for root, _, files in os.walk(out):
        for name in files:
            if name.startswith(".") and name.endswith(".tmp"):
                (Path(root) / name).unlink(missing_ok=True)


@contextmanager
def stop_on_interrupt():
    """The first Ctrl-C asks the loop to stop after the current step (it then saves a
    checkpoint); a second one interrupts at once."""
    state = {"stop": False}

    def handler(signum, frame):
        if state["stop"]:
            raise KeyboardInterrupt
        state["stop"] = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield state
    finally:
        signal.signal(signal.SIGINT, previous)


@contextmanager
def state_kept(out: Path, step: Callable[[], int], main: bool):
    """On an error inside the training loop, tell how to go on from the run's checkpoints: a
    ``UserError`` gets it at the end of its one line, any other error (a bug) as a warning on
    stderr before its traceback. The error itself goes on up. ``step()``: the steps finished."""
    try:
        yield
    except UserError as err:
        err.args = (f"{err}; {out} keeps its checkpoints: once fixed, --resume {out} continues from the newest",)
        raise
    except Exception:
        if main:
            print(f"warning: training stopped by an error in step {step() + 1}: {out} keeps its checkpoints; "
                  f"once the cause is fixed, `leafrl train --resume {out}` continues from the newest",
                  file=sys.stderr)
        raise
