"""Atomic training checkpoints: the LoRA adapter (peft format), the optimizer, and the step.

Layout under ``OUT/checkpoints``: one directory per saved step (``step-000050``) and a file
``latest`` naming the newest complete one. A checkpoint is written to a temporary directory and
renamed into place before ``latest`` moves, so a crash mid-write leaves the previous one intact.
Everything random in a training step is seeded from (seed, step), so the step is all the
position a resumed run needs: the data order and the sampling follow from it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from leafrl._files import write_text_atomic

KEEP = 2  # complete checkpoints kept on disk


def save_checkpoint(out: Path, step: int, model: Any, optimizer: torch.optim.Optimizer, extra: dict) -> Path:
    """Write checkpoint ``step`` atomically and point ``latest`` at it; returns its directory."""
    root = out / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:06d}"
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".step-{step:06d}."))
    model.save_pretrained(tmp / "adapter")
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    (tmp / "state.json").write_text(json.dumps({"step": step, **extra}, indent=2))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    write_text_atomic(root / "latest", final.name)
    older = sorted(p for p in root.glob("step-*") if p != final)
    for old in older[: max(0, len(older) - (KEEP - 1))]:
        shutil.rmtree(old)
    return final


def latest_checkpoint(out: Path) -> Path | None:
    """The newest complete checkpoint of a run directory, or None."""
    pointer = out / "checkpoints" / "latest"
    if not pointer.is_file():
        return None
    path = pointer.parent / pointer.read_text().strip()
    if not (path / "state.json").is_file():
        raise ValueError(f"{pointer}: points at {path}, which is not a complete checkpoint")
    return path


def load_checkpoint(path: Path, model: Any, optimizer: torch.optim.Optimizer) -> dict:
    """Restore adapter weights and optimizer state in place; returns the saved state dict."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    adapter = path / "adapter" / "adapter_model.safetensors"
    set_peft_model_state_dict(model, load_file(str(adapter)))
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    return json.loads((path / "state.json").read_text())


def adapter_dir(path: Path) -> Path:
    """The LoRA adapter directory that ``path`` names: an adapter directory itself (peft's
    adapter_config.json), a checkpoint (its adapter/) or a run directory (its latest checkpoint's)."""
    path = Path(path)
    if (path / "adapter_config.json").is_file():
        return path
    if (path / "adapter" / "adapter_config.json").is_file():
        return path / "adapter"
    checkpoint = latest_checkpoint(path) if path.is_dir() else None
    if checkpoint is None:
        raise ValueError(f"--adapter {path}: not a LoRA adapter, a checkpoint or a run directory with checkpoints")
    return checkpoint / "adapter"

