"""What the safety checks cost: the start-up check of a split against the model, beside
decoding every clip (what a check that reads the audio would cost), and the SHA-256 that every
checkpoint file gets in its manifest, beside writing the same bytes.

    python benchmarks/bench_preflight.py [--data DIR] [--split train] [--model DIR] [--megabytes 256]

Defaults: the built-in task (``leafrl data demo``) and the built-in base model.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from leafrl.audio.io import load_audio
from leafrl.builtin import base_model, task_dir
from leafrl.checkpoint import sha256_of
from leafrl.data import load_split, split_source
from leafrl.models import context_length, load_speech_lm
from leafrl.preflight import check_rows


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(task_dir()))
    parser.add_argument("--split", default="train")
    parser.add_argument("--model", default=None)
    parser.add_argument("--megabytes", type=int, default=256, help="size of the file hashed")
    args = parser.parse_args()
    rows = list(load_split(args.data, args.split))
    model, family = load_speech_lm(args.model or base_model())
    check = timed(lambda: check_rows(rows, family, context_length(model), 32, split_source(args.data, args.split)))
    decode = timed(lambda: [load_audio(ex.audio, sampling_rate=family.sampling_rate) for ex in rows])
    print(f"{len(rows)} rows of {args.split}: start-up check {check:.2f} s ({check / len(rows) * 1e3:.3f} ms a row); "
          f"decoding every clip {decode:.2f} s; the check is {decode / check:.1f}x cheaper")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "blob"
        data = os.urandom(args.megabytes << 20)
        write = timed(lambda: path.write_bytes(data))
        digest = timed(lambda: sha256_of(path))
    print(f"{args.megabytes} MB checkpoint file: written in {write:.2f} s, SHA-256 in {digest:.2f} s "
          f"({args.megabytes / digest:.0f} MB/s): the manifest adds {digest / write:.2f}x the write time")


if __name__ == "__main__":
    main()
