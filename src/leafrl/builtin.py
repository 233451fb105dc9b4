"""Everything built in, in one place: the spoken task, the base speech LLM shipped with the
package, and the settings ``leafrl train`` uses on them.

- The task (:mod:`leafrl.data.demo`) is synthesized with espeak-ng on first use into
  ``task_dir()`` (``$LEAFRL_CACHE/demo``, else ``$XDG_CACHE_HOME/leafrl/demo``, else
  ``~/.cache/leafrl/demo``).
- The base model (``BASE_MODEL_DIR``, inside the package) is the built-in tiny SALLM trained by
  ``leafrl build-base`` on the base corpus (:mod:`leafrl.data.base_corpus`): the task's training
  clips answered in the mixed conventions of several sources, so before RL it follows the task's
  conventions only some of the time. RL with the task's BLEU reward has that to teach.
- ``BUILTIN_TRAIN``: what ``leafrl train`` changes from the paper's defaults on them.

The trainer and ``sft`` know none of this: the CLI resolves the built-in into explicit paths.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console, Group

from leafrl._files import write_text_atomic

BASE_MODEL_DIR = Path(__file__).parent / "base_model"
BUILTIN_TRAIN = [
    # LoRA at the paper's rank 64 and lr 5e-6 barely moves a 3M-parameter model, and its answers end
    # within 32 tokens. LoRA dropout is off: on a CPU its random masks cost a third of the update.
    "steps=120",
    "eval_every=40",
    "save_every=40",
    "lora_settings.rank=16",
    "lora_settings.alpha=32",
    "lora_settings.dropout=0",
    "optim.lr=3e-4",
    "rollout.max_new_tokens=32",
]


def cache_dir() -> Path:
    """``$LEAFRL_CACHE``, else ``$XDG_CACHE_HOME/leafrl``, else ``~/.cache/leafrl``."""
    if os.environ.get("LEAFRL_CACHE"):
        return Path(os.environ["LEAFRL_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "leafrl"
    return Path.home() / ".cache" / "leafrl"


def task_dir() -> Path:
    """Where the built-in task is synthesized (once)."""
    return cache_dir() / "demo"


def prepare_task(console: Console, out: Path | None = None, **sizes: int) -> Path:
    """The built-in task's directory, synthesized first if it is missing (a no-op otherwise)."""
    from leafrl.data.demo import build_demo

    out = task_dir() if out is None else Path(out)
    if not (out / "summary.json").is_file():
        console.print(f"synthesizing the built-in spoken task into {out} (once)")
    build_demo(out, **sizes)
    return out


def base_model(path: Path = BASE_MODEL_DIR) -> str:
    """The shipped base model's directory, checked against this build's task format."""
    from leafrl.data.demo import FORMAT_VERSION

    info = path / "leafrl_base.json"
    if not info.is_file():
        raise ValueError(f"the built-in base model is missing from {path}; build it with "
                         f"`leafrl build-base --out {path}`")
    made_for = json.loads(info.read_text())["task_format_version"]
    if made_for != FORMAT_VERSION:
        raise ValueError(f"the built-in base model in {path} was built for task format {made_for}, this build's "
                         f"task is format {FORMAT_VERSION}; rebuild it with `leafrl build-base --out {path}`")
    return str(path)


def train_presets(model: str | None, config: Path | None, overrides: list[str]) -> list[str]:
    """The settings a ``leafrl train`` call starts from, below its options and ``--set``s:
    ``BUILTIN_TRAIN`` when it trains the built-in model (no --model, --config or model= override)."""
    builtin = model is None and config is None and not any(item.startswith("model=") for item in overrides)
    return list(BUILTIN_TRAIN) if builtin else []


def resolve(cfg: Any, console: Console) -> Any:
    """``cfg`` (a TrainConfig) with the built-in task for a missing ``data`` (synthesized first
    if needed) and the built-in base model for a missing ``model``."""
    import dataclasses

    if cfg.data is None and not (task_dir() / "summary.json").is_file() and int(os.environ.get("WORLD_SIZE", 1)) > 1:
        raise ValueError(f"the built-in task is not in {task_dir()} yet: build it once with `leafrl data demo` "
                         "before starting several processes")
    return dataclasses.replace(cfg, data=cfg.data or str(prepare_task(console)), model=cfg.model or base_model())


