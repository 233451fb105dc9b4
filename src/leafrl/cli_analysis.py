"""The ``leafrl`` commands that judge and look inside: eval, compare, inspect, forks, credit, and
plan (the memory of a run before it is launched).
Thin wrappers (registered on the app by leafrl.cli) that resolve the built-in defaults and call
the library; every default lives once, in the config dataclasses or the library function."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from leafrl.config import TrainConfig

# options several commands share (typer reads an Option's declaration; it holds no value)
MODEL = typer.Option(None, help="hub name or HF directory", show_default="the built-in base model")
DATA = typer.Option(None, help="data directory or saved dataset", show_default="the built-in task")
SAMPLED_SPLIT = typer.Option("train", help="the split whose items are sampled")
SAMPLED_ITEMS = typer.Option(200, help="items (each gets K responses)")


def train_config(model: str | None, data: str | None, config: Path | None, set_: list[str], console: Console,
                 **given) -> TrainConfig:
    """The TrainConfig ``leafrl train`` would run with these options (the built-in model, task and
    BUILTIN_TRAIN where none are given)."""
    from leafrl import builtin
    from leafrl.config import load_config

    cfg = load_config(TrainConfig, config, set_, presets=builtin.train_presets(model, config, set_), model=model,
                      data=data, **given)
    return builtin.resolve(cfg, console)


def _seeds(spec: str) -> list[int]:
    """``--seeds``: a count S (seeds 0..S-1) or a comma-separated list."""
    try:
        seeds = list(range(int(spec))) if "," not in spec else [int(s) for s in spec.split(",")]
    except ValueError as err:
        raise ValueError(f"--seeds {spec!r}: give a count (5) or a list (1,2,3)") from err
    if not seeds:
        raise ValueError(f"--seeds {spec!r}: no seeds")
    return seeds


def compare(
    model: str | None = MODEL,
    data: str | None = DATA,
    out: Path = typer.Option(Path("runs/compare"), help="report directory (runs go to OUT/runs)"),
    seeds: str = typer.Option("5", help="a count S (seeds 0..S-1) or a list 1,2,3"),
    steps: int | None = typer.Option(None, help="RL steps per run", show_default="train's"),
    algos: str = typer.Option("leaf,grpo", help="arms, comma-separated; an arm may carry overrides: "
                              "leaf:leaf.boundaries=trie"),
    jobs: int = typer.Option(2, help="runs trained at once, in worker processes that split the cores"),
    config: Path | None = typer.Option(None, help="a YAML file of TrainConfig settings (every arm)"),
    set_: list[str] = typer.Option([], "--set", help="a setting for every arm: --set optim.lr=1e-4 (repeatable)"),
    quiet: bool = typer.Option(False, help="no progress bar"),
) -> None:
    """LEAF against GRPO (or any arms) from the same start at equal budget over several seeds:
    report.md, summary.json and plots in OUT. Finished runs are reused and interrupted ones resumed,
    so the same command continues a comparison."""
    from leafrl.compare import compare as run_compare
    from leafrl.compare import parse_arms

    console = Console()  # --quiet hides the progress bars only
    arms = parse_arms(algos)
    base = train_config(model, data, config, set_, console, steps=steps)
    summary = run_compare(base, arms, _seeds(seeds), out, jobs=jobs, console=console, quiet=quiet)
    from rich.markdown import Markdown

    text = (out / "report.md").read_text()
    console.print(Markdown(text.split("## Plots")[0]))
    console.print(f"{summary['diff_of']}: greedy BLEU {summary['diff_mean']:+.2f} "
                  f"[{summary['diff_ci95'][0]:+.2f}, {summary['diff_ci95'][1]:+.2f}]; report in {out / 'report.md'}")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the ``leafrl`` app."""
    app.command("eval")(eval_)
    app.command()(compare)
    app.command()(forks)
    app.command()(credit)
    app.command()(inspect)
    app.command("plan")(plan_)


