"""The ``leafrl`` commands that judge and look inside: eval, compare, inspect, forks, credit.
Thin wrappers (registered on the app by leafrl.cli) that resolve the built-in defaults and call
the library; every default lives once, in the config dataclasses or the library function."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from leafrl.config import TrainConfig


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
    model: str | None = typer.Option(None, help="hub name or HF directory", show_default="the built-in base model"),
    data: str | None = typer.Option(None, help="data directory or saved dataset", show_default="the built-in task"),
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

    console = Console(quiet=quiet)
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


def eval_(
    model: str | None = typer.Option(None, help="hub name or HF directory", show_default="the built-in base model"),
    adapter: Path | None = typer.Option(None, help="a LoRA adapter: its directory, a checkpoint or a `leafrl train` "
                                        "run directory (its latest checkpoint)"),
    data: str | None = typer.Option(None, help="data directory or saved dataset", show_default="the built-in task"),
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

    from leafrl.data import load_split
    from leafrl.eval.evaluate import evaluate, metrics_report
    from leafrl.eval.metrics import meteor_matching
    from leafrl.models import load_speech_lm
    from leafrl.tracking import progress_bar
    from leafrl.viz.runs import metrics_table

    console = Console(quiet=quiet)
    cfg = train_config(model, data, None, set_, console)
    examples = list(load_split(cfg.data, split))[:limit]
    if not examples:
        raise ValueError(f"--data {cfg.data}: split {split!r} has no rows")
    policy, speech = load_speech_lm(cfg.model)
    if adapter is not None:
        from peft import PeftModel

        from leafrl.checkpoint import adapter_dir

        policy = PeftModel.from_pretrained(policy, str(adapter_dir(adapter)))
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
