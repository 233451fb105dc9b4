"""Per-phase time of one RL step, LEAF beside GRPO, on the same model, data and settings, and the
update phase at the paper's 8 minibatches beside one minibatch of all rows.

    python benchmarks/bench_step.py [--recipe NAME] [--model DIR] [--data DIR] [--steps 4] [--set key=value ...]

The settings are ``leafrl train``'s: the recipe builtin-conventions (the built-in base model on
the built-in task, synthesized once if missing), or with --recipe another one; --model, --data
and --set apply over it. The first step of each run is a warm-up and is not counted.
Prints seconds per phase, LEAF's overhead over GRPO as a share of the step, and the update
phase at ``optim.minibatch`` (default 6: 48 rows make 8 optimizer steps) against one minibatch,
and with the minibatches formed by prompt (``optim.minibatch_order=prompts``).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from rich.console import Console

from leafrl import recipes
from leafrl.config import TrainConfig, apply_overrides, load_config
from leafrl.trainer import setup, train_step


def phase_times(base: TrainConfig, overrides: list[str], steps: int, out: Path) -> dict[str, float]:
    run = setup(apply_overrides(base, [*overrides, f"out={out}", "eval.examples=1"]), Console(quiet=True),
                resume=False)
    rows = [train_step(run, step) for step in range(steps + 1)][1:]  # step 0 warms up
    return {key: sum(r[key] for r in rows) / len(rows) for key in rows[0] if key.startswith("time/")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default=recipes.DEFAULT, help="the recipe to start from")
    parser.add_argument("--model", help="HF directory, hub name or builtin:NAME (default: the recipe's)")
    parser.add_argument("--data", help="data directory or builtin:NAME (default: the recipe's)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per run")
    parser.add_argument("--set", action="append", default=[], help="TrainConfig override, repeatable")
    args = parser.parse_args()
    base = load_config(TrainConfig, recipe=args.recipe, overrides=args.set, model=args.model, data=args.data)
    with tempfile.TemporaryDirectory() as tmp:
        runs = {"leaf": ["algo=leaf"], "grpo": ["algo=grpo"],
                "leaf, 1 minibatch": ["algo=leaf", "optim.minibatch=100000"],
                "leaf, minibatches by prompt": ["algo=leaf", "optim.minibatch_order=prompts"]}
        times = {name: phase_times(base, over, args.steps, Path(tmp) / str(i))
                 for i, (name, over) in enumerate(runs.items())}
    print(f"{'phase':<18}{'leaf s':>10}{'grpo s':>10}")
    for phase in times["leaf"]:
        print(f"{phase.removeprefix('time/'):<18}{times['leaf'][phase]:>10.3f}{times['grpo'][phase]:>10.3f}")
    total = {name: sum(t.values()) for name, t in times.items()}
    print(f"{'step':<18}{total['leaf']:>10.3f}{total['grpo']:>10.3f}")
    extra = times["leaf"]["time/advantages"] - times["grpo"]["time/advantages"]
    print(f"LEAF's advantage computation costs {extra * 1e3:.2f} ms more than GRPO's: "
          f"{100 * extra / total['grpo']:.3f}% of a GRPO step")
    many, one = times["leaf"]["time/update"], times["leaf, 1 minibatch"]["time/update"]
    grouped = times["leaf, minibatches by prompt"]["time/update"]
    print(f"update phase: {many:.3f} s in minibatches (optim.minibatch), {one:.3f} s as one minibatch "
          f"(ratio {many / one:.2f}); whole step {total['leaf']:.3f} s against {total['leaf, 1 minibatch']:.3f} s")
    print(f"update phase with minibatches by prompt (optim.minibatch_order=prompts): {grouped:.3f} s (ratio "
          f"{grouped / one:.2f} to one minibatch, {grouped / many:.2f} to the random order); whole step "
          f"{total['leaf, minibatches by prompt']:.3f} s")


if __name__ == "__main__":
    main()
