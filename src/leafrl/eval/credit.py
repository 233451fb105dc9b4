"""Credit assignment measured without training: how an advantage estimator credits right and wrong tokens.

Each sampled response is aligned to its prompt's known reference (``token_correctness``): a generated token is
*right* when it is part of a matching block of the alignment, *wrong* otherwise. ``credit_metrics`` then scores
per-token advantages [N, T] (GRPO's one value per response broadcast to all its tokens, or LEAF's per-token values)
against those labels:

- ``auc``: within one response, the AUC of -advantage for telling its wrong tokens from its right ones,
  P(adv_wrong < adv_right) + 0.5 P(adv_wrong == adv_right) over all (wrong, right) token pairs of the response,
  averaged over the responses that have both kinds of token. It asks whether an estimator blames the wrong tokens
  *more than* the right tokens of the same response. GRPO gives every token of a response the same value, so every
  pair is a tie and its AUC is 0.5 by construction: it cannot tell tokens apart inside a response.
- ``wrong_negative``: the share of wrong tokens (over all responses) whose advantage is < 0 (they are discouraged).
- ``right_nonnegative_low``: the share of right tokens of low-reward responses (reward strictly below their group's
  mean) whose advantage is >= 0, i.e. the correct parts of a poor response are not punished. GRPO scores 0 here.

The ceiling that the same K responses allow is the AUC of ``segment_oracle``: it knows which tokens are wrong but
gives every token of one trie segment (``leafrl.token_credit.trie_segments``: a run of tokens shared by the same set of
responses) one value, since nothing the group's rewards say tells those tokens apart.

Each value is pooled over the whole set (a ratio of sums); its 95% interval is a percentile bootstrap that resamples
groups (prompts) with replacement, computed from per-group sums so each resample costs a few dot products.
"""

from __future__ import annotations

import math
from difflib import SequenceMatcher

import numpy as np
import torch

from leafrl._validate import check_finite, check_same_device, check_tensor

METRICS = ("auc", "wrong_negative", "right_nonnegative_low")


def token_correctness(response_ids: list[list[int]], reference_ids: list[list[int]]) -> list[list[bool]]:
    """For each response, True on tokens that are part of a match with its reference
    (``difflib.SequenceMatcher(None, response, reference, autojunk=False).get_matching_blocks()``), False elsewhere.
    The result has the response's length (an empty response gives [])."""
    if len(response_ids) != len(reference_ids):
        raise ValueError(f"reference_ids: expected {len(response_ids)} references (one per response), "
                         f"got {len(reference_ids)}")
    out = []
    for response, reference in zip(response_ids, reference_ids):
        right = [False] * len(response)
        for a, _, size in SequenceMatcher(None, list(response), list(reference), autojunk=False).get_matching_blocks():
            right[a:a + size] = [True] * size
        out.append(right)
    return out


def segment_oracle(segments: torch.Tensor, mask: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """The ceiling's token values [N, T] float32: each real token (mask [N, T] bool) takes the share of right
    tokens (right [N, T] bool) among the real tokens of its segment (segments [N, T] long, per row), 0 on padding.
    Ranking a row's segments by that share maximizes its AUC among values constant on segments."""
    check_tensor("segments", segments, "int", ndim=2)
    check_tensor("mask", mask, "bool", shape=tuple(segments.shape))
    check_tensor("right", right, "bool", shape=tuple(segments.shape))
    n, t = segments.shape
    width = int(segments.max()) + 1 if segments.numel() else 1  # segment ids per row
    key = (torch.arange(n, device=segments.device)[:, None] * width + segments)[mask]  # one id per (row, segment)
    count = torch.bincount(key, minlength=n * width).double()
    hits = torch.bincount(key, weights=right[mask].double(), minlength=n * width)
    values = torch.zeros(n, t, dtype=torch.float64, device=segments.device)
    values[mask] = hits[key] / count[key]
    return values.float()


def _response_auc(adv: torch.Tensor, real_right: torch.Tensor, real_wrong: torch.Tensor) -> torch.Tensor:
    """[N] per-response AUC (NaN where a response lacks right or wrong tokens), from float64 adv [N, T]."""
    wrong_sorted = torch.where(real_wrong, adv, math.inf).sort(dim=1).values.contiguous()  # [N, T], inf = not wrong
    below = torch.searchsorted(wrong_sorted, adv.contiguous(), side="left")  # [N, T] wrong tokens < each token
    upto = torch.searchsorted(wrong_sorted, adv.contiguous(), side="right")  # [N, T] wrong tokens <= each token
    wins = torch.where(real_right, below + 0.5 * (upto - below), 0.0).sum(1)  # [N] sum over right tokens
    pairs = real_right.sum(1).double() * real_wrong.sum(1).double()  # [N]
    return torch.where(pairs > 0, wins / pairs.clamp(min=1), math.nan)


def _check(advantages, mask, right, rewards, group_ids, n_samples) -> None:
    check_tensor("advantages", advantages, "float", ndim=2)
    if advantages.numel() == 0:
        raise ValueError(f"advantages: empty (shape {list(advantages.shape)})")
    n, t = advantages.shape
    check_tensor("mask", mask, "bool", shape=(n, t))
    check_tensor("right", right, "bool", shape=(n, t))
    floating = isinstance(rewards, torch.Tensor) and rewards.is_floating_point()
    check_tensor("rewards", rewards, "float" if floating else "int", shape=(n,))
    check_tensor("group_ids", group_ids, "int", shape=(n,))
    check_same_device(advantages=advantages, mask=mask, right=right, rewards=rewards, group_ids=group_ids)
    check_finite("advantages", advantages, where=mask)
    check_finite("rewards", rewards.double())
    if n_samples < 1:
        raise ValueError(f"n_samples: expected at least 1, got {n_samples}")


def _resampled_sums(stats: np.ndarray, n_samples: int, seed: int) -> np.ndarray:
    """[R, S] sums of per-group statistics stats [S, G] over R = n_samples resamples of the G groups
    with replacement (numpy rng seeded with ``seed``: the same resamples for the same G and seed)."""
    g = stats.shape[1]
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, g, size=(n_samples, g))  # [R, G] groups of each resample
    offsets = np.arange(n_samples)[:, None] * g
    times = np.bincount((draws + offsets).ravel(), minlength=n_samples * g).reshape(n_samples, g)  # [R, G]
    return times.astype(np.float64) @ stats.T


