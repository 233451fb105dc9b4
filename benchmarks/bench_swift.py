"""Seconds per RL step: leafrl's GRPO beside ms-swift's GRPO (``swift rlhf --rlhf_type grpo``), the
library people use for GRPO on Qwen2-Audio, on the same tiny Qwen2-Audio, data and settings.

    python benchmarks/bench_swift.py [--steps 4] [--rounds 3] [--venv .venv-swift] [--threads N]

Runs on CPU and downloads no model or data. ms-swift 4.6.0 caps transformers < 5.20, peft < 0.21
and trl < 1.0, below leafrl's, so it lives in its own venv (``--venv``, default ``.venv-swift`` in
the repository), which this script creates on first use with pip (torch 2.13.0, ms-swift 4.6.0,
transformers 5.19.0, peft 0.20.0, trl 0.29.1, and msgspec and librosa, which ms-swift imports
but does not declare) and reuses after. ms-swift's side is ``swift_side.py``, run in that venv.

The model is leafrl's built-in base model (``builtin:conventions``: a tiny trained
``Qwen2AudioForConditionalGeneration``, 3.4M parameters) and the data its built-in spoken task
(``leafrl.data.load_split``; synthesized into ``$LEAFRL_CACHE`` on first use). ms-swift reads
the same rows exported to its dataset format (messages with ``<audio>``, ``audios`` paths, the
reference in an extra column), in the order leafrl draws them, unshuffled. Both sides compute the
log-mel features with the model's own processor settings (80 mels, hop 640, n_fft 640, an 8 s
window): ms-swift's Qwen2-Audio template calls the model's feature extractor. The first row's
prompt tokens and features are compared between the two sides and the result printed.

Settings shared, read from leafrl's default recipe for ``leafrl train`` (``builtin-conventions``)
with ``algo=grpo``: 6 prompts x K 8 per step, 48 completions in minibatches of 6 (8 optimizer
steps per RL step; ms-swift ``per_device_train_batch_size`` 6, ``steps_per_generation`` 8),
temperature 1.0, top-p 0.9, no top-k, 32 new tokens at most, LoRA r 16 / alpha 32 / dropout 0 on
the language model's q/k/v/o/gate/up/down, AdamW lr 3e-4 betas (0.9, 0.95) no weight decay, grad
clip 1.0, cosine schedule with 5% warmup to 0.1 x lr, KL beta 0.02 against the base model (LoRA
disabled), clip eps 0.2, per-sequence token-mean loss, float32, no gradient checkpointing, seed
42, reward sentence BLEU / 100 (sacrebleu; ms-swift through its reward-plugin registry).

Left as each library does it: the sampled tokens differ (the mean response length is printed);
ms-swift cannot turn top-k off (its top_k -1 becomes None, which transformers fills with its
default 50) and leafrl keeps the audio marker tokens from being sampled; leafrl embeds each
prompt once per RL step (its audio encoded once for all passes, its K samples sharing the
prompt's cache) and runs its passes in micro-batches of 8 rows, its first minibatch on-policy
without an old-policy pass; ms-swift samples with its TransformersEngine (all 48 in one batch, each row encoding its
own audio), re-encodes every row (and its audio) for the update, computes old-policy and
reference log-probs of all 48 in no-grad passes of 6 rows (8 each) and normalizes advantages by
std + 1e-4 (leafrl: std floored at 1/3).

The two sides alternate in ``--rounds`` rounds: each round runs a fresh leafrl process and a
fresh ms-swift process (their order swapped every other round) for 1 + ``--steps`` RL steps; the
first step of each process is a warm-up, not counted. Setup (loading, LoRA, the trainer) is not
timed on either side: leafrl times ``train_step``; ms-swift a TrainerCallback, from the end of one
generation's last optimizer step to the end of the next one's. Medians are printed beside means
(a shared machine's outliers); on a busy CPU torch's default thread count can stall for tens of
seconds a step, and ``--threads 1`` gives steadier numbers. The changes ms-swift needed to run
are printed with the results.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SWIFT_PACKAGES = ["ms-swift==4.6.0", "transformers==5.19.0", "peft==0.20.0", "trl==0.29.1", "msgspec", "librosa",
                  "sacrebleu", "soundfile"]
INSTALL_CHANGES = [
    "its own venv: ms-swift 4.6.0 requires transformers<5.20, peft<0.21, trl<1.0 (leafrl's venv: transformers "
    "5.23, peft 0.21, trl 1.16); torch 2.13.0 (CPU) installed first, as in leafrl's venv",
    "msgspec and librosa installed by hand: ms-swift imports them (GRPO's utils, its audio loading) but does "
    "not declare them",
    "the built-in task exported to ms-swift's dataset format (messages with '<audio>' + prompt, audios, "
    "reference), in leafrl's prompt order, with dataset_shuffle and train_dataloader_shuffle off",
]


def ensure_venv(venv: Path) -> Path:
    """The ms-swift venv's python, created with pip on first use."""
    python = venv / "bin" / "python"
    check = [str(python), "-c", "import swift, msgspec, librosa, sacrebleu, soundfile"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    print(f"creating the ms-swift venv in {venv} (pip: {' '.join(SWIFT_PACKAGES)})", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "torch==2.13.0"], check=True)  # first: the CPU build, as leafrl's venv
    subprocess.run([*pip, *SWIFT_PACKAGES], check=True)
    subprocess.run(check, check=True)
    return python


