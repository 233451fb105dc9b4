"""What LEAF does on a model's own rollouts, without training: fork-fire rates by token position
(``leafrl forks``) and credit assignment against the reference (``leafrl credit``), and the
sampling both share with ``leafrl inspect``.

Rollouts are sampled exactly as a training step samples them (same temperature, top-p and
surprisal source), scored with the training reward, and the estimators run on them.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from leafrl._files import write_text_atomic
from leafrl.advantages import BOUNDARIES, NORMALIZE, TERMS, LeafConfig, grpo_advantages, leaf_advantages
from leafrl.config import TrainConfig
from leafrl.errors import UserError
from leafrl.eval.stats import wilson
from leafrl.models import resolve_dtype
from leafrl.models.base import to_model
from leafrl.rewards import group_rewards, resolve_reward
from leafrl.rollout.batch import encode_examples
from leafrl.rollout.hf import generate_completions
from leafrl.rollout.record import Rollout, concat
from leafrl.token_credit import leafrl_advantages, trie_segments
from leafrl.tracking import progress_bar, warn

ITEMS_PER_CALL = 8  # items sampled by one generate call (K responses each)


# ------------------------------------------------------------------------ the model and its samples


def examples_of(cfg: TrainConfig, split: str, limit: int | None) -> list[Any]:
    """The first ``limit`` rows of ``split`` of ``cfg.data`` (all with None; the reader refuses an
    empty split). ``limit`` is a count, never a slice's negative end."""
    from leafrl.data import load_split

    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1 (None: every row), got {limit}")
    return list(load_split(cfg.data, split))[:limit]


def load_policy(cfg: TrainConfig, adapter: Path | None, examples: Sequence[Any], split: str) -> tuple[Any, Any]:
    """(model, family) of ``cfg.model`` in ``cfg.model_dtype``, with the LoRA ``adapter`` (its
    directory, a checkpoint or a run directory) applied, after checking that it can take every
    row of ``examples`` (of ``split``) and that the adapter was trained on this model
    (``identity.check_adapter``)."""
    from leafrl.preflight import load_checked

    model, family = load_checked(cfg.model, resolve_dtype(cfg.model_dtype), cfg.data, {split: examples},
                                 cfg.rollout.max_new_tokens, cfg.system)
    if adapter is not None:
        from peft import PeftModel

        from leafrl import identity
        from leafrl.checkpoint import adapter_dir

        found, base = adapter_dir(adapter), identity.of_model(cfg.model, model, family.tokenizer)
        if (unchecked := identity.check_adapter(found, str(adapter), base)) is not None:
            warn(unchecked)
        model = PeftModel.from_pretrained(model, str(found))
    return model, family


def sample_rollouts(model: Any, family: Any, examples: Sequence[Any], cfg: TrainConfig, *, seed: int,
                    progress: Any = None) -> Rollout:
    """K = ``rollout.rollout_budget`` sampled responses to each of ``examples`` (group g answers
    ``examples[g]``), ``ITEMS_PER_CALL`` items per generate call, scored with ``cfg.reward``;
    seeded, so a call repeats. ``progress(n_done)`` is called after each call."""
    r = cfg.rollout
    torch.manual_seed(seed)
    model.eval()
    parts = []
    for start in range(0, len(examples), ITEMS_PER_CALL):
        chunk = list(examples[start:start + ITEMS_PER_CALL])
        inputs = to_model(encode_examples(family, chunk, cfg.system), model)
        parts.append(generate_completions(model, family, inputs, num_samples=r.rollout_budget,
                                          max_new_tokens=r.max_new_tokens, temperature=r.temperature, top_p=r.top_p,
                                          surprisal=r.surprisal))
        if progress is not None:
            progress(start + len(chunk))
    rollout = concat(parts, family.pad_token_id)
    reward = resolve_reward(cfg.reward, cfg.eval.bleu_tokenize)
    return rollout.scored(group_rewards(reward, family.decode(rollout.ids), examples, r.rollout_budget))


def sampled(cfg: TrainConfig, adapter: Path | None, split: str, limit: int, seed: int, console: Console,
            quiet: bool) -> tuple[list[Any], Any, Rollout]:
    """(examples, family, scored rollout): the first ``limit`` rows of ``split``, K sampled
    responses each from ``cfg.model`` (+ ``adapter``), with a progress bar."""
    examples = examples_of(cfg, split, limit)
    model, family = load_policy(cfg, adapter, examples, split)
    with progress_bar("sampling", console, quiet) as bar:
        task = bar.add_task("sampling", total=len(examples), info=f"K = {cfg.rollout.rollout_budget}")
        rollout = sample_rollouts(model, family, examples, cfg, seed=seed,
                                  progress=lambda n: bar.update(task, completed=n))
    return examples, family, rollout


