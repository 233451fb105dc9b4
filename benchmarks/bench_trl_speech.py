"""Speech RL in TRL against ``leafrl train``, at the same budget, in one run: held-out BLEU before
and after, and seconds per RL step.

    python benchmarks/bench_trl_speech.py [--steps 120] [--fork-budget 2] [--out runs/bench-trl-speech]

Both sides train the built-in base speech LLM on the built-in spoken task at the built-in recipe's
settings (``leafrl recipes``: 6 prompts x K 8 per step, minibatches of 6, LoRA r16 on the language
model, lr 3e-4, 32 new tokens, KL 0.02, LEAF with B 2), one after the other, each in its own process:
``leafrl train --steps N`` and ``examples/trl/train_builtin.py --steps N`` (``LeafGRPOTrainer`` with
``trl_args``' mapping of the same settings). Both are scored by ``held_out_of`` on the same 300
held-out rows (greedy and 5 sampled passes); the start is the same model, so "before" agrees.

Seconds per step: leafrl's from its logged phases (rollout, reward, advantages, reference, update;
median and mean over steps, its held-out evaluations excluded); TRL's is its training wall time over
the steps (the mean; its generation, no-grad passes and optimizer steps), evaluations excluded too.
Left as each does it: TRL draws its own prompt order, samples with the LoRA in train mode and runs
the audio encoder and the prompt in every forward (leafrl embeds each prompt once per step);
leafrl warm-restarts AdamW per epoch (the built-in's 120 steps are one epoch). Runs on CPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(command: list[str]) -> None:
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=ROOT)


def leafrl_side(out: Path) -> dict:
    """``leafrl train``'s BLEU (summary.json) and seconds per step (metrics.jsonl's phases)."""
    summary = json.loads((out / "summary.json").read_text())
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    seconds = [sum(v for k, v in row.items() if k.startswith("time/")) for row in rows if "time/update" in row]
    return {"greedy": (summary["valid_bleu_before"], summary["valid_bleu_after"]),
            "sampled": (summary["valid_bleu_sampled_before"], summary["valid_bleu_sampled_after"]),
            "median": statistics.median(seconds), "mean": statistics.fmean(seconds)}


def trl_side(out: Path) -> dict:
    """The example's result.json: BLEU and its mean seconds per step."""
    result = json.loads((out / "result.json").read_text())
    return {"greedy": (result["before_bleu"], result["after_bleu"]),
            "sampled": (result["before_bleu_sampled"], result["after_bleu_sampled"]),
            "median": None, "mean": result["seconds_per_step"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--fork-budget", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-trl-speech"))
    args = parser.parse_args()
    out = args.out.resolve()
    algo = "leaf" if args.fork_budget else "grpo"
    budget = ["--set", f"leaf.fork_budget={args.fork_budget}"] if args.fork_budget else []  # 0: leafrl's grpo
    run(["leafrl", "train", "--algo", algo, "--steps", str(args.steps), "--out", str(out / "leafrl"), "--overwrite",
         "--quiet", *budget])
    run([sys.executable, "examples/trl/train_builtin.py", "--steps", str(args.steps), "--fork-budget",
         str(args.fork_budget), "--out", str(out / "trl")])
    sides = {"leafrl train": leafrl_side(out / "leafrl"), "TRL LeafGRPOTrainer": trl_side(out / "trl")}
    print(f"\n{args.steps} RL steps, {algo} (B {args.fork_budget}), built-in recipe, held-out BLEU before -> after")
    print(f"{'':22}{'greedy':>18}{'sampled':>18}{'s/step median':>15}{'s/step mean':>13}")
    for name, side in sides.items():
        median = "-" if side["median"] is None else f"{side['median']:.2f}"
        print(f"{name:22}{side['greedy'][0]:8.2f} -> {side['greedy'][1]:5.2f}"
              f"{side['sampled'][0]:8.2f} -> {side['sampled'][1]:5.2f}{median:>15}{side['mean']:13.2f}")
    trl, leafrl = sides["TRL LeafGRPOTrainer"], sides["leafrl train"]
    print(f"ratio TRL / leafrl (mean s/step): {trl['mean'] / leafrl['mean']:.2f}")


if __name__ == "__main__":
    main()
