"""Terminal views of runs: held-out rows and BLEU before and after training, the metrics of
``leafrl eval``, the memory plan of ``leafrl plan``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text


def examples_table(ids: Sequence[str], references: Sequence[str], before: Sequence[str], after: Sequence[str],
                   title: str = "held-out examples (greedy)") -> Table:
    """One row per held-out example: its reference and the model's answer before and after."""
    if not (len(ids) == len(references) == len(before) == len(after)):
        raise ValueError(f"ids ({len(ids)}), references ({len(references)}), before ({len(before)}) and after "
                         f"({len(after)}) must be equally long")
    table = Table(title=title, show_lines=True)
    for column in ("row", "reference", "before", "after"):
        table.add_column(column, overflow="fold")
    for row in zip(ids, references, before, after):
        table.add_row(*row)
    return table


def shares_table(before: dict[str, float], after: dict[str, float], title: str) -> Table:
    """Shares (0-1) of named categories before and after, as percentages."""
    table = Table(title=title)
    for column in ("", "before", "after"):
        table.add_column(column, justify="left" if not column else "right")
    for name in sorted(set(before) | set(after), key=lambda k: -after.get(k, 0.0)):
        table.add_row(name, f"{100 * before.get(name, 0.0):.0f}%", f"{100 * after.get(name, 0.0):.0f}%")
    return table


def slots_table(slots: dict[str, dict]) -> Table:
    """The built-in local task's slots (``leafrl.eval.evaluate.slots_of``): per kind, the greedy
    answers' error rate, and the sampled passes' error rate (pass@1) and pass@K."""
    sampled = slots.get("sampled", {})
    k = next((key for key in next(iter(sampled.values()), {}) if key.startswith("pass@") and key != "pass@1"), None)
    table = Table(title="inflection slots: share with the wrong form")
    for column in ("slot", "slots", "greedy", *(["sampled (pass@1)", f"right in some pass ({k})"] if k else [])):
        table.add_column(column, justify="left" if column == "slot" else "right")
    for kind, entry in slots["greedy"].items():
        cells = [f"{entry['error']:.0%}"]
        if k:
            cells += [f"{sampled[kind]['error']:.0%}", f"{sampled[kind][k]:.0%}"]
        table.add_row(kind, str(entry["slots"]), *cells)
    return table


def metrics_table(entry: dict, title: str) -> Table:
    """One split's metrics (``leafrl.eval.evaluate.metrics_report``): greedy, and sampled mean +- std."""
    table = Table(title=title)
    sampled = entry.get("sampled", {})
    for column in ("metric", "greedy", *(["sampled (mean +- std)"] if sampled else [])):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for key, value in entry["greedy"].items():
        cells = [key, f"{value:.2f}"]
        if sampled:
            cells.append(f"{sampled[key]['mean']:.2f} +- {sampled[key]['std']:.2f}")
        table.add_row(*cells)
    return table


def plan_view(report: Any, cfg: Any) -> Group:
    """``leafrl plan``'s table (a ``plan.PlanReport`` of TrainConfig ``cfg``) and what fits a GPU."""
    from leafrl.plan import GIB, OVERHEAD

    d, p, r = report.dimensions, report.plan, cfg.rollout
    table = Table(title=f"{report.model}: {d.parameters:,} parameters in {report.dtype}, {d.trainable:,} trainable "
                        f"(LoRA r{cfg.lora.rank})")
    for column in ("per process", "memory", "what"):
        table.add_column(column, justify="right" if column == "memory" else "left")
    what = {"weights": "the model, the LoRA in float32",
            "optimizer": "LoRA gradients and AdamW moments (float32)",
            "rollout": f"{r.prompts_per_step} prompts x K {r.rollout_budget}: KV cache of {report.prompt_tokens} "
                       f"prompt + {r.max_new_tokens} new tokens, and one step's scores for the surprisal",
            "update": f"micro_batch {p.micro_batch}: activations"
                      f"{' (checkpointed)' if cfg.gradient_checkpointing else ''}, and one chunk of float32 "
                      "logits with its gradient",
            "peak": f"weights + optimizer + the larger of rollout and update (on a GPU add about "
                    f"{OVERHEAD / GIB:.0f} GiB of CUDA context and workspace)"}
    for name, text in what.items():
        size = getattr(p, name)
        table.add_row(name, f"{size / GIB:.2f} GiB" if size >= GIB / 10 else f"{size / 2**20:.1f} MiB", text)
    table.caption = f"micro_batch {p.micro_batch}"
    lines = [f"prompt length: {report.prompt_tokens} tokens, {report.prompt_source}"]
    for checkpointing, fits in report.fits.items():
        fixed = (p.weights + p.optimizer + OVERHEAD) / GIB
        advice = (f"the weights and LoRA state alone take {fixed:.1f} GiB with the CUDA context: a GPU with more "
                  "memory" if fixed > report.gpu_memory else "lower rollout.prompts_per_step or rollout.max_new_tokens")
        lines.append(f"{report.gpu_memory:g} GiB per GPU, gradient_checkpointing={str(checkpointing).lower()}: "
                     + (f"optim.micro_batch up to {fits}" if fits else f"does not fit even at micro_batch 1; {advice}"))
    return Group(table, *lines)


