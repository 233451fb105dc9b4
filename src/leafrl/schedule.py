"""The schedule of a run: which prompts each RL step reads (``prompts_for``), which rows each
optimizer step of an update takes (``minibatch_order``) and the learning rate of the paper
(linear warmup, then cosine decay to a floor)."""

from __future__ import annotations

import math
from typing import Any

import torch


def warmup_cosine(step: int, total: int, peak: float, warmup_frac: float, floor_ratio: float) -> float:
    """lr of optimizer step ``step`` (0-based) of ``total``: linear warmup over
    max(1, warmup_frac * total) steps to ``peak``, then cosine down to ``floor_ratio * peak``
    at the last step (the horizon is the real number of optimizer steps)."""
    warmup = max(1, int(warmup_frac * total))
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - 1 - warmup)
    return peak * (floor_ratio + (1 - floor_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def prompts_for(step: int, train: list[Any], per_step: int, seed: int, rank: int = 0, world: int = 1) -> list[Any]:
    """This process's prompts of ``step``: consecutive slices of a seeded permutation per epoch,
    ``per_step`` for each of the ``world`` processes (each prompt's K responses stay on one)."""
    total = per_step * world
    per_epoch = max(1, len(train) // total)
    epoch, index = divmod(step, per_epoch)
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed + epoch)).tolist()
    mine = order[index * total:(index + 1) * total][rank * per_step:(rank + 1) * per_step]
    return [train[i] for i in mine]


def minibatch_order(n_rows: int, size: int, epochs: int, seed: int) -> list[torch.Tensor]:
    """The rows [n] of each optimizer step: per epoch, a permutation seeded by ``seed`` cut into
    minibatches of ``size``. When one minibatch takes all rows, they keep their order."""
    if size >= n_rows and epochs == 1:
        return [torch.arange(n_rows)]
    generator = torch.Generator().manual_seed(seed)
    return [part for _ in range(epochs) for part in torch.randperm(n_rows, generator=generator).split(size)]
