"""A run directory: what ``leafrl train`` and ``leafrl sft`` write there, who may write there,
how a new run, ``--resume`` and ``--overwrite`` treat what is already there, and how a run stops
(stdlib only).

    OUT/.leafrl.lock         held by the one process writing the run (pid, host, command)
    OUT/config.yaml          the resolved settings; local paths absolute, so it reads the same
                             from any working directory (``config.resolve_paths``)
    OUT/identity.json        what the run was made from: model, tokenizer, data (``leafrl.identity``)
    OUT/metrics.jsonl        one object per step
    OUT/tensorboard/         the same metrics as TensorBoard events
    OUT/before.json          held-out metrics and predictions before training (after.json: after)
    OUT/summary.json         written last: its presence marks a finished run
    OUT/rollouts/step-N.json rollout groups saved at evaluations (``leafrl inspect``)
    OUT/checkpoints/step-N/  LoRA adapter, optimizer, state and a manifest that verifies them
    OUT/model/               (``leafrl sft``) the trained model

A run directory belongs to one process for the run's life: ``held`` takes an exclusive lock
(``fcntl.flock``) on OUT/.leafrl.lock before anything is written and gives it back at the end.
The operating system drops the lock of a process that dies however it dies, so a lock file left
by a killed run is free and simply taken again. A new run into a directory holding a run that
reached its first step is refused unless ``overwrite`` (which deletes leafrl's files there, and
nothing else); one that never got that far is not a run and is started again in place.
``resume`` continues the run there and writes only there.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import shutil
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from leafrl._files import CAUSES, os_problem, write_text_atomic
from leafrl.errors import UserError

TRAIN_FILES = ("config.yaml", "identity.json", "metrics.jsonl", "tensorboard", "before.json", "after.json",
               "summary.json", "rollouts", "checkpoints")
SFT_FILES = ("config.yaml", "metrics.jsonl", "tensorboard", "summary.json", "model")
LOCK = ".leafrl.lock"
# what leafrl writes inside its directories: --overwrite deletes these and leaves anything else
OWN = {"tensorboard": ("events.out.tfevents.*",), "rollouts": ("step-*.json", ".step-*.tmp"),
       "checkpoints": ("step-*", ".step-*"),
       "model": ("*.safetensors", "*.safetensors.index.json", "config.json", "generation_config.json",
                 "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                 "chat_template.jinja", "chat_template.json", "processor_config.json", "preprocessor_config.json",
                 "vocab.json", "merges.txt", "tokenizer.model", "leafrl_base.json")}


class RunLock:
    """This process's exclusive hold on run directory ``out`` (``take``; ``release`` gives it back)."""

    def __init__(self, out: Path, fd: int, created: bool):
        self.out, self.fd, self.created = out, fd, created

    @classmethod
    def take(cls, out: Path, what: str = "--out") -> RunLock:
        """Create ``out`` if needed and lock it, without waiting. Held by another process (or by
        another run of this one): UserError naming the holder. A path that cannot be a run
        directory (a file, a read-only parent): UserError naming it and the cause."""
        out = Path(out)
        if out.exists() and not out.is_dir():
            raise UserError(f"{what} {out}: a file, not a directory; give a directory for the run")
        created = not out.exists()
        try:
            out.mkdir(parents=True, exist_ok=True)
            for _ in range(3):  # a holder that releases between our open and flock unlinks the file
                fd = os.open(out / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    holder = os.read(fd, 4096).decode("utf-8", "replace").strip()
                    os.close(fd)
                    raise UserError(f"{out} is in use by another leafrl process ({_holder(holder)}): wait for it "
                                    f"to end or stop it, or choose another {what}") from None
                if os.path.exists(out / LOCK) and os.stat(out / LOCK).st_ino == os.fstat(fd).st_ino:
                    break
                os.close(fd)
            else:
                raise UserError(f"{out}: its lock file keeps being replaced by another process; try again")
            left = os.read(fd, 4096).decode("utf-8", "replace").strip()
            if left:
                print(f"note: {out}: taking over a lock left by a process that ended without giving it back "
                      f"({_holder(left)})", file=sys.stderr)
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": sys.argv,
                                      "since": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")})
                      .encode(), 0)
        except OSError as err:
            raise UserError(f"{what} {out}: cannot write there ({CAUSES.get(err.errno, err.strerror)})") from err
        return cls(out, fd, created)

    def release(self) -> None:
        """Give the directory back: the lock file goes, and the directory too if this lock made it
        and nothing else was written there."""
        (self.out / LOCK).unlink(missing_ok=True)
        os.close(self.fd)
        if self.created and not any(self.out.iterdir()):
            self.out.rmdir()