def leafrl_config(steps: int, out: Path) -> Any:
    """leafrl's default recipe for ``leafrl train`` with ``algo=grpo``, for ``steps`` RL steps."""
    from leafrl import recipes
    from leafrl.config import TrainConfig, load_config

    return load_config(TrainConfig, recipe=recipes.DEFAULT,
                       overrides=["algo=grpo", f"steps={steps}", f"out={out}", "eval.examples=1"])


def shared_settings(cfg: Any, root: Path, threads: int | None) -> dict:
    """The settings swift_side.py runs with, read from leafrl's config; exports its data."""
    from leafrl.builtin import locate_model
    from leafrl.data import load_split
    from leafrl.models import LORA_PROJECTIONS
    from leafrl.schedule import prompts_for

    r, o, lo = cfg.rollout, cfg.optim, cfg.loss
    if cfg.gradient_checkpointing or cfg.system or cfg.optim.epochs != 1 or lo.agg != "seq_mean_token_mean":
        raise SystemExit("bench_swift.py matches ms-swift to one update epoch, no system prompt, no checkpointing")
    train = list(load_split(cfg.data, "train"))
    rows = [ex for step in range(cfg.steps) for ex in prompts_for(step, train, r.prompts_per_step, cfg.seed)]
    dataset = root / "swift-train.jsonl"
    dataset.write_text("".join(json.dumps({
        "messages": [{"role": "user", "content": "<audio>" + ex.prompt}], "audios": [str(Path(ex.audio).resolve())],
        "reference": ex.reference}) + "\n" for ex in rows))
    return {"model": str(Path(locate_model(cfg.model)).resolve()), "dataset": str(dataset), "steps": cfg.steps,
            "prompts": r.prompts_per_step, "k": r.rollout_budget, "minibatch": o.minibatch,
            "max_new_tokens": r.max_new_tokens, "temperature": r.temperature, "top_p": r.top_p,
            "lora_rank": cfg.lora.rank, "lora_alpha": cfg.lora.alpha, "lora_dropout": cfg.lora.dropout,
            "lora_targets": list(LORA_PROJECTIONS), "lr": o.lr, "beta1": o.beta1, "beta2": o.beta2,
            "weight_decay": o.weight_decay, "grad_clip": o.grad_clip, "warmup_frac": o.warmup_frac,
            "min_lr_ratio": o.min_lr_ratio, "kl_beta": lo.beta, "clip_low": lo.clip_low, "clip_high": lo.clip_high,
            "seed": cfg.seed, "threads": threads, "out": str(root / "swift-out")}


def leafrl_side(settings: Path, result: Path) -> None:
    """leafrl's side (a fresh process): ``train_step`` timed for every step of the run."""
    import torch
    from rich.console import Console

    from leafrl.rollout.batch import encode_examples
    from leafrl.schedule import prompts_for
    from leafrl.trainer import setup, train_step

    s = json.loads(settings.read_text())
    if s["threads"]:
        torch.set_num_threads(s["threads"])
    cfg = leafrl_config(s["steps"], Path(s["out"]).with_name("leafrl-out"))
    run = setup(cfg, Console(quiet=True), resume=False)
    first = encode_examples(run.family, prompts_for(0, run.train, cfg.rollout.prompts_per_step, cfg.seed)[:1],
                            cfg.system)  # the first row ms-swift reads
    seconds, tokens = [], []
    for step in range(cfg.steps):
        start = time.perf_counter()
        row = train_step(run, step)
        seconds.append(time.perf_counter() - start)
        tokens.append(row["response_tokens"])
    result.write_text(json.dumps({"seconds": seconds, "tokens": tokens, "prompt_ids": first["input_ids"][0].tolist(),
                                  "features": first["input_features"][0].flatten().tolist()}))