# --------------------------------------------------------------------------------- fork-fire


@dataclass(frozen=True)
class ForkRate:
    """How often LEAF chose a boundary at one position, and how often it fired (made a node) and
    was usable (a node whose value differs from its parent's), with Wilson 95% intervals."""

    position: int
    selections: int
    fire: int
    fire_rate: float
    fire_low: float
    fire_high: float
    usable: int
    usable_rate: float
    usable_low: float
    usable_high: float


def fork_rates(rollout: Rollout, config: LeafConfig, *, max_position: int = 40,
               min_selections: int = 15) -> list[ForkRate]:
    """Per boundary position p <= ``max_position`` chosen at least ``min_selections`` times (the
    authors' plot), from a scored ``rollout``."""
    _, stats = leaf_advantages(rollout.ids, rollout.mask, rollout.surprisal, rollout.rewards, rollout.group_ids,
                               config)
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
        f, u = int(fired[p]), int(usable[p])
        rows.append(ForkRate(p, n, f, f / n, *wilson(f, n), u, u / n, *wilson(u, n)))
    return rows


def save_fork_rates(out: Path, rates: dict[str, list[ForkRate]], title: str) -> None:
    """forks.csv (a row per model label and position) and forks.png (fires and usable, overlaid)."""
    from leafrl.viz.plots import rate_plot

    table = io.StringIO()
    writer = csv.DictWriter(table, ["model", *(f.name for f in dataclasses.fields(ForkRate))])
    writer.writeheader()
    writer.writerows({"model": label, **dataclasses.asdict(r)} for label, rows in rates.items() for r in rows)
    write_text_atomic(out / "forks.csv", table.getvalue())
    series = {}
    for label, rows in rates.items():
        series[f"{label}: fires"] = [(r.position, r.fire_rate, r.fire_low, r.fire_high) for r in rows]
        series[f"{label}: usable"] = [(r.position, r.usable_rate, r.usable_low, r.usable_high) for r in rows]
    rate_plot(out / "forks.png", series, title, "share of the boundaries chosen there", "fires: at least two "
              "responses share the prefix up to it; usable: a node whose value differs from its parent's. Bars: "
              "Wilson 95%; positions chosen >= 15 times")


def forks(runs: Sequence[tuple[str, TrainConfig, Path | None]], split: str, limit: int, seed: int, out: Path,
          console: Console, quiet: bool) -> dict[str, list[ForkRate]]:
    """``leafrl forks``: for each (label, config, adapter), sample K responses to the first ``limit``
    items of ``split`` and measure the fork-fire rates by position; write them to ``out``."""
    rates = {}
    for label, cfg, adapter in runs:
        _, _, rollout = sampled(cfg, adapter, split, limit, seed, console, quiet)
        rates[label] = fork_rates(rollout, cfg.leaf)
    save_fork_rates(out, rates, f"LEAF boundaries by position ({split}, {limit} items)")
    return rates


# ----------------------------------------------------------------------------------- credit


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


RECOMMENDED = "leafrl"
"""The estimator leafrl recommends (``--algo leafrl``): the best within-response ranking of wrong
below right tokens on both built-in regimes, before and after RL (docs/results.md)."""
CEILING = "ceiling"
"""credit.json's key for the oracle that ranks a response's trie segments by their share of right tokens."""


def credit_report(rollout: Rollout, reference_ids: list[list[int]], base: LeafConfig, grpo_std_floor: float,
                  eos_token_ids: Sequence[int], *, n_samples: int = 1000
                  ) -> tuple[dict[str, dict[str, dict[str, float]]], dict[str, float]]:
    """({estimator: credit_metrics}, the recommended estimator's AUC minus LEAF's with a paired
    bootstrap interval) for GRPO, leafrl, LEAF (as ``base`` sets it) and every variant on the same
    scored rollout, and the trie-segment ``CEILING`` (``eval.credit.segment_oracle``; its AUC
    only). A token is right when it is part of the response's alignment with its group's reference
    tokens (``reference_ids``, one list per group); end-of-sequence tokens are left out."""
    from leafrl.eval.credit import auc_difference, credit_metrics, segment_oracle, token_correctness

    mask = rollout.mask & ~torch.isin(rollout.ids, torch.tensor(list(eos_token_ids)))
    responses = [row[m].tolist() for row, m in zip(rollout.ids, mask)]
    marks = token_correctness(responses, [reference_ids[g] for g in rollout.group_ids.tolist()])
    right = torch.zeros_like(mask)
    for i, flags in enumerate(marks):  # a loop over responses, once per report
        right[i, : len(flags)] = torch.tensor(flags, dtype=torch.bool)
    rewards = rollout.rewards
    estimators = {"grpo": grpo_advantages(rewards, rollout.group_ids, grpo_std_floor)[:, None].expand(mask.shape),
                  "leafrl": leafrl_advantages(rollout.ids, rollout.mask, rewards, rollout.group_ids, grpo_std_floor)}
    for name, config in variants(base).items():
        estimators[name] = leaf_advantages(rollout.ids, rollout.mask, rollout.surprisal, rewards, rollout.group_ids,
                                           config)[0]
    estimators[CEILING] = segment_oracle(trie_segments(rollout.ids, rollout.mask, rollout.group_ids), mask, right)
    metrics = {name: credit_metrics(adv, mask, right, rewards, rollout.group_ids, n_samples=n_samples)
               for name, adv in estimators.items()}
    metrics[CEILING] = {"auc": metrics[CEILING]["auc"]}  # the oracle's values are shares, not credit
    difference = auc_difference(estimators[RECOMMENDED], estimators["leaf"], mask, right, rollout.group_ids,
                                n_samples=n_samples)
    return metrics, difference


