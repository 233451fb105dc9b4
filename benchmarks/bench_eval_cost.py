"""What one held-out evaluation costs, greedy only (the evaluations during training) against
greedy with the sampled passes (the start and the end), on a built-in regime.

    python benchmarks/bench_eval_cost.py [--builtin conventions] [--passes 5] [--repeats 3]

Each timing is ``leafrl.trainer.start_evaluation`` (model loading included) after one warm-up.
"""

from __future__ import annotations

import argparse
import statistics
import time

from leafrl.config import TrainConfig, apply_overrides, load_config
from leafrl.trainer import start_evaluation


def timings(cfg: TrainConfig, repeats: int) -> list[float]:
    start_evaluation(cfg)  # warm-up: the task, the model files, the allocator
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        start_evaluation(cfg)
        out.append(time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--builtin", default="conventions", help="the built-in regime")
    parser.add_argument("--passes", type=int, default=5, help="sampled passes beside the greedy one")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cfg = load_config(TrainConfig, recipe=f"builtin-{args.builtin}")
    greedy = timings(apply_overrides(cfg, ["eval.sampled_passes=0"]), args.repeats)
    sampled = timings(apply_overrides(cfg, [f"eval.sampled_passes={args.passes}"]), args.repeats)
    for name, values in (("greedy only", greedy), (f"greedy + {args.passes} sampled", sampled)):
        print(f"{name:>20}: median {statistics.median(values):.2f} s, mean {statistics.fmean(values):.2f} s "
              f"over {args.repeats} ({cfg.eval.examples} rows)")
    print(f"ratio with passes / greedy only (median): {statistics.median(sampled) / statistics.median(greedy):.2f}")


if __name__ == "__main__":
    main()
