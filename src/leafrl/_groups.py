"""Rows arranged by group (prompt), shared by the LEAF and GRPO estimators. Pure: torch only.

Shapes: N rows, G groups, M slots per group (the largest group's size).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class GroupLayout:
    """Rows arranged by group: row ``rows[g, m]`` is slot m of group g (where ``valid``)."""

    ids: torch.Tensor  # [G] caller's group ids, ascending
    index: torch.Tensor  # [N] dense group of each row
    slot: torch.Tensor  # [N] slot of each row within its group
    rows: torch.Tensor  # [G, M] row at each slot (0 on empty slots)
    valid: torch.Tensor  # [G, M]
    dense: bool  # rows == arange(N).view(G, M): groups are equal-sized, contiguous and sorted

    def by_group(self, x: torch.Tensor, fill: float) -> torch.Tensor:
        """[N, ...] -> [G, M, ...], ``fill`` on empty slots (a view when ``dense``)."""
        if self.dense:
            return x.view(*self.rows.shape, *x.shape[1:])
        valid = self.valid.view(*self.valid.shape, *[1] * (x.ndim - 1))
        return x[self.rows].masked_fill(~valid, fill)

    def by_row(self, x: torch.Tensor) -> torch.Tensor:
        """[G, M, ...] -> [N, ...]."""
        if self.dense:
            return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])
        return x[self.index, self.slot]


def group_layout(group_ids: torch.Tensor) -> GroupLayout:
    (n,) = group_ids.shape
    ids, index = torch.unique(group_ids, return_inverse=True)
    g = ids.numel()
    counts = torch.bincount(index, minlength=g)
    order = torch.argsort(index, stable=True)  # rows keep their order inside a group
    starts = torch.cumsum(counts, 0) - counts
    arange = torch.arange(n, device=group_ids.device)
    slot = torch.empty_like(index)
    slot[order] = arange - starts[index[order]]
    m = int(counts.max())
    rows = torch.zeros(g, m, dtype=torch.long, device=group_ids.device)
    valid = torch.zeros(g, m, dtype=torch.bool, device=group_ids.device)
    rows[index, slot] = arange
    valid[index, slot] = True
    dense = g * m == n and bool(torch.equal(order, arange))
    return GroupLayout(ids, index, slot, rows, valid, dense)


def centred_rewards(rewards: torch.Tensor, lay: GroupLayout) -> tuple[torch.Tensor, torch.Tensor]:
    """Rewards minus their group's minimum, float64 [G, M] (0 on empty slots), and range [G].

    Every advantage is a difference of rewards, so the shift changes nothing, except that a
    group of equal rewards becomes exactly 0 and yields exact zeros (never 1e-17 noise).
    """
    r = rewards.double()
    low = lay.by_group(r, math.inf).amin(1)  # [G]
    high = lay.by_group(r, -math.inf).amax(1)
    return lay.by_group(r, 0.0) - low[:, None] * lay.valid, high - low