def plan_(
    model: str | None = MODEL,
    data: str | None = DATA,
    config: Path | None = typer.Option(None, help="a YAML file of TrainConfig settings"),
    set_: list[str] = typer.Option([], "--set", help="a TrainConfig setting: --set optim.micro_batch=4 (repeatable)"),
    gpu_memory: float | None = typer.Option(None, help="GiB per GPU: also say the largest micro_batch that fits"),
    prompt_tokens: int | None = typer.Option(None, help="the longest prompt in tokens, audio included",
                                             show_default="measured on --data's train split (loads the model)"),
) -> None:
    """Memory per process of `leafrl train` with these settings, before launching it: parameters
    (counted on the meta device, no weights read), weights, optimizer, rollout and update, the
    peak, and with --gpu-memory the largest optim.micro_batch that fits (with and without
    gradient_checkpointing)."""
    import dataclasses

    from rich.table import Table

    from leafrl.models import resolve_dtype
    from leafrl.plan import GIB, OVERHEAD, dimensions, largest_micro_batch, plan

    console = Console()
    cfg = train_config(model, data, config, set_, console)
    dtype = resolve_dtype(cfg.model_dtype)
    if prompt_tokens is None:
        from leafrl.models import load_speech_lm
        from leafrl.preflight import longest_prompt

        speech = load_speech_lm(cfg.model)[1]
        prompt_tokens = longest_prompt(_examples(cfg, "train", None), speech, cfg.system)
    d = dimensions(cfg.model, cfg.lora_settings.rank, cfg.lora_settings.alpha)
    p = plan(d, cfg, dtype.itemsize, prompt_tokens)
    r = cfg.rollout
    table = Table(title=f"{cfg.model}: {d.parameters:,} parameters in {str(dtype).removeprefix('torch.')}, "
                        f"{d.trainable:,} trainable (LoRA r{cfg.lora_settings.rank})")
    for column in ("per process", "memory", "what"):
        table.add_column(column, justify="right" if column == "memory" else "left")
    what = {"weights": "the model, the LoRA in float32",
            "optimizer": "LoRA gradients and AdamW moments (float32)",
            "rollout": f"{r.prompts_per_step} prompts x K {r.rollout_budget}: KV cache of {prompt_tokens} prompt + "
                       f"{r.max_new_tokens} new tokens, and the scores kept for the surprisal",
            "update": f"micro_batch {p.micro_batch}: activations"
                      f"{' (checkpointed)' if cfg.gradient_checkpointing else ''} and the float32 logits with "
                      "their gradient",
            "peak": f"weights + optimizer + the larger of rollout and update (on a GPU add about "
                    f"{OVERHEAD / GIB:.0f} GiB of CUDA context and workspace)"}
    for name, text in what.items():
        size = getattr(p, name)
        table.add_row(name, f"{size / GIB:.2f} GiB" if size >= GIB / 10 else f"{size / 2**20:.1f} MiB", text)
    table.caption = f"the longest prompt: {prompt_tokens} tokens; micro_batch {p.micro_batch}"
    console.print(table)
    if gpu_memory is not None:
        budget = int(gpu_memory * GIB)
        for checkpointing in (False, True):
            fits = largest_micro_batch(d, dataclasses.replace(cfg, gradient_checkpointing=checkpointing),
                                       dtype.itemsize, prompt_tokens, budget)
            fixed = (p.weights + p.optimizer + OVERHEAD) / GIB
            advice = (f"the weights and LoRA state alone take {fixed:.1f} GiB with the CUDA context: a GPU with more "
                      "memory" if fixed * GIB > budget else "lower rollout.prompts_per_step or rollout.max_new_tokens")
            console.print(f"{gpu_memory:g} GiB per GPU, gradient_checkpointing={str(checkpointing).lower()}: "
                          + (f"optim.micro_batch up to {fits}" if fits else f"does not fit even at micro_batch 1; "
                             f"{advice}"))


