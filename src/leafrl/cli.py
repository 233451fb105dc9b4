"""The ``leafrl`` command line: thin wrappers that parse options and call the library.

Options that mirror a config field default to None and are passed on only when given, so
every default lives once, in the config dataclass.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import warnings
from pathlib import Path

import torch
import typer
from rich.console import Console
from rich.table import Table

from leafrl import __version__, cli_analysis
from leafrl.advantages import LeafConfig, grpo_advantages, leaf_advantages
from leafrl.config import SFTConfig, TrainConfig

app = typer.Typer(
    name="leafrl",
    help="LEAF (Low-rank Exploration with Adaptive Forking): RL post-training of speech-aware LLMs.",
    no_args_is_help=True,
    add_completion=False,
)

# The spec's worked example as German translations: responses 1-3 share "der rote Hund",
# 1-2 share the first 7 words, 4 shares nothing; the model was least sure at words 3 and 7.
EXAMPLE = [
    "der rote Hund läuft schnell über die Straße zum Park",
    "der rote Hund läuft schnell über die Brücke ins Haus",
    "der rote Hund schläft den ganzen Tag im warmen Haus",
    "ein roter Hund rennt auf der Straße zum großen Park",
]
EXAMPLE_REWARDS = [0.6, 0.4, 0.2, 0.0]
EXAMPLE_SURPRISAL = [5.0 if t == 3 else 4.0 if t == 7 else 0.1 * t for t in range(10)]


def _default(config: type, field: str) -> str:
    """A config dataclass's default for --help, so the CLI never restates one."""
    return str(getattr(config(), field))


@app.callback()
def overview() -> None:
    """LEAF samples K responses per prompt like GRPO, then finds their shared prefixes after the
    fact and gives each span of a response its own advantage."""


@app.command()
def version() -> None:
    """Print the leafrl version."""
    typer.echo(__version__)


@app.command()
def explain(
    fork_budget: int | None = typer.Option(None, help="B, boundaries per group",
                                           show_default=_default(LeafConfig, "fork_budget")),
    min_prefix_tokens: int | None = typer.Option(None, help="earliest boundary position",
                                                 show_default=_default(LeafConfig, "min_prefix_tokens")),
    terms: str | None = typer.Option(None, help="both | global | local", show_default=_default(LeafConfig, "terms")),
    normalize: str | None = typer.Option(None, help="span_zscore | none",
                                         show_default=_default(LeafConfig, "normalize")),
    boundaries: str | None = typer.Option(None, help="surprisal | trie",
                                          show_default=_default(LeafConfig, "boundaries")),
) -> None:
    """Walk through LEAF's credit assignment on the paper's worked example (K = 4 translations)."""
    given = {"fork_budget": fork_budget, "min_prefix_tokens": min_prefix_tokens, "terms": terms,
             "normalize": normalize, "boundaries": boundaries}
    try:
        config = LeafConfig(**{k: v for k, v in given.items() if v is not None})
    except ValueError as err:
        raise typer.BadParameter(str(err)) from err
    from leafrl.viz.tree import render_group

    words = [s.split() for s in EXAMPLE]
    vocab = {w: i for i, w in enumerate(sorted({w for ws in words for w in ws}))}
    ids = torch.tensor([[vocab[w] for w in ws] for ws in words])
    rewards = torch.tensor(EXAMPLE_REWARDS, dtype=torch.float64)
    group = torch.zeros(len(words), dtype=torch.long)
    _, stats, tree = leaf_advantages(ids, torch.ones_like(ids, dtype=torch.bool),
                                     torch.tensor([EXAMPLE_SURPRISAL] * len(words)), rewards, group,
                                     config, return_tree=True)
    console = Console()
    console.print(f"[bold]{config}[/bold]")
    console.print(render_group(words, rewards, grpo_advantages(rewards, group), tree, stats))


def _demo_default(name: str) -> str:
    """A build_demo default for --help, read from its signature (never restated here)."""
    import inspect

    from leafrl.data.demo import build_demo

    return str(inspect.signature(build_demo).parameters[name].default)