def report(run_dir: Path, data: str, examples: int) -> Group:
    """What a finished run did to the held-out rows: the first ``examples`` rows' greedy answers
    before and after, and, on the built-in task, how often the answers follow its conventions."""
    from leafrl.data import load_split
    from leafrl.data.base_corpus import convention_of
    from leafrl.viz.runs import examples_table, shares_table

    before, after = (json.loads((run_dir / f"{name}.json").read_text())["predictions"]["greedy"]
                     for name in ("before", "after"))
    rows = list(load_split(data, "valid"))[: len(before)]
    shown = rows[:examples]
    parts = [examples_table([ex.id for ex in shown], [ex.reference for ex in shown], before[:examples],
                            after[:examples])]
    if all(ex.task in ("ast", "sqa") and "transcript" in ex.meta for ex in rows):
        def shares(predictions: list[str]) -> dict[str, float]:
            """Share of each task's rows answered in each convention."""
            kinds = [(ex.task, convention_of(text, ex.task, ex.reference, ex.meta["transcript"]))
                     for ex, text in zip(rows, predictions)]
            per_task = Counter(task for task, _ in kinds)
            return {f"{task}: {kind}": n / per_task[task] for (task, kind), n in Counter(kinds).items()}

        parts.append(shares_table(shares(before), shares(after), "how the greedy answers are written (share of "
                                  "each task's rows; \"task\": the built-in task's own convention)"))
    return Group(*parts)


# ------------------------------------------------------------------------------ the base model


def write_corpus(task: Path, out: Path, seed: int = 0) -> Path:
    """The base corpus of the task in ``task`` as a manifest directory ``out``: train.jsonl (the
    corpus) and valid.jsonl (the task's own held-out rows, to report how far the base follows the
    task's conventions). Audio paths point into ``task``."""
    from leafrl.data.base_corpus import corpus_rows
    from leafrl.data.demo import manifest_text

    def rows(split: str) -> list[dict]:
        lines = (task / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
        return [{**row, "audio": str((task / row["audio"]).resolve())} for row in map(json.loads, lines)]

    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "train.jsonl", manifest_text(corpus_rows(rows("train"), seed)))
    write_text_atomic(out / "valid.jsonl", manifest_text(rows("valid")))
    return out


def build_base(out: Path, *, work: Path | None = None, task_sizes: dict[str, int] | None = None,
               sft_overrides: list[str] | None = None, console: Console | None = None) -> dict:
    """Train the built-in base model into ``out``: the built-in task, its base corpus, then
    ``leafrl sft`` of a fresh tiny SALLM (alignment, then SFT) with the default ``SFTConfig`` and
    seed. ``task_sizes`` and ``sft_overrides`` make a smaller build (tests). The weights are
    stored in float16 (half the size; they load as float32)."""
    import torch

    from leafrl.config import SFTConfig, apply_overrides
    from leafrl.data.demo import FORMAT_VERSION
    from leafrl.models import load_speech_lm
    from leafrl.sft import run_sft

    console = console or Console()
    work = cache_dir() / "base-build" if work is None else Path(work)
    task = prepare_task(console, work / "task" if task_sizes else None, **(task_sizes or {}))
    corpus = write_corpus(task, work / "corpus")
    cfg = apply_overrides(SFTConfig(data=str(corpus), out=str(work / "sft")), sft_overrides or [])
    summary = run_sft(cfg, console=console, overwrite=True)  # work/ is this build's scratch
    model, adapter = load_speech_lm(summary["model_dir"])
    staging = Path(f"{out}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    adapter.save(model.to(torch.float16), str(staging))
    set_stored_dtype(staging, "float32")
    recorded = ("steps", "train_examples", "valid_examples", "valid_bleu_after", "wall_seconds")
    info = {"task_format_version": FORMAT_VERSION, "command": "leafrl build-base",
            "sft": {key: summary[key] for key in recorded}}
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
