"""Encoding a batch from its rows (audio read, features computed, prompts tokenized) against
collating rows kept from an earlier epoch (``leafrl.rollout.batch.EncodedRows``, what
``leafrl sft`` does with ``cache_inputs``).

    python benchmarks/bench_encoded_rows.py [--model DIR] [--rows 640] [--batch 32]

Without --model, the built-in base model's family (the encoding does not depend on the
weights). The rows are the built-in task's training rows (built once if missing).
Prints milliseconds per batch for both and the ratio.
"""

from __future__ import annotations

import argparse
import time

import torch
from rich.console import Console

from leafrl.builtin import base_model, prepare_task
from leafrl.data import load_split
from leafrl.models import load_speech_lm
from leafrl.rollout.batch import EncodedRows, encode_examples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="HF directory (default: the built-in base model)")
    parser.add_argument("--rows", type=int, default=640)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--batches", type=int, default=20)
    args = parser.parse_args()
    train = list(load_split(prepare_task(Console(quiet=True)), "train"))[: args.rows]
    _, family = load_speech_lm(args.model or base_model())
    generator = torch.Generator().manual_seed(0)
    batches = [torch.randperm(len(train), generator=generator)[: args.batch].tolist() for _ in range(args.batches)]
    kept = EncodedRows(family, train)
    kept(list(range(len(train))))  # every row seen once, as after the first epoch

    def per_batch(fn) -> float:
        start = time.perf_counter()
        for batch in batches:
            fn(batch)
        return (time.perf_counter() - start) / len(batches)

    encoding = per_batch(lambda b: encode_examples(family, [train[i] for i in b]))
    collating = per_batch(kept)
    print(f"{args.batch} rows a batch: encoding {encoding * 1e3:.1f} ms, kept rows {collating * 1e3:.1f} ms "
          f"({encoding / collating:.0f}x)")


if __name__ == "__main__":
    main()
