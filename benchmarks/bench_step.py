"""Per-phase time of one RL step, LEAF beside GRPO, on the same model, data and settings.

    python benchmarks/bench_step.py --model runs/sft/model [--data DIR] [--steps 4]
    python benchmarks/bench_step.py --set rollout.max_new_tokens=48 --set optim.micro_batch=48

Without --model, a fresh built-in tiny SALLM (random weights: responses run to the token limit,
an upper bound on generation time) is built in a temporary directory. Without --data, the
built-in task is used (built once if missing) with the settings ``leafrl train`` uses on it
(``leafrl.config.BUILTIN_TRAIN``); with --data, the paper's. The first step is a warm-up and
is not counted.
Prints seconds per phase and LEAF's overhead over GRPO as a share of the step.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from rich.console import Console

from leafrl.config import BUILTIN_TRAIN, TrainConfig, apply_overrides
from leafrl.trainer import setup, train_step


def fresh_tiny_model(directory: Path, data: str | None) -> str:
    from leafrl.data import load_split
    from leafrl.models.tiny import new_tiny_sallm
    from leafrl.sft import resolve_data

    train = list(load_split(resolve_data(data, Console(quiet=True)), "train"))
    model, adapter = new_tiny_sallm([t for ex in train for t in (ex.prompt, ex.reference)])
    adapter.save(model, str(directory))
    return str(directory)


def phase_times(algo: str, model: str, args: argparse.Namespace, out: Path) -> dict[str, float]:
    builtin = [] if args.data else BUILTIN_TRAIN
    overrides = [*builtin, f"algo={algo}", f"model={model}", f"out={out / algo}", "eval_examples=1", *args.set]
    if args.data:
        overrides.append(f"data={args.data}")
    run = setup(apply_overrides(TrainConfig(), overrides), Console(quiet=True), resume=False)
    rows = [train_step(run, step) for step in range(args.steps + 1)][1:]  # step 0 warms up
    return {key: sum(r[key] for r in rows) / len(rows) for key in rows[0] if key.startswith("time/")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="HF directory or hub name (default: a fresh tiny SALLM)")
    parser.add_argument("--data", help="data directory (default: the built-in task)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per algorithm")
    parser.add_argument("--set", action="append", default=[], help="TrainConfig override, repeatable")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        model = args.model or fresh_tiny_model(out / "model", args.data)
        times = {algo: phase_times(algo, model, args, out) for algo in ("leaf", "grpo")}
    phases = list(times["leaf"])
    print(f"{'phase':<18}{'leaf s':>10}{'grpo s':>10}")
    for phase in phases:
        print(f"{phase.removeprefix('time/'):<18}{times['leaf'][phase]:>10.3f}{times['grpo'][phase]:>10.3f}")
    total = {algo: sum(t.values()) for algo, t in times.items()}
    print(f"{'step':<18}{total['leaf']:>10.3f}{total['grpo']:>10.3f}")
    extra = times["leaf"]["time/advantages"] - times["grpo"]["time/advantages"]
    print(f"LEAF's advantage computation costs {extra * 1e3:.2f} ms more than GRPO's: "
          f"{100 * extra / total['grpo']:.3f}% of a GRPO step")


if __name__ == "__main__":
    main()