def run_side(name: str, command: list[str], settings: Path, root: Path, index: int) -> dict:
    """One fresh process of a side; its result JSON (its output in a log, shown if it fails)."""
    result, log = root / f"{name}-{index}.json", root / f"{name}-{index}.log"
    with log.open("w") as out:
        done = subprocess.run([*command, str(settings), str(result)], stdout=out, stderr=subprocess.STDOUT,
                              env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    if done.returncode != 0:
        sys.exit(f"{name} failed (exit {done.returncode}); the end of {log}:\n" + log.read_text()[-4000:])
    return json.loads(result.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="timed RL steps per process (after one warm-up step)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of a leafrl and an ms-swift process")
    parser.add_argument("--venv", type=Path, default=HERE.parent / ".venv-swift", help="ms-swift's venv")
    parser.add_argument("--threads", type=int, help="torch threads on both sides (default: torch's own)")
    parser.add_argument("--leafrl-side", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    if args.leafrl_side:
        return leafrl_side(*args.leafrl_side)
    if args.steps < 1 or args.rounds < 1:
        parser.error("need --steps >= 1 and --rounds >= 1")
    python = ensure_venv(args.venv.resolve())
    sides = {"leafrl": [sys.executable, __file__, "--leafrl-side"],
             "ms-swift": [str(python), str(HERE / "swift_side.py")]}
    timed: dict[str, dict[str, list]] = {side: {"seconds": [], "tokens": []} for side in sides}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        settings = root / "settings.json"
        settings.write_text(json.dumps(shared_settings(leafrl_config(args.steps + 1, root), root, args.threads)))
        for round_ in range(args.rounds):
            for side in (list(sides) if round_ % 2 == 0 else list(sides)[::-1]):
                got = run_side(side, sides[side], settings, root, round_)
                timed[side]["seconds"] += got["seconds"][1:]
                timed[side]["tokens"] += got["tokens"][1:]
                timed[side]["first"] = got
        versions = subprocess.run([str(python), "-c", "import swift, transformers, peft, trl, torch; print("
                                   "f'ms-swift {swift.__version__}, transformers {transformers.__version__}, "
                                   "peft {peft.__version__}, trl {trl.__version__}, torch {torch.__version__}')"],
                                  capture_output=True, text=True, check=True).stdout.strip()
    report(args, timed, versions)


def report(args: argparse.Namespace, timed: dict[str, dict[str, list]], versions: str) -> None:
    import peft
    import torch
    import transformers

    mine, theirs = timed["leafrl"]["first"], timed["ms-swift"]["first"]
    same_ids = mine["prompt_ids"] == theirs["prompt_ids"][: len(mine["prompt_ids"])]
    gap = max(abs(a - b) for a, b in zip(mine["features"], theirs["features"], strict=True))
    print(f"leafrl: transformers {transformers.__version__}, peft {peft.__version__}, torch {torch.__version__}; "
          f"ms-swift venv: {versions}; {args.threads or 'default'} torch threads, CPU")
    print(f"built-in Qwen2-Audio and spoken task, 6 prompts x K 8, 8 optimizer steps of 6 per RL step; {args.rounds} "
          f"alternating rounds of 1 warm-up + {args.steps} timed steps per process")
    print(f"first prompt: same {len(mine['prompt_ids'])} tokens on both sides: {'yes' if same_ids else 'NO'}; "
          f"its log-mel features differ by at most {gap:.2e}")
    print(f"\n{'':<10}{'median s/step':>14}{'mean s/step':>13}{'min s':>8}{'max s':>8}{'resp tokens':>13}")
    for side, t in timed.items():
        s = t["seconds"]
        print(f"{side:<10}{statistics.median(s):>14.3f}{statistics.mean(s):>13.3f}{min(s):>8.3f}{max(s):>8.3f}"
              f"{statistics.mean(t['tokens']):>13.1f}")
    print("\nchanges ms-swift needed to run (and to its inputs):")
    for change in INSTALL_CHANGES + theirs["changes"]:
        print(f"- {change}")
    median = statistics.median(timed["ms-swift"]["seconds"]) / statistics.median(timed["leafrl"]["seconds"])
    mean = statistics.mean(timed["ms-swift"]["seconds"]) / statistics.mean(timed["leafrl"]["seconds"])
    print(f"\nratio ms-swift / leafrl, same settings (median s/step): {median:.2f} (mean {mean:.2f})")


if __name__ == "__main__":
    main()
