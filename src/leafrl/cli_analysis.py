"""The ``leafrl`` commands that judge and look inside: eval, compare, inspect, forks, credit, and
plan (the memory of a run before it is launched). Each parses its options, resolves its
TrainConfig like ``leafrl train`` (recipe, --config, options, --set) and calls the library, which
does the work and writes the files; the command prints what it returns.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from leafrl.cli_options import DATA, MODEL, QUIET, ConfigSources, at_least, with_config_sources
from leafrl.config import TrainConfig
from leafrl.errors import UserError

ADAPTER = typer.Option(None, help="a LoRA adapter: its directory, a checkpoint or a `leafrl train` run directory "
                       "(its newest intact checkpoint)")
SAMPLED_SPLIT = typer.Option("train", help="the split whose items are sampled")
SAMPLED_ITEMS = typer.Option(200, help="items (each gets K responses)")
SEED = typer.Option(0, help="seeds the sampling")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the ``leafrl`` app."""
    app.command("eval")(with_config_sources(eval_))
    app.command()(with_config_sources(compare))
    app.command()(with_config_sources(forks))
    app.command()(with_config_sources(credit))
    app.command()(with_config_sources(inspect))
    app.command("plan")(with_config_sources(plan_))


def eval_(
    model: str | None = MODEL,
    adapter: Path | None = ADAPTER,
    data: str | None = DATA,
    split: str = typer.Option("valid", help="the split to evaluate"),
    limit: int | None = typer.Option(None, help="the first N rows only"),
    passes: int | None = typer.Option(None, help="sampled passes beside the greedy one (eval.sampled_passes)",
                                      show_default="the recipe's"),
    bertscore_model: str | None = typer.Option(None, help="a LOCAL encoder model directory for BERTScore "
                                               "(skipped without one: leafrl never downloads)"),
    out: Path = typer.Option(Path("runs/eval"), help="where predictions.jsonl and metrics.json go"),
    *,
    sources: ConfigSources,
    quiet: bool = QUIET,
) -> None:
    """Score a model (base, SFT, or base + a LoRA adapter) on a split: BLEU (lowercased and cased),
    chrF, ROUGE-1/2/L, METEOR, WER on transcription tasks and BERTScore with a local model, for the
    greedy pass and the mean +- std over sampled passes, per task."""
    from leafrl.eval.evaluate import evaluate_split
    from leafrl.viz.runs import metrics_table, slots_table

    at_least("--limit", limit, 1, "rows")
    at_least("--passes", passes, 0, "sampled passes")
    console = Console()  # --quiet hides the progress bars only
    cfg = sources.resolve(TrainConfig, overrides=[] if passes is None else [f"eval.sampled_passes={passes}"],
                           model=model, data=data)
    report = evaluate_split(cfg, adapter, split, limit, bertscore_model, out, console, quiet)
    for name, entry in report.metrics.items():
        console.print(metrics_table(entry, f"{name}: {entry['rows']} rows of {split}"))
    if report.slots is not None:
        console.print(slots_table(report.slots))
    console.print(f"BLEU signature: {report.bleu_signature['bleu']} (bleu_cased: case:mixed)\n"
                  f"METEOR matching: {report.meteor}; BERTScore: {report.bertscore}\n"
                  f"predictions and metrics in {out}")


def _seeds(spec: str) -> list[int]:
    """``--seeds``: a count S (seeds 0..S-1) or a comma-separated list."""
    try:
        seeds = list(range(int(spec))) if "," not in spec else [int(s) for s in spec.split(",")]
    except ValueError as err:
        raise UserError(f"--seeds {spec!r}: give a count (5) or a list (1,2,3)") from err
    if not seeds:
        raise UserError(f"--seeds {spec!r}: no seeds")
    return seeds