def bleu_table(summary: Any) -> Table:
    """Held-out BLEU before vs after training (a ``summary.RunSummary``), greedy and sampled, with
    the paired bootstrap p-values."""
    table = Table(title=f"held-out BLEU ({summary.valid_examples} rows), {summary.steps} {summary.algo} steps")
    for column in ("decoding", "before", "after", "change", "p"):
        table.add_column(column, justify="left" if column == "decoding" else "right")
    for decoding in summary.decodings:
        before, after = summary.bleu(decoding, "before"), summary.bleu(decoding, "after")
        table.add_row("greedy" if decoding == "greedy" else "sampled (mean of passes)", f"{before:.2f}",
                      f"{after:.2f}", f"{after - before:+.2f}", f"{summary.p_value(decoding):.3f}")
    table.caption = "p: paired bootstrap over the held-out rows (1000 resamples): is the change more than chance?"
    return table


def run_report(run_dir: Path, data: str, examples: int) -> Group:
    """What a finished run did to the held-out rows: the first ``examples`` rows' greedy answers
    before and after, and, on the built-in task, how often the answers follow its conventions."""
    from leafrl.builtin import builtin_name
    from leafrl.data import load_split
    from leafrl.data.base_corpus import convention_shares
    from leafrl.eval.evaluate import slots_of
    from leafrl.summary import HeldOut

    before, after = (HeldOut.load(run_dir / f"{name}.json").greedy for name in ("before", "after"))
    rows = list(load_split(data, "valid"))[: len(before)]
    shown = rows[:examples]
    parts = [examples_table([ex.id for ex in shown], [ex.reference for ex in shown], before[:examples],
                            after[:examples])]
    if (shares := convention_shares(rows, before)) is not None and builtin_name(data) != "local":
        parts.append(shares_table(shares, convention_shares(rows, after), "how the greedy answers are written "
                                  "(share of each task's rows; \"task\": the built-in task's own convention)"))
    references = [ex.reference for ex in rows]
    if (slots := slots_of(data, references, before, [])) is not None:
        after_slots = slots_of(data, references, after, [])["greedy"]
        parts.append(shares_table({kind: v["error"] for kind, v in slots["greedy"].items()},
                                  {kind: v["error"] for kind, v in after_slots.items()},
                                  "greedy answers' slots with the wrong form (share of each kind's slots)"))
    return Group(*parts)


def credit_table(report: Any, labels: dict[str, str]) -> Table:
    """``leafrl credit``'s estimators (a ``CreditReport``) with each metric's 95% interval, the
    AUC's share of the way to the ceiling, and the recommended estimator against LEAF."""
    table = Table(title=f"credit assignment on {report.items} items x K {report.k} ({report.split}); "
                        "[95% bootstrap over items]")
    table.add_column("estimator")
    for label in labels.values():
        table.add_column(label, justify="right")
    table.add_column("AUC: share of the way to the ceiling", justify="right")
    for name, metrics in report.estimators.items():
        cells = [f"{m['value']:.3f} [{m['low']:.3f}, {m['high']:.3f}]" if (m := metrics.get(key)) else "-"
                 for key in labels]
        share = report.share_of_ceiling.get(name)
        label = f"{name} (recommended)" if name == report.recommended else name
        table.add_row(label, *cells, "-" if share is None else f"{share:.0%}")
    d = report.recommended_minus_leaf
    table.caption = (f"ceiling: an oracle that knows the wrong tokens but gives each trie segment one value. "
                     f"{report.recommended} - leaf AUC: {d['value']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}] (paired)")
    return table


def recipes_table(found: Sequence[Any]) -> Table:
    """``leafrl recipes``: each recipe (``recipes.Recipe``) with what it configures and its summary."""
    table = Table(title="recipes: leafrl train --recipe NAME (sft: leafrl sft --recipe NAME); "
                        "builtin-NAME is also --builtin NAME", show_lines=False)
    for column in ("name", "for", "what it is"):
        table.add_column(column, overflow="fold")
    for r in found:
        table.add_row(r.name, "sft" if r.kind == "sft" else "train, eval, compare, credit, forks, inspect, plan",
                      r.summary)
    return table


def settings_table(cfg: Any, recipe: str) -> Table:
    """``leafrl config show``: every setting of ``cfg`` with its value, its class default (bold
    where they differ) and its doc."""
    from leafrl.config import settings

    table = Table(title=f"{type(cfg).__name__} settings (recipe {recipe}, then --config and --set); "
                        "change one with --set NAME=VALUE", show_lines=False)
    for column in ("setting", "value", "default", "what it does"):
        table.add_column(column, overflow="fold")
    for s in settings(cfg):
        changed = s.value != s.default
        table.add_row(Text(s.name), Text(repr(s.value), style="bold" if changed else ""), Text(repr(s.default)),
                      Text(s.doc))
    return table
