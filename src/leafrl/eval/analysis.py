"""What LEAF does on a model's own rollouts, without training: fork-fire rates by token position
(``leafrl forks``) and credit assignment against the reference (``leafrl credit``).

Both sample K responses per item exactly as a training step does (same temperature, top-p and
surprisal source), score them with the training reward, and run the estimators on them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from leafrl.advantages import BOUNDARIES, NORMALIZE, TERMS, LeafConfig, grpo_advantages, leaf_advantages
from leafrl.eval.stats import wilson
from leafrl.models.base import to_model
from leafrl.rewards import group_rewards, resolve_reward
from leafrl.rollout.batch import encode_examples
from leafrl.rollout.hf import generate_completions


@dataclass(frozen=True)
class Rollouts:
    """K responses per item: ids / mask / surprisal [N, T], rewards [N], group_ids [N] (the
    item of each row), texts [N]; rows g*K .. g*K+K-1 answer ``examples[g]``."""

    examples: list[Any]
    ids: torch.Tensor
    mask: torch.Tensor
    surprisal: torch.Tensor
    rewards: torch.Tensor
    group_ids: torch.Tensor
    texts: list[str]


def sample_rollouts(model: Any, adapter: Any, examples: Sequence[Any], cfg: Any, *, batch: int = 8,
                    seed: int = 0, progress: Any = None) -> Rollouts:
    """K = ``cfg.rollout.rollout_budget`` sampled responses to each of ``examples``, ``batch``
    items per generate call, rewarded with ``cfg.reward``; seeded, so a call repeats."""
    r = cfg.rollout
    torch.manual_seed(seed)
    model.eval()
    parts = []
    for start in range(0, len(examples), batch):
        chunk = list(examples[start:start + batch])
        inputs = to_model(encode_examples(adapter, chunk, cfg.system), model)
        parts.append(generate_completions(model, adapter, inputs, num_samples=r.rollout_budget,
                                          max_new_tokens=r.max_new_tokens, temperature=r.temperature, top_p=r.top_p,
                                          surprisal=r.surprisal))
        if progress is not None:
            progress(start + len(chunk))
    width = max(p.ids.shape[1] for p in parts)

    def cat(name: str, fill: Any) -> torch.Tensor:
        return torch.cat([torch.nn.functional.pad(getattr(p, name), (0, width - p.ids.shape[1]), value=fill)
                          for p in parts])

    ids, mask, surprisal = cat("ids", adapter.pad_token_id), cat("mask", False), cat("surprisal", math.nan)
    texts = adapter.decode(ids)
    rewards = group_rewards(resolve_reward(cfg.reward), texts, examples, r.rollout_budget)
    groups = torch.arange(len(examples)).repeat_interleave(r.rollout_budget)
    return Rollouts(list(examples), ids, mask, surprisal.nan_to_num(0.0), torch.tensor(rewards, dtype=torch.float64),
                    groups, texts)


def fork_rates(rollouts: Rollouts, config: LeafConfig, *, max_position: int = 40,
               min_selections: int = 15) -> list[dict]:
    """Per boundary position p <= ``max_position`` chosen at least ``min_selections`` times: how
    often it was chosen, fired (made a node) and was usable (a node whose value differs from its
    parent's), with Wilson 95% intervals of the two rates (the authors' plot)."""
    _, stats = leaf_advantages(rollouts.ids, rollouts.mask, rollouts.surprisal, rollouts.rewards.float(),
                               rollouts.group_ids, config)
    chosen = stats.boundaries >= 0
    positions = stats.boundaries[chosen]
    count = torch.bincount(positions, minlength=max_position + 1)
    fired = torch.bincount(positions, weights=stats.fired[chosen].double(), minlength=max_position + 1)
    usable = torch.bincount(positions, weights=stats.usable[chosen].double(), minlength=max_position + 1)
    rows = []
    for p in range(1, max_position + 1):
        n = int(count[p])
        if n < min_selections:
            continue
        row = {"position": p, "selections": n}
        for name, hits in (("fire", int(fired[p])), ("usable", int(usable[p]))):
            low, high = wilson(hits, n)
            row.update({name: hits, f"{name}_rate": hits / n, f"{name}_low": low, f"{name}_high": high})
        rows.append(row)
    return rows


def variants(base: LeafConfig) -> dict[str, LeafConfig]:
    """LEAF as configured and every one-setting change of it: each terms, normalize and
    boundaries choice and fork budgets 1 and 4."""
    out = {"leaf": base}
    for name, choices in (("terms", TERMS), ("normalize", NORMALIZE), ("boundaries", BOUNDARIES)):
        for choice in choices:
            if choice != getattr(base, name):
                out[f"leaf {name}={choice}"] = replace(base, **{name: choice})
    for budget in (1, 4):
        if budget != base.fork_budget:
            out[f"leaf fork_budget={budget}"] = replace(base, fork_budget=budget)
    return out


def credit_report(rollouts: Rollouts, reference_ids: list[list[int]], base: LeafConfig, grpo_std_floor: float,
                  eos_token_ids: Sequence[int], *, n_samples: int = 1000) -> dict[str, dict[str, dict[str, float]]]:
    """{estimator: credit_metrics} for GRPO, LEAF and every variant on the same rollouts. A token
    is right when it is part of the response's alignment with its reference's tokens
    (``reference_ids``, one list per item); end-of-sequence tokens are left out."""
    from leafrl.eval.credit import credit_metrics, token_correctness

    k = len(rollouts.ids) // len(rollouts.examples)
    mask = rollouts.mask & ~torch.isin(rollouts.ids, torch.tensor(list(eos_token_ids)))
    responses = [row[m].tolist() for row, m in zip(rollouts.ids, mask)]
    marks = token_correctness(responses, [reference_ids[i // k] for i in range(len(responses))])
    right = torch.zeros_like(mask)
    for i, flags in enumerate(marks):  # a loop over responses, once per report
        right[i, : len(flags)] = torch.tensor(flags, dtype=torch.bool)
    rewards = rollouts.rewards.float()
    estimators = {"grpo": grpo_advantages(rewards, rollouts.group_ids, grpo_std_floor)[:, None].expand(mask.shape)}
    for name, config in variants(base).items():
        estimators[name] = leaf_advantages(rollouts.ids, rollouts.mask, rollouts.surprisal, rewards,
                                           rollouts.group_ids, config)[0]
    return {name: credit_metrics(adv, mask, right, rewards, rollouts.group_ids, n_samples=n_samples)
            for name, adv in estimators.items()}