def compare(
    model: str | None = MODEL,
    data: str | None = DATA,
    out: Path = typer.Option(Path("runs/compare"), help="report directory (runs go to OUT/runs)"),
    seeds: str = typer.Option("5", help="a count S (seeds 0..S-1) or a list 1,2,3"),
    steps: int | None = typer.Option(None, help="RL steps per run", show_default="the recipe's"),
    algos: str = typer.Option("leaf,grpo", help="arms, comma-separated (leaf, grpo, leafrl); an arm may carry "
                              "overrides: leaf:leaf.boundaries=trie"),
    reference: str | None = typer.Option(None, help="the arm every other arm is compared with",
                                         show_default="the last arm"),
    jobs: int = typer.Option(2, help="runs trained at once, in worker processes that split the cores"),
    *,
    sources: ConfigSources,
    quiet: bool = QUIET,
) -> None:
    """LEAF against GRPO (or any arms) from the same start at equal budget over several seeds:
    report.md, summary.json and plots in OUT. Finished runs are reused and interrupted ones resumed,
    so the same command continues a comparison."""
    from rich.markdown import Markdown

    from leafrl.compare import compare as run_compare
    from leafrl.compare import interval, parse_arms

    at_least("--steps", steps, 1, "RL steps")
    at_least("--jobs", jobs, 1, "runs trained at once")
    console = Console()  # --quiet hides the progress bars only
    arms = parse_arms(algos)
    base = sources.resolve(TrainConfig, model=model, data=data, steps=steps)
    summary = run_compare(base, arms, _seeds(seeds), out, jobs=jobs, console=console, quiet=quiet,
                          reference=reference)
    console.print(Markdown((out / "report.md").read_text().split("## Plots")[0]))
    d = summary.diffs[summary.headline].greedy
    console.print(f"{summary.headline} - {summary.reference}: greedy BLEU {d.mean:+.2f} "
                  f"{interval(d.ci95, len(d.seeds), signed=True)}; report in {out / 'report.md'}", markup=False)


def plan_(
    model: str | None = MODEL,
    data: str | None = DATA,
    *,
    sources: ConfigSources,
    gpu_memory: float | None = typer.Option(None, help="GiB per GPU: also say the largest micro_batch that fits"),
    prompt_tokens: int | None = typer.Option(None, help="the longest prompt in tokens, audio included",
                                             show_default="measured on --data's train split (loads the processor); "
                                             "without --data: the model's context window minus max_new_tokens"),
) -> None:
    """Memory per process of `leafrl train` with these settings, before launching it: parameters
    (counted on the meta device, no weights read), weights, optimizer, rollout and update, the
    peak, and with --gpu-memory the largest optim.micro_batch that fits (with and without
    gradient_checkpointing). It says where the prompt length comes from: --prompt-tokens, --data's
    longest prompt, or (without --data, or when its rows do not fit the model) the model's context
    window less the new tokens."""
    from leafrl.config import load_config
    from leafrl.plan import plan_report
    from leafrl.viz.runs import plan_view

    at_least("--prompt-tokens", prompt_tokens, 1, "tokens")
    if gpu_memory is not None and not gpu_memory > 0:
        raise UserError(f"--gpu-memory {gpu_memory:g}: give the GiB of one GPU, a number > 0")
    cfg = sources.resolve(TrainConfig, model=model, data=data)
    # the recipe's own data belongs to the recipe's model: measured only when chosen (--data, --config, --set)
    chosen = data is not None or cfg.data != load_config(TrainConfig, recipe=sources.recipe_name).data
    Console().print(plan_view(plan_report(cfg, prompt_tokens, gpu_memory, measure=chosen and cfg.data is not None),
                              cfg))


def forks(
    model: list[str] = typer.Option([], help="hub name, HF directory, GGUF file or builtin:NAME; repeat to "
                                    "overlay models", show_default="the recipe's"),
    adapter: list[str] = typer.Option([], help="a LoRA adapter per --model (\"none\" for none); repeat"),
    data: str | None = DATA,
    split: str = SAMPLED_SPLIT,
    limit: int = SAMPLED_ITEMS,
    seed: int = SEED,
    out: Path = typer.Option(Path("runs/forks"), help="where forks.csv and forks.png go"),
    *,
    sources: ConfigSources,
    quiet: bool = QUIET,
) -> None:
    """Fork-fire and usable fork-fire rates by boundary position, with Wilson 95% intervals
    (positions up to 40 chosen at least 15 times): K responses per item, LEAF's boundary selection."""
    from leafrl.eval.analysis import adapters_for
    from leafrl.eval.analysis import forks as run_forks

    at_least("--limit", limit, 1, "items")
    console = Console()  # --quiet hides the progress bars only
    runs = []
    for name, lora in adapters_for(model, adapter):
        cfg = sources.resolve(TrainConfig, model=name, data=data)
        runs.append((Path(cfg.model).name + ("" if lora is None else f" + {lora.name}"), cfg, lora))
    rates = run_forks(runs, split, limit, seed, out, console, quiet)
    for label, rows in rates.items():
        console.print(f"{label}: " + "  ".join(f"p{r.position} {r.fire_rate:.2f}/{r.usable_rate:.2f} "
                                                f"(n {r.selections})" for r in rows[:12]))
    console.print(f"fire/usable rates by position in {out / 'forks.csv'} and {out / 'forks.png'}")