CREDIT_LABELS = {"auc": "AUC of -advantage for wrong tokens", "wrong_negative": "wrong tokens with negative credit",
                 "right_nonnegative_low": "right tokens of low-reward responses with credit >= 0"}


@dataclass(frozen=True)
class CreditReport:
    """credit.json of ``leafrl credit``: what was sampled, {estimator: {metric: {"value", "low",
    "high"}}} (``eval.credit.credit_metrics``) for each estimator on the same rollouts (with the
    ``CEILING`` among them), the ``recommended`` estimator's key, its AUC minus LEAF's
    (``recommended_minus_leaf``: {"value", "low", "high"}, paired bootstrap over items), and each
    estimator's AUC as a share of the way from chance (0.5) to the ceiling (above 1: past what the
    trie's segments allow)."""

    model: str
    adapter: str | None
    split: str
    items: int
    k: int
    recommended: str
    recommended_minus_leaf: dict[str, float]
    estimators: dict[str, dict[str, dict[str, float]]]
    share_of_ceiling: dict[str, float]


def credit(cfg: TrainConfig, adapter: Path | None, split: str, limit: int, seed: int, out: Path, console: Console,
           quiet: bool) -> CreditReport:
    """``leafrl credit``: sample K responses to the first ``limit`` items of ``split``, score every
    estimator's credit on them, and write credit.json and credit.png to ``out``."""
    from leafrl.viz.plots import bar_plot

    examples, family, rollout = sampled(cfg, adapter, split, limit, seed, console, quiet)
    references = [family.tokenizer(ex.reference, add_special_tokens=False).input_ids for ex in examples]
    estimators, difference = credit_report(rollout, references, cfg.leaf, cfg.grpo_std_floor, family.eos_token_ids)
    report = CreditReport(cfg.model, None if adapter is None else str(adapter), split, len(examples),
                          cfg.rollout.rollout_budget, RECOMMENDED, difference, estimators, share_of_ceiling(estimators))
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "credit.json", json.dumps(dataclasses.asdict(report), indent=2))
    bar_plot(out / "credit.png", list(report.estimators),
             [(label, {name: (m[key]["value"], m[key]["low"], m[key]["high"])
                       for name, m in report.estimators.items() if key in m})
              for key, label in CREDIT_LABELS.items()],
             "credit assignment on the same rollouts", "bars: 95% bootstrap intervals over items; dashed: chance "
             "(AUC 0.5)", reference_lines={CREDIT_LABELS["auc"]: 0.5})
    return report


def share_of_ceiling(estimators: dict[str, dict[str, dict[str, float]]]) -> dict[str, float]:
    """Each estimator's AUC as a share of the way from 0.5 to the ``CEILING``'s (NaN when the
    ceiling is not above 0.5)."""
    room = estimators[CEILING]["auc"]["value"] - 0.5
    return {name: (m["auc"]["value"] - 0.5) / room if room > 0 else math.nan
            for name, m in estimators.items() if name != CEILING}


def adapters_for(models: list[str], adapters: list[str]) -> list[tuple[str | None, Path | None]]:
    """``leafrl forks``' repeated --model and --adapter as (model, adapter) pairs (no --model: the
    recipe's model; "none": no adapter)."""
    models = models or [None]
    adapters = adapters or ["none"] * len(models)
    if len(adapters) != len(models):
        raise UserError(f"--adapter: give one per --model ({len(models)}), \"none\" for none; got {len(adapters)}")
    return [(m, None if a == "none" else Path(a)) for m, a in zip(models, adapters)]
