"""Rows arranged by group (prompt), and the pieces the estimators share (``leafrl.advantages``,
``leafrl.token_credit``): token ids for exact prefix tests, pairwise common prefixes, GRPO's
terms. Pure: torch only.

Shapes: N rows, T tokens, G groups, M slots per group (the largest group's size).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

GRPO_EPS = 1e-6  # spec GRPO baseline: (r - mean) / (max(std, floor) + eps)


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


def padded_tokens(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[N, T] float64 ids, -1 on padding (unlike any real id), for the exact prefix test."""
    if ids.numel() == 0:
        return ids.double()
    low, high = torch.aminmax(ids)  # over padding too: a cheap, conservative bound
    if low < 0 and bool((ids < 0).logical_and_(mask).any()):
        raise ValueError("completion_ids: real tokens must be ids >= 0")
    if 4 * (int(high) + 1) ** 2 * ids.shape[1] >= 2**53:  # bounds every partial sum of A, C
        raise ValueError(f"completion_ids: ids up to {int(high)} over {ids.shape[1]} tokens are "
                         "beyond the exact float64 prefix test (4 (max id + 1)^2 T < 2^53)")
    return ids.double().masked_fill_(~mask, -1.0)


def common_prefix(tok: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
    """lcp [G, M, M]: the longest common prefix of each pair of a group's rows, at most the
    shorter one's length. tok [G, M, T] (-1 on padding), length [G, M]. A [G, M, M, T] comparison."""
    t = tok.shape[2]
    differ = tok[:, :, None, :] != tok[:, None, :, :]  # [G, M, M, T]
    lcp = torch.where(differ.any(3), differ.to(torch.uint8).argmax(3), t)  # padded prefix
    return torch.minimum(lcp, torch.minimum(length[:, :, None], length[:, None, :]))


def grpo_terms(rewards: torch.Tensor, lay: GroupLayout, std_floor: float) -> tuple[torch.Tensor, torch.Tensor]:
    """GRPO's two terms: r - the group's mean [G, M] float64 (0 on empty slots) and the scale
    max(std, std_floor) + 1e-6 [G] (unbiased std; a group of one has deviation 0)."""
    x, _ = centred_rewards(rewards, lay)  # [G, M]
    cnt = lay.valid.sum(1)  # [G]
    dev = (x - (x.sum(1) / cnt)[:, None]) * lay.valid
    std = ((dev**2).sum(1) / (cnt - 1).clamp(min=1)).sqrt()
    return dev, std.clamp(min=std_floor) + GRPO_EPS