def credit(
    model: str | None = MODEL,
    adapter: Path | None = ADAPTER,
    data: str | None = DATA,
    split: str = SAMPLED_SPLIT,
    limit: int = SAMPLED_ITEMS,
    seed: int = SEED,
    out: Path = typer.Option(Path("runs/credit"), help="where credit.json and credit.png go"),
    *,
    sources: ConfigSources,
    quiet: bool = QUIET,
) -> None:
    """Credit assignment measured without training: on the SAME rollouts, how GRPO, LEAF and every
    one-setting LEAF variant credit the tokens that match the reference and those that do not."""
    from leafrl.eval.analysis import CREDIT_LABELS
    from leafrl.eval.analysis import credit as run_credit
    from leafrl.viz.runs import credit_table

    at_least("--limit", limit, 1, "items")
    console = Console()  # --quiet hides the progress bars only
    cfg = sources.resolve(TrainConfig, model=model, data=data)
    report = run_credit(cfg, adapter, split, limit, seed, out, console, quiet)
    console.print(credit_table(report, CREDIT_LABELS))
    console.print(f"table in {out / 'credit.json'}, plot in {out / 'credit.png'}")


def inspect(
    rollouts: Path | None = typer.Option(None, help="a rollout file or a `leafrl train` run directory (its newest "
                                         "saved rollouts)", show_default="sample from --model on --data"),
    model: str | None = MODEL,
    adapter: Path | None = ADAPTER,
    data: str | None = DATA,
    split: str = typer.Option("valid", help="the split to sample from"),
    items: int = typer.Option(2, help="groups shown: the first N of the file or split"),
    seed: int = SEED,
    html_out: Path = typer.Option(Path("runs/inspect.html"), "--html", help="the self-contained HTML page"),
    *,
    sources: ConfigSources,
    quiet: bool = typer.Option(False, help="print nothing but the file written"),
) -> None:
    """The recovered tree of real rollouts: K responses per prompt with LEAF's boundaries (and
    their surprisal), the shared prefixes, node values and sizes, each span coloured by its
    advantage beside GRPO's one advantage per response; in the terminal and as one HTML file.
    With --rollouts, the run's own config.yaml (when it is there) is applied over the recipe."""
    from leafrl.config import load_config
    from leafrl.eval.inspect import run_config_of, sampled_views, save_html, saved_views
    from leafrl.rollout.record import load_rollouts
    from leafrl.viz.tree import render_group

    at_least("--items", items, 1, "groups")
    console = Console()
    if rollouts is not None:
        saved = load_rollouts(rollouts)  # only the LEAF and GRPO settings matter, not the model
        cfg = load_config(TrainConfig, recipe=sources.recipe_name, path=sources.config or run_config_of(saved),
                          overrides=sources.set_)
        views, source = saved_views(saved, items, cfg.leaf, cfg.grpo_std_floor), f"{saved.path} (step {saved.step})"
    else:
        cfg = sources.resolve(TrainConfig, model=model, data=data)
        views = sampled_views(cfg, adapter, split, items, seed, Console(quiet=quiet), quiet)
        source = f"{cfg.model} on {split} of {cfg.data}"
    for view in views if not quiet else []:
        console.rule(f"{view.title}: {view.reference}")
        console.print(render_group(view))
    console.print(f"HTML page in {save_html(html_out, views, f'LEAF trees: {source}')}")