data_app = typer.Typer(help="Datasets: the built-in spoken task and converters for public releases.",
                        no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("demo")
def data_demo(
    out: Path | None = typer.Option(None, help="where to write it; sft and train find the default "
                                    "by themselves", show_default="the leafrl cache"),
    seed: int | None = typer.Option(None, help="random seed", show_default=_demo_default("seed")),
    n_train: int | None = typer.Option(None, help="training rows", show_default=_demo_default("n_train")),
    n_valid: int | None = typer.Option(None, help="validation rows", show_default=_demo_default("n_valid")),
    n_test: int | None = typer.Option(None, help="test rows", show_default=_demo_default("n_test")),
    workers: int | None = typer.Option(None, help="synthesis processes",
                                       show_default=_demo_default("workers")),
) -> None:
    """Synthesize the built-in spoken task with espeak-ng: En->De translation and spoken QA."""
    from leafrl.builtin import task_dir
    from leafrl.data.demo import build_demo

    given = {"seed": seed, "n_train": n_train, "n_valid": n_valid, "n_test": n_test, "workers": workers}
    summary = build_demo(out or task_dir(), **{k: v for k, v in given.items() if v is not None})
    counts = {split: c["rows"] for split, c in summary["counts"].items()}
    Console().print(f"built-in task in {out or task_dir()}: {counts}, mean clip {summary['mean_duration_s']:.1f} s")


@data_app.command("convert")
def data_convert(
    recipe: str = typer.Argument(..., help="covost2 | librisqa | longaudio"),
    src: Path = typer.Argument(..., help="the downloaded release"),
    out: Path = typer.Argument(..., help="output directory (train/valid/test.jsonl)"),
    librispeech: Path | None = typer.Option(None, help="LibriSpeech root (librisqa only)"),
    limit: int | None = typer.Option(None, help="at most this many rows per split"),
) -> None:
    """Convert a public release (downloaded by you) into leafrl's manifest layout."""
    from leafrl.data.recipes.covost2 import convert_covost2
    from leafrl.data.recipes.librisqa import convert_librisqa
    from leafrl.data.recipes.longaudio import convert_longaudio

    converters = {"covost2": convert_covost2, "librisqa": convert_librisqa, "longaudio": convert_longaudio}
    if recipe not in converters:
        raise typer.BadParameter(f"recipe must be one of {sorted(converters)}, got {recipe!r}")
    given = {"limit": limit, "librispeech": librispeech}
    summary = converters[recipe](src, out, **{k: v for k, v in given.items() if v is not None})
    Console().print_json(json.dumps(summary, default=str))


@app.command()
def sft(
    data: str | None = typer.Option(None, help="data directory or saved dataset",
                                    show_default="the built-in task"),
    model: str | None = typer.Option(None, help="hub name or HF directory", show_default="a new tiny SALLM"),
    out: str | None = typer.Option(None, help="output directory", show_default=_default(SFTConfig, "out")),
    steps: int | None = typer.Option(None, help="optimizer steps", show_default=_default(SFTConfig, "steps")),
    config: Path | None = typer.Option(None, help="a YAML file of SFTConfig settings"),
    set_: list[str] = typer.Option([], "--set", help="override a setting: --set lr=1e-4 (repeatable)"),
    overwrite: bool = typer.Option(False, help="start again in --out even if it holds a run (deletes its files)"),
    quiet: bool = typer.Option(False, help="no progress bar"),
) -> None:
    """Supervised fine-tuning on the references; held-out BLEU before and after."""
    from leafrl.builtin import prepare_task
    from leafrl.config import load_config
    from leafrl.sft import run_sft

    console = Console(quiet=quiet)
    cfg = load_config(SFTConfig, config, set_, data=data, model=model, out=out, steps=steps)
    if cfg.data is None:
        cfg = dataclasses.replace(cfg, data=str(prepare_task(console)))
    run_sft(cfg, console=console, quiet=quiet, overwrite=overwrite)


@app.command()
def train(
    algo: str | None = typer.Option(None, help="leaf | grpo", show_default=_default(TrainConfig, "algo")),
    model: str | None = typer.Option(None, help="hub name or HF directory", show_default="the built-in base model"),
    data: str | None = typer.Option(None, help="data directory or saved dataset", show_default="the built-in task"),
    out: str | None = typer.Option(None, help="output directory", show_default=_default(TrainConfig, "out")),
    steps: int | None = typer.Option(None, help="RL steps", show_default=_default(TrainConfig, "steps")),
    config: Path | None = typer.Option(None, help="a YAML file of TrainConfig settings"),
    set_: list[str] = typer.Option([], "--set", help="override a setting: --set optim.lr=1e-5 (repeatable)"),
    resume: Path | None = typer.Option(None, help="continue the run in this directory from its newest intact "
                                       "checkpoint, writing only there"),
    overwrite: bool = typer.Option(False, help="start again in --out even if it holds a run (deletes its files)"),
    examples: int = typer.Option(3, help="held-out examples shown before and after"),
    quiet: bool = typer.Option(False, help="no progress bar"),
) -> None:
    """LEAF (or GRPO) post-training with LoRA; held-out BLEU before and after.

    Without --model (and --config) it trains the built-in base model on the built-in task, with the
    settings of leafrl.builtin.BUILTIN_TRAIN over the paper's defaults.
    """
    from leafrl import builtin
    from leafrl.config import load_config
    from leafrl.trainer import train as run_train

    console = Console(quiet=quiet)
    if resume is not None:
        cfg = resumed_config(resume, set_, {"--algo": algo, "--model": model, "--data": data, "--out": out,
                                            "--config": config}, steps)
    else:
        cfg = load_config(TrainConfig, config, set_, presets=builtin.train_presets(model, config, set_), algo=algo,
                          model=model, data=data, out=out, steps=steps)
        cfg = builtin.resolve(cfg, console)
    summary = run_train(cfg, resume=resume is not None, overwrite=overwrite, quiet=quiet)
    if summary.get("valid_bleu_after") is not None:
        console.print(bleu_table(summary))
        console.print(builtin.report(Path(cfg.out), cfg.data, examples))


def resumed_config(run_dir: Path, overrides: list[str], options: dict, steps: int | None) -> TrainConfig:
    """The settings of the run in ``run_dir`` (its config.yaml) with ``--set`` and ``--steps`` applied
    and ``out`` set to ``run_dir`` itself, so a copied or moved run directory resumes in place."""
    from leafrl.config import load_config

    given = [name for name, value in options.items() if value is not None]
    if given:
        raise ValueError(f"--resume {run_dir} continues the run as saved there: {', '.join(given)} cannot be given "
                         "with it (change a setting with --set section.field=value)")
    if any(item.partition("=")[0].strip() == "out" for item in overrides):
        raise ValueError(f"--set out=...: --resume {run_dir} writes into {run_dir} itself")
    saved = run_dir / "config.yaml"
    if not saved.is_file():
        raise ValueError(f"--resume {run_dir}: no run there (no config.yaml)")
    return load_config(TrainConfig, saved, overrides, steps=steps, out=str(run_dir.resolve()))


@app.command("build-base")
def build_base(
    out: Path | None = typer.Option(None, help="where to write the model", show_default="inside the package"),
) -> None:
    """Train the built-in base model (about 15 minutes on 2 cores): the built-in task's clips in the
    mixed conventions of several sources (leafrl.data.base_corpus), then SFT of a fresh tiny SALLM.
    The package ships its result; this is the command that made it."""
    from leafrl.builtin import BASE_MODEL_DIR
    from leafrl.builtin import build_base as build

    info = build(out or BASE_MODEL_DIR)
    Console().print(f"base model written to {out or BASE_MODEL_DIR} (held-out BLEU against the task's "
                    f"references {info['sft']['valid_bleu_after']:.1f})")


cli_analysis.register(app)  # eval, compare, inspect, forks, credit


def bleu_table(summary: dict) -> Table:
    """Held-out BLEU before vs after training, greedy and sampled, with paired bootstrap p-values."""
    table = Table(title=f"held-out BLEU ({summary['valid_examples']} rows), {summary['steps']} "
                        f"{summary['algo']} steps")
    for column in ("decoding", "before", "after", "change", "p"):
        table.add_column(column, justify="left" if column == "decoding" else "right")
    rows = [("greedy", "valid_bleu")]
    if "valid_bleu_sampled_after" in summary:
        rows.append(("sampled (mean of passes)", "valid_bleu_sampled"))
    for name, key in rows:
        before, after = summary[f"{key}_before"], summary[f"{key}_after"]
        p_value = summary.get(f"{key}_p_value")
        table.add_row(name, f"{before:.2f}", f"{after:.2f}", f"{after - before:+.2f}",
                      "" if p_value is None else f"{p_value:.3f}")
    table.caption = "p: paired bootstrap over the held-out rows (1000 resamples): is the change more than chance?"
    return table


def main(argv: list[str] | None = None) -> None:
    """The ``leafrl`` command (``argv``: its arguments, default ``sys.argv[1:]``). The library's own
    errors (bad input, a missing tool or file, out of memory) print as one line that names the
    cause and the fix, exit status 1; LEAFRL_TRACEBACK=1 shows the traceback instead."""
    warnings.filterwarnings("ignore", category=FutureWarning)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # no "Loading weights" / "Writing model shards" bars or notices
    hf_logging.disable_progress_bar()
    try:
        app(args=argv, prog_name="leafrl")
    except Exception as err:
        if os.environ.get("LEAFRL_TRACEBACK") or not _is_library_error(err):
            raise
        Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/bold red] {err}", highlight=False)
        sys.exit(1)


def _is_library_error(err: Exception) -> bool:
    """leafrl's own errors: ValueError and MemoryError as the library raises them (they name the
    argument, row or file), espeak-ng's, and missing files."""
    from leafrl.data.demo import EspeakError

    return isinstance(err, ValueError | MemoryError | EspeakError | FileNotFoundError)


if __name__ == "__main__":
    main()
