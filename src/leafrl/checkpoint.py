"""Atomic, verified training checkpoints: the LoRA adapter (peft format), the optimizer, the step.

Layout under ``OUT/checkpoints``: one directory per saved step (``step-000050``). A checkpoint is
written to a temporary directory (``.step-...``) and renamed into place, so a crash mid-write
leaves the previous one intact. Its ``manifest.json``, written last, lists every file's size and
SHA-256: a checkpoint is intact when its files match, and loading takes the newest intact one,
naming the ones it skipped (a disk that filled up, a file cut short or changed later).
Everything random in a training step is seeded from (seed, step), so the step is all the
position a resumed run needs: the data order and the sampling follow from it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from leafrl._files import free_space, os_problem
from leafrl.errors import UserError
from leafrl.identity import save_adapter

KEEP = 2  # complete checkpoints kept on disk
MANIFEST = "manifest.json"


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file (hex), read in 1 MB blocks."""
    sha = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST)


def save_checkpoint(out: Path, step: int, model: Any, optimizer: torch.optim.Optimizer, extra: dict,
                    base: dict | None = None) -> Path:
    """Write checkpoint ``step`` atomically with its manifest, then prune to the ``KEEP`` newest;
    returns its directory. ``base``: the identity of the model the LoRA is trained on, saved
    beside the adapter (``leafrl.identity``). A disk without room for it is a UserError saying so,
    and the checkpoints already there are kept."""
    root = out / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:06d}"
    need = checkpoint_bytes(model, optimizer)
    if shutil.disk_usage(root).free < need:
        raise UserError(f"cannot write checkpoint {final.name} in {root}: no space left on the disk (about "
                        f"{need / 1e6:.1f} MB needed, {free_space(root)} free); free some space")
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".step-{step:06d}."))
    try:
        model.save_pretrained(tmp / "adapter")
        if base is not None:
            save_adapter(tmp / "adapter", base)
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        (tmp / "state.json").write_text(json.dumps({"step": step, **extra}, indent=2))
        manifest = {str(p.relative_to(tmp)): {"bytes": p.stat().st_size, "sha256": sha256_of(p)} for p in _files(tmp)}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
    except (OSError, RuntimeError) as err:  # torch says "unexpected pos" where the disk filled up
        shutil.rmtree(tmp, ignore_errors=True)
        problem = os_problem(err) if isinstance(err, OSError) else None
        if problem is None and shutil.disk_usage(root).free >= need:
            raise  # not the disk: a bug
        raise UserError(f"cannot write checkpoint {final.name} in {root}: "
                        f"{problem or f'no space left on the disk ({free_space(root)} free)'}; free some space"
                        ) from err
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    older = sorted(p for p in root.glob("step-*") if p.name < final.name)  # newer ones: skipped on resume
    for old in older[: max(0, len(older) - (KEEP - 1))]:
        shutil.rmtree(old)
    return final


def checkpoint_bytes(model: Any, optimizer: torch.optim.Optimizer) -> int:
    """About what a checkpoint takes on disk: the trained weights and the optimizer's state
    (Adam: two moments per weight), plus a megabyte of metadata."""
    trained = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    state = sum(v.numel() * v.element_size() for s in optimizer.state.values() for v in s.values()
                if isinstance(v, torch.Tensor))
    return trained + max(state, 2 * trained) + (1 << 20)


def problem_of(path: Path) -> str | None:
    """Why checkpoint ``path`` cannot be used (a missing manifest, a file missing, of another
    size or content than the manifest says), or None when it is intact."""
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except FileNotFoundError:
        return "no manifest.json (written last: the checkpoint was never finished)"
    except (json.JSONDecodeError, UnicodeDecodeError):
        return "manifest.json is not valid JSON"
    for name, want in manifest.items():
        file = path / name
        if not file.is_file():
            return f"{name} is missing"
        if file.stat().st_size != want["bytes"]:
            return f"{name} has {file.stat().st_size} bytes, the manifest says {want['bytes']}"
        if sha256_of(file) != want["sha256"]:
            return f"{name} does not match its checksum"
    return None


def find_checkpoint(out: Path) -> tuple[Path | None, list[str]]:
    """The newest intact checkpoint of run directory ``out`` (None if there is none), and the
    newer ones skipped, each as "step-000004: why"."""
    skipped = []
    for path in sorted((Path(out) / "checkpoints").glob("step-*"), reverse=True):
        problem = problem_of(path)
        if problem is None:
            return path, skipped
        skipped.append(f"{path.name}: {problem}")
    return None, skipped


def latest_checkpoint(out: Path) -> Path | None:
    """The newest intact checkpoint of a run directory, or None."""
    return find_checkpoint(out)[0]


def load_checkpoint(path: Path, model: Any, optimizer: torch.optim.Optimizer) -> dict:
    """Restore adapter weights and optimizer state in place; returns the saved state dict."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    adapter = path / "adapter" / "adapter_model.safetensors"
    set_peft_model_state_dict(model, load_file(str(adapter)))
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    return json.loads((path / "state.json").read_text())


def restore(out: Path, model: Any, optimizer: torch.optim.Optimizer) -> tuple[int, Path | None, list[str]]:
    """Load the newest intact checkpoint of run directory ``out`` into ``model`` and ``optimizer``:
    (its step, or 0 when there is none; the checkpoint; the newer ones skipped, as
    ``find_checkpoint`` names them). Checkpoints none of which is intact raise ValueError."""
    checkpoint, skipped = find_checkpoint(out)
    if checkpoint is None and skipped:
        raise UserError(f"--resume {out}: no intact checkpoint (skipped {'; '.join(skipped)}); start again "
                         "with --overwrite")
    return (0 if checkpoint is None else load_checkpoint(checkpoint, model, optimizer)["step"]), checkpoint, skipped


def adapter_dir(path: Path) -> Path:
    """The LoRA adapter directory that ``path`` names: an adapter directory itself (peft's
    adapter_config.json), a checkpoint (its adapter/) or a run directory (its newest intact checkpoint's)."""
    path = Path(path)
    if (path / "adapter_config.json").is_file():
        return path
    if (path / "adapter" / "adapter_config.json").is_file():
        return path / "adapter"
    checkpoint, skipped = find_checkpoint(path) if path.is_dir() else (None, [])
    if checkpoint is None:
        why = f" (skipped {'; '.join(skipped)})" if skipped else ""
        raise UserError(f"--adapter {path}: not a LoRA adapter, a checkpoint or a run directory with an intact "
                         f"checkpoint{why}")
    return checkpoint / "adapter"