def _holder(text: str) -> str:
    """A lock file's content as "pid 12 on host h since ...: command", or as it is."""
    try:
        info = json.loads(text)
        return (f"pid {info['pid']} on {info['host']} since {info['since']}: "
                f"{' '.join(['leafrl', *info['command'][1:]])}")
    except (json.JSONDecodeError, KeyError, TypeError):
        return text or "no details recorded"


@dataclass
class Claim:
    """What a run may do in its directory: ``replaced``, the run files a new run deletes once it
    is known to start (``start``)."""

    out: Path
    replaced: list[str]

    def start(self) -> None:
        """Delete the run files a new run replaces: leafrl's own files, never one of yours."""
        for name in self.replaced:
            path = self.out / name
            if not path.is_dir():
                path.unlink(missing_ok=True)
                continue
            for pattern in OWN.get(name, ("*",)):
                for item in path.glob(pattern):
                    shutil.rmtree(item) if item.is_dir() and not item.is_symlink() else item.unlink()
            if not any(path.iterdir()):
                path.rmdir()


@contextmanager
def held(out: Path, *, resume: bool = False, overwrite: bool = False, names: tuple[str, ...] = TRAIN_FILES,
         main: bool = True) -> Iterator[Claim]:
    """Hold run directory ``out`` for the ``with`` block (``RunLock``; on the main process only,
    which alone writes) and check that the run may write there (``claim``)."""
    lock = RunLock.take(out) if main else None
    try:
        yield claim(out, resume=resume, overwrite=overwrite, names=names, main=main)
    finally:
        if lock is not None:
            lock.release()


def run_files(out: Path, names: tuple[str, ...] = TRAIN_FILES) -> list[str]:
    """The run files among ``names`` that ``out`` holds."""
    return [name for name in names if (Path(out) / name).exists()]


def reached_first_step(out: Path) -> bool:
    """Whether the run in ``out`` got past set-up: a logged step after step 0, a checkpoint, a
    saved model or a summary."""
    out = Path(out)
    if any((out / name).exists() for name in ("summary.json", "model")) or any((out / "checkpoints").glob("step-*")):
        return True
    try:
        lines = (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    except (FileNotFoundError, UnicodeDecodeError):
        return False
    for line in lines:
        try:
            if json.loads(line)["step"] >= 1:
                return True
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    return False


def claim(out: Path, *, resume: bool, overwrite: bool, names: tuple[str, ...] = TRAIN_FILES,
          main: bool = True) -> Claim:
    """Check that a run may write into ``out``: with ``resume`` it must hold a run (its
    config.yaml); without, it must hold none that reached its first step, unless ``overwrite``.
    The claim's ``replaced`` run files are deleted by ``Claim.start`` once the new run is known to
    start, so a mistake found on the way costs nothing. Raises UserError naming the directory."""
    out = Path(out)
    resumable = "checkpoints" in names
    if resume and overwrite:
        raise UserError("--resume and --overwrite: give one (--resume continues the run, --overwrite deletes it)")
    present = run_files(out, names)
    if resume:
        if "config.yaml" not in present:
            raise UserError(f"--resume {out}: no run there (no config.yaml)")
        return Claim(out, [])
    if present and not overwrite:
        if reached_first_step(out):
            how = f"continue it with --resume {out}, or start again" if resumable else "start again"
            raise UserError(f"{out} already holds a run ({', '.join(present)}): {how} with --overwrite (which "
                            "deletes leafrl's files there), or choose another --out")
        if main:
            print(f"note: {out} holds a run that never reached its first step: starting it again there",
                  file=sys.stderr)
    return Claim(out, present)


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
    except OSError as err:  # a full disk, a directory made read-only: the environment, not a bug
        if (problem := os_problem(err)) is None:
            raise
        raise UserError(f"{problem}; {out} keeps its checkpoints: once fixed, --resume {out} continues from the "
                        "newest") from err
    except UserError as err:
        err.args = (f"{err}; {out} keeps its checkpoints: once fixed, --resume {out} continues from the newest",)
        raise
    except Exception:
        if main:
            print(f"warning: training stopped by an error in step {step() + 1}: {out} keeps its checkpoints; "
                  f"once the cause is fixed, `leafrl train --resume {out}` continues from the newest",
                  file=sys.stderr)
        raise