def eval_(
    model: str | None = MODEL,
    adapter: Path | None = typer.Option(None, help="a LoRA adapter: its directory, a checkpoint or a `leafrl train` "
                                        "run directory (its latest checkpoint)"),
    data: str | None = DATA,
    split: str = typer.Option("valid", help="the split to evaluate"),
    limit: int | None = typer.Option(None, help="the first N rows only"),
    passes: int = typer.Option(5, help="sampled passes beside the greedy one (paper: 5, T 0.9, top-p 0.9)"),
    bertscore_model: str | None = typer.Option(None, help="a LOCAL encoder model directory for BERTScore "
                                               "(skipped without one: leafrl never downloads)"),
    out: Path = typer.Option(Path("runs/eval"), help="where predictions.jsonl and metrics.json go"),
    set_: list[str] = typer.Option([], "--set", help="a TrainConfig setting, e.g. rollout.max_new_tokens=64"),
    quiet: bool = typer.Option(False, help="no progress bar"),
) -> None:
    """Score a model (base, SFT, or base + a LoRA adapter) on a split: BLEU (lowercased and cased),
    chrF, ROUGE-1/2/L, METEOR, WER on transcription tasks and BERTScore with a local model, for the
    greedy pass and the mean +- std over sampled passes, per task."""
    import json

    from leafrl.eval.evaluate import evaluate, metrics_report
    from leafrl.eval.metrics import meteor_matching
    from leafrl.tracking import progress_bar
    from leafrl.viz.runs import metrics_table

    console = Console()  # --quiet hides the progress bars only
    cfg = train_config(model, data, None, set_, console)
    examples = _examples(cfg, split, limit)
    policy, speech = _policy(cfg, adapter, examples, split)
    with progress_bar("eval", console, quiet) as bar:
        task = bar.add_task("eval", total=len(examples), info=f"greedy + {passes} sampled")
        result = evaluate(policy, speech, examples, max_new_tokens=cfg.rollout.max_new_tokens, sampled_passes=passes,
                          progress=lambda n: bar.update(task, completed=n))
    report = metrics_report(examples, result, bertscore_model=bertscore_model)
    meta = {"model": cfg.model, "adapter": None if adapter is None else str(adapter), "data": cfg.data,
            "split": split, "rows": len(examples), "sampled_passes": passes, "meteor": meteor_matching(),
            "bertscore": bertscore_model or "skipped: no --bertscore-model (leafrl never downloads one)"}
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps({**meta, "metrics": report}, indent=2))
    rows = [{"id": ex.id, "task": ex.task, "reference": ex.reference, "greedy": result.greedy.predictions[i],
             "sampled": [r.predictions[i] for r in result.sampled]} for i, ex in enumerate(examples)]
    (out / "predictions.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    for name, entry in report.items():
        console.print(metrics_table(entry, f"{name}: {entry['rows']} rows of {split}"))
    console.print(f"METEOR matching: {meta['meteor']}; BERTScore: {meta['bertscore']}\n"
                  f"predictions and metrics in {out}")


def _examples(cfg: TrainConfig, split: str, limit: int | None) -> list:
    """The first ``limit`` rows of ``split`` of ``cfg.data`` (the reader refuses an empty split)."""
    from leafrl.data import load_split

    return list(load_split(cfg.data, split))[:limit]


def _policy(cfg: TrainConfig, adapter: Path | None, examples: list, split: str):
    """(model, speech adapter) of ``cfg.model``, with the LoRA adapter ``adapter`` applied, after
    checking that it can take every row of ``examples`` (``preflight.check_rows``)."""
    from leafrl.data import split_source
    from leafrl.models import context_length, load_speech_lm, resolve_dtype
    from leafrl.preflight import check_rows

    model, speech = load_speech_lm(cfg.model, dtype=resolve_dtype(cfg.model_dtype))
    check_rows(examples, speech, context_length(model), cfg.rollout.max_new_tokens, split_source(cfg.data, split),
               cfg.system)
    if adapter is not None:
        from peft import PeftModel

        from leafrl.checkpoint import adapter_dir

        model = PeftModel.from_pretrained(model, str(adapter_dir(adapter)))
    return model, speech


def _rollouts(cfg: TrainConfig, adapter: Path | None, split: str, limit: int, console: Console, quiet: bool):
    """The first ``limit`` items of ``split``, K sampled responses each (``analysis.sample_rollouts``)."""
    from leafrl.eval.analysis import sample_rollouts
    from leafrl.tracking import progress_bar

    examples = _examples(cfg, split, limit)
    model, speech = _policy(cfg, adapter, examples, split)
    with progress_bar("sampling", console, quiet) as bar:
        task = bar.add_task("sampling", total=len(examples), info=f"K = {cfg.rollout.rollout_budget}")
        rollouts = sample_rollouts(model, speech, examples, cfg, progress=lambda n: bar.update(task, completed=n))
    return rollouts, speech


def forks(
    model: list[str] = typer.Option([], help="hub name or HF directory; repeat to overlay models",
                                    show_default="the built-in base model"),
    adapter: list[str] = typer.Option([], help="a LoRA adapter per --model (\"none\" for none); repeat"),
    data: str | None = DATA,
    split: str = SAMPLED_SPLIT,
    limit: int = SAMPLED_ITEMS,
    out: Path = typer.Option(Path("runs/forks"), help="where forks.csv and forks.png go"),
    set_: list[str] = typer.Option([], "--set", help="a TrainConfig setting, e.g. leaf.fork_budget=4"),
    quiet: bool = typer.Option(False, help="no progress bar"),
) -> None:
    """Fork-fire and usable fork-fire rates by boundary position, with Wilson 95% intervals
    (positions up to 40 chosen at least 15 times): K responses per item, LEAF's boundary selection."""
    import csv

    from leafrl.eval.analysis import fork_rates
    from leafrl.viz.plots import rate_plot

    console = Console()  # --quiet hides the progress bars only
    models = model or [None]
    adapters = adapter or ["none"] * len(models)
    if len(adapters) != len(models):
        raise ValueError(f"--adapter: give one per --model ({len(models)}), \"none\" for none; got {len(adapters)}")
    results = {}
    for name, lora in zip(models, adapters):
        cfg = train_config(name, data, None, set_, console)
        lora_path = None if lora == "none" else Path(lora)
        rollouts, _ = _rollouts(cfg, lora_path, split, limit, console, quiet)
        label = (Path(name).name if name else "built-in") + ("" if lora_path is None else f" + {lora_path.name}")
        results[label] = fork_rates(rollouts, cfg.leaf)
    out.mkdir(parents=True, exist_ok=True)
    fields = ["model", "position", "selections", "fire", "fire_rate", "fire_low", "fire_high", "usable",
              "usable_rate", "usable_low", "usable_high"]
    with (out / "forks.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fields)
        writer.writeheader()
        writer.writerows({"model": label, **row} for label, rows in results.items() for row in rows)
    series = {}
    for label, rows in results.items():
        series[f"{label}: fires"] = [(r["position"], r["fire_rate"], r["fire_low"], r["fire_high"]) for r in rows]
        series[f"{label}: usable"] = [(r["position"], r["usable_rate"], r["usable_low"], r["usable_high"])
                                      for r in rows]
    rate_plot(out / "forks.png", series, f"LEAF boundaries by position ({split}, {limit} items)",
              "share of the boundaries chosen there", "fires: at least two responses share the prefix up to it; "
              "usable: a node whose value differs from its parent's. Bars: Wilson 95%; positions chosen >= 15 times")
    for label, rows in results.items():
        console.print(f"{label}: " + "  ".join(f"p{r['position']} {r['fire_rate']:.2f}/{r['usable_rate']:.2f} "
                                                f"(n {r['selections']})" for r in rows[:12]))
    console.print(f"fire/usable rates by position in {out / 'forks.csv'} and {out / 'forks.png'}")


def credit(
    model: str | None = MODEL,
    adapter: Path | None = typer.Option(None, help="a LoRA adapter (directory, checkpoint or run)"),
    data: str | None = DATA,
    split: str = SAMPLED_SPLIT,
    limit: int = SAMPLED_ITEMS,
    out: Path = typer.Option(Path("runs/credit"), help="where credit.json and credit.png go"),
    set_: list[str] = typer.Option([], "--set", help="a TrainConfig setting, e.g. rollout.temperature=0.9"),
    quiet: bool = typer.Option(False, help="no progress bar"),
) -> None:
    """Credit assignment measured without training: on the SAME rollouts, how GRPO, LEAF and every
    one-setting LEAF variant credit the tokens that match the reference and those that do not."""
    import json

    from rich.table import Table

    from leafrl.eval.analysis import credit_report
    from leafrl.viz.plots import bar_plot

    console = Console()  # --quiet hides the progress bars only
    cfg = train_config(model, data, None, set_, console)
    rollouts, speech = _rollouts(cfg, adapter, split, limit, console, quiet)
    references = [speech.tokenizer(ex.reference, add_special_tokens=False).input_ids for ex in rollouts.examples]
    report = credit_report(rollouts, references, cfg.leaf, cfg.grpo_std_floor, speech.eos_token_ids)
    out.mkdir(parents=True, exist_ok=True)
    (out / "credit.json").write_text(json.dumps({"model": cfg.model, "adapter": None if adapter is None else
                                                 str(adapter), "split": split, "items": len(rollouts.examples),
                                                 "k": cfg.rollout.rollout_budget, "estimators": report}, indent=2))
    labels = {"auc": "AUC of -advantage for wrong tokens", "wrong_negative": "wrong tokens with negative credit",
              "right_nonnegative_low": "right tokens of low-reward responses with credit >= 0"}
    table = Table(title=f"credit assignment on {len(rollouts.examples)} items x K {cfg.rollout.rollout_budget} "
                        f"({split}); [95% bootstrap over items]")
    table.add_column("estimator")
    for label in labels.values():
        table.add_column(label, justify="right")
    for name, metrics in report.items():
        table.add_row(name, *(f"{m['value']:.3f} [{m['low']:.3f}, {m['high']:.3f}]"
                              for m in (metrics[key] for key in labels)))
    console.print(table)
    bar_plot(out / "credit.png", list(report), [(labels[key], {name: (m[key]["value"], m[key]["low"], m[key]["high"])
                                                               for name, m in report.items()}) for key in labels],
             "credit assignment on the same rollouts", "bars: 95% bootstrap intervals over items; dashed: chance "
             "(AUC 0.5)", reference_lines={labels["auc"]: 0.5})
    console.print(f"table in {out / 'credit.json'}, plot in {out / 'credit.png'}")


def inspect(
    rollouts: Path | None = typer.Option(None, help="a rollout file or a `leafrl train` run directory (its newest "
                                         "saved rollouts)", show_default="sample from --model on --data"),
    model: str | None = typer.Option(None, help="hub name or HF directory (when sampling)",
                                     show_default="the built-in base model"),
    adapter: Path | None = typer.Option(None, help="a LoRA adapter (when sampling)"),
    data: str | None = typer.Option(None, help="data directory or saved dataset (when sampling)",
                                    show_default="the built-in task"),
    split: str = typer.Option("valid", help="the split to sample from"),
    items: int = typer.Option(2, help="groups shown: the first N of the file or split"),
    html_out: Path = typer.Option(Path("runs/inspect.html"), "--html", help="the self-contained HTML page"),
    set_: list[str] = typer.Option([], "--set", help="a TrainConfig setting, e.g. leaf.fork_budget=3"),
    quiet: bool = typer.Option(False, help="print nothing but the file written"),
) -> None:
    """The recovered tree of real rollouts: K responses per prompt with LEAF's boundaries (and
    their surprisal), the shared prefixes, node values and sizes, each span coloured by its
    advantage beside GRPO's one advantage per response; in the terminal and as one HTML file."""
    import torch

    from leafrl.advantages import grpo_advantages, leaf_advantages
    from leafrl.config import load_config
    from leafrl.rollout.record import group_tensors, load_rollouts, record_groups
    from leafrl.viz.html import GroupView, render_html
    from leafrl.viz.tree import render_group

    console = Console()
    if rollouts is not None:
        saved = load_rollouts(rollouts)
        config_file = Path(saved["path"]).parent.parent / "config.yaml"
        cfg = load_config(TrainConfig, config_file if config_file.is_file() else None, set_)
        groups, source = saved["groups"][:items], f"{saved['path']} (step {saved['step']})"
    else:
        cfg = train_config(model, data, None, set_, console)
        sampled, speech = _rollouts(cfg, adapter, split, items, Console(quiet=quiet), quiet)
        groups = record_groups(speech, sampled.examples, sampled.ids, sampled.mask, sampled.surprisal,
                               sampled.rewards, cfg.rollout.rollout_budget, items)
        source = f"{cfg.model} on {split} of {cfg.data}"
    views = []
    for g in groups:
        ids, mask, surprisal, rewards = group_tensors(g)
        zeros = torch.zeros(len(ids), dtype=torch.long)
        _, stats, tree = leaf_advantages(ids, mask, surprisal, rewards.float(), zeros, cfg.leaf, return_tree=True)
        bounds = [p for p in stats.boundaries[0].tolist() if p >= 0]
        score = torch.where(mask, surprisal, -torch.inf)
        views.append(GroupView(f"{g['id']} ({g['task']})", g["prompt"], g["reference"],
                               [r["pieces"] for r in g["responses"]], rewards,
                               grpo_advantages(rewards.float(), zeros, cfg.grpo_std_floor), tree, stats,
                               [float(score[:, p].max()) for p in bounds]))
        if not quiet:
            console.rule(f"{g['id']}: {g['reference']}")
            console.print(render_group(views[-1].pieces, rewards, views[-1].grpo, tree, stats, sep="",
                                       boundary_surprisal=views[-1].boundary_surprisal))
    html_out.parent.mkdir(parents=True, exist_ok=True)
    html_out.write_text(render_html(views, f"LEAF trees: {source}"), encoding="utf-8")
    console.print(f"HTML page in {html_out}")
