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


def steps_per_epoch(n_train: int, per_step: int, world: int = 1) -> int:
    """RL steps in one pass over ``n_train`` training prompts, ``per_step`` per process on each of
    ``world`` processes (a last partial step's prompts wait for the next pass)."""
    return max(1, n_train // (per_step * world))


def prompts_for(step: int, train: list[Any], per_step: int, seed: int, rank: int = 0, world: int = 1) -> list[Any]:
    """This process's prompts of ``step``: consecutive slices of a seeded permutation per epoch,
    ``per_step`` for each of the ``world`` processes (each prompt's K responses stay on one)."""
    total = per_step * world
    epoch, index = divmod(step, steps_per_epoch(len(train), per_step, world))
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed + epoch)).tolist()
    mine = order[index * total:(index + 1) * total][rank * per_step:(rank + 1) * per_step]
    return [train[i] for i in mine]


def lr_position(step: int, index: int, per_step: int, steps: int, per_epoch: int, restarts: bool) -> tuple[int, int]:
    """(position, horizon) of optimizer step ``index`` of RL step ``step`` in the learning-rate
    schedule (``warmup_cosine``), with ``per_step`` optimizer steps per RL step and ``steps`` RL
    steps in all. With ``restarts`` the schedule starts again at each pass over the training set
    (``per_epoch`` RL steps; the authors' warm restarts) and spans that pass; else the whole run."""
    if not restarts:
        return step * per_step + index, steps * per_step
    first = step - step % per_epoch
    return (step - first) * per_step + index, (min(first + per_epoch, steps) - first) * per_step


def minibatch_order(n_rows: int, size: int, epochs: int, seed: int, group: int = 1) -> list[torch.Tensor]:
    """The rows [n] of each optimizer step: per epoch, a seeded order of the rows cut into
    minibatches of ``size``. With ``group`` > 1 (the K rows of a prompt, consecutive) the order
    takes the prompts in a seeded order and each prompt's rows in a seeded order, so a minibatch
    spans as few prompts as it can (ceil(size / group) + 1 at most) and each is read once; with 1,
    a permutation of all rows. When one minibatch takes all rows, they keep their order."""
    if size >= n_rows and epochs == 1:
        return [torch.arange(n_rows)]
    if n_rows % group:
        raise ValueError(f"minibatch_order: {n_rows} rows are not whole groups of {group}")
    generator = torch.Generator().manual_seed(seed)

    def one_epoch() -> torch.Tensor:
        if group == 1:
            return torch.randperm(n_rows, generator=generator)
        prompts = torch.randperm(n_rows // group, generator=generator)  # [G]
        inside = torch.rand(n_rows // group, group, generator=generator).argsort(1)  # [G, K]
        return (prompts[:, None] * group + inside[prompts]).flatten()

    return [part for _ in range(epochs) for part in one_epoch().split(size)]