def auc_difference(advantages_a: torch.Tensor, advantages_b: torch.Tensor, mask: torch.Tensor, right: torch.Tensor,
                   group_ids: torch.Tensor, *, n_samples: int = 1000, seed: int = 0) -> dict[str, float]:
    """The within-response AUC of estimator A minus estimator B on the same responses, with a paired 95% percentile
    bootstrap over groups: {"value", "low", "high"}. Shapes as ``credit_metrics`` (advantages [N, T] float each)."""
    if not isinstance(advantages_b, torch.Tensor) or advantages_b.shape != advantages_a.shape:
        raise ValueError(f"advantages_b: expected the shape of advantages_a {list(advantages_a.shape)}")
    zeros = torch.zeros(advantages_a.shape[0], dtype=torch.float64, device=advantages_a.device)
    _check(advantages_a, mask, right, zeros, group_ids, n_samples)
    _check(advantages_b, mask, right, zeros, group_ids, n_samples)
    real_right, real_wrong = mask & right, mask & ~right
    auc_a = _response_auc(advantages_a.double(), real_right, real_wrong)  # [N]
    auc_b = _response_auc(advantages_b.double(), real_right, real_wrong)  # NaN on the same rows
    _, group = torch.unique(group_ids, return_inverse=True)
    per_row = torch.stack([torch.nan_to_num(auc_a - auc_b, nan=0.0), (~auc_a.isnan()).double()])  # [2, N]
    stats = torch.zeros(2, int(group.max()) + 1, dtype=torch.float64).index_add(1, group.cpu(), per_row.cpu()).numpy()
    if stats[1].sum() == 0:
        return {"value": math.nan, "low": math.nan, "high": math.nan}
    sums = _resampled_sums(stats, n_samples, seed)
    ok = sums[:, 1] > 0
    low_q, high_q = np.quantile(sums[ok, 0] / sums[ok, 1], [0.025, 0.975])
    return {"value": float(stats[0].sum() / stats[1].sum()), "low": float(low_q), "high": float(high_q)}


def credit_metrics(advantages: torch.Tensor, mask: torch.Tensor, right: torch.Tensor, rewards: torch.Tensor,
                   group_ids: torch.Tensor, *, n_samples: int = 1000, seed: int = 0) -> dict[str, dict[str, float]]:
    """Score advantages [N, T] float (per token; pass a GRPO [N] advantage expanded to [N, T]) against right [N, T]
    bool on the real tokens mask [N, T] bool, with rewards [N] and group_ids [N] int (one group per prompt).

    Returns {metric: {"value", "low", "high"}} for "auc", "wrong_negative" and "right_nonnegative_low" (see the
    module docstring): the pooled value and a 95% percentile bootstrap interval over ``n_samples`` resamples of
    groups (numpy rng seeded with ``seed``). A metric with nothing eligible gives NaN value and interval.
    """
    _check(advantages, mask, right, rewards, group_ids, n_samples)
    adv = advantages.double()
    real_right, real_wrong = mask & right, mask & ~right  # [N, T]
    _, group = torch.unique(group_ids, return_inverse=True)  # [N] dense group index
    g = int(group.max()) + 1

    # low reward: below the group mean, on rewards shifted by the group minimum (equal rewards are never "low")
    r = rewards.double()
    r = r - torch.full((g,), math.inf, dtype=r.dtype, device=r.device).scatter_reduce(0, group, r, "amin")[group]
    size = torch.bincount(group, minlength=g).double()  # [G]
    mean = torch.zeros(g, dtype=r.dtype, device=r.device).index_add(0, group, r) / size  # [G]
    low = r < mean[group]  # [N]

    auc = _response_auc(adv, real_right, real_wrong)  # [N]
    per_row = torch.stack([  # [6, N] numerators and denominators per response
        torch.nan_to_num(auc, nan=0.0), (~auc.isnan()).double(),
        (real_wrong & (adv < 0)).sum(1).double(), real_wrong.sum(1).double(),
        (real_right & (adv >= 0) & low[:, None]).sum(1).double(), (real_right & low[:, None]).sum(1).double(),
    ])
    per_group = torch.zeros(6, g, dtype=torch.float64, device=adv.device).index_add(1, group, per_row)
    stats = per_group.cpu().numpy()  # [6, G]

    sums = _resampled_sums(stats, n_samples, seed)  # [R, 6]

    out = {}
    for k, name in enumerate(METRICS):
        num, den = stats[2 * k].sum(), stats[2 * k + 1].sum()
        value = float(num / den) if den > 0 else math.nan
        ok = sums[:, 2 * k + 1] > 0
        boot = sums[ok, 2 * k] / sums[ok, 2 * k + 1]
        low_q, high_q = np.quantile(boot, [0.025, 0.975]) if boot.size and den > 0 else (math.nan, math.nan)
        out[name] = {"value": value, "low": float(low_q), "high": float(high_q)}
    return out
