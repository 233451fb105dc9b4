"""Peak memory at Qwen2-Audio's vocabulary (V = 151,936) of the two calls that once held
vocabulary-sized tensors for every token: the update's log-probs (``completion_logprobs``:
forward and backward of a 6 x 200 minibatch, LoRA) and a rollout's surprisal
(``generate_completions``: 48 rows x 200 new tokens, "processed" surprisal), the old way
(full [N, T, V] float32 logits; every step's [N, V] scores kept by ``generate``; both kept in
tests/reference_logprobs.py) against the current one.

    python benchmarks/bench_vocab_memory.py [--quick] [--rows-update 6] [--rows-rollout 48] [--tokens 200]

The model is a tiny random-config Qwen2 text model (hidden 64, 2 layers) with the full vocabulary,
so the vocabulary-sized tensors dominate as they do in the real model's log-prob passes. Each
variant runs in a fresh subprocess (2 threads) and reports its peak RSS (``ru_maxrss``) less the
RSS after the model is loaded and a small warm-up call has run: the memory the call itself takes.
glibc's malloc raises its mmap threshold as large blocks are freed and then serves them from a
heap that fragments, so RSS stays above what is live; the subprocesses run with
MALLOC_MMAP_THRESHOLD_=65536 (large blocks are mapped and returned, as a GPU's caching allocator
reuses them), --glibc-default runs them without it.
No end-of-sequence token can be sampled (it is suppressed), so every row has all its tokens.
Prints the peaks, the ratio old / new, the seconds per call, and the largest difference between
the old and new numbers (log-probs, LoRA gradients, surprisal; the sampled ids must be equal).
--quick: 50 new tokens instead of 200.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from reference_logprobs import reference_logprobs, reference_rollout  # noqa: E402  (the old way)

VOCAB = 151_936
EOS = 1  # suppressed: every row generates all its tokens


def rss_bytes() -> int:
    """The resident set size now."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: kibibytes


def tiny_model():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024)
    return Qwen2ForCausalLM(config).eval()


def prompts(n: int, width: int = 40) -> dict[str, torch.Tensor]:
    """n left-padded prompts of 24 to ``width`` tokens."""
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(2, VOCAB, (n, width), generator=generator)
    lengths = torch.linspace(24, width, n).long()
    attention = (torch.arange(width)[None] >= width - lengths[:, None]).long()
    return {"input_ids": ids.masked_fill(attention == 0, 0), "attention_mask": attention}


def update(way: str, rows: int, tokens: int) -> tuple[dict, callable]:
    from leafrl.models import attach_lora, completion_logprobs

    model = attach_lora(tiny_model(), rank=16, alpha=32, dropout=0.0)
    for p in model.parameters():  # LoRA B starts at 0: give it weight, so the gradients have a path
        if p.requires_grad:
            p.data.normal_(0, 0.02)
    fn = reference_logprobs if way == "old" else completion_logprobs
    lora = [p for p in model.parameters() if p.requires_grad]

    def call(n: int, t: int) -> dict:
        generator = torch.Generator().manual_seed(2)
        ids = torch.randint(2, VOCAB, (n, t), generator=generator)
        mask = torch.ones(n, t, dtype=torch.bool)
        logp = fn(model, prompts(n), ids, mask, True)
        grads = torch.autograd.grad(logp.sum(), lora)
        return {"logp": logp.detach(), "grads": [g.detach() for g in grads]}

    return call


def rollout(way: str, rows: int, tokens: int):
    from leafrl.rollout.hf import generate_completions

    model = tiny_model()
    family = SimpleNamespace(suppress_token_ids=[EOS], eos_token_ids=[EOS], pad_token_id=0, keeps_logits=True)
    fn = reference_rollout if way == "old" else generate_completions
    k = 8

    def call(n: int, t: int) -> dict:
        torch.manual_seed(3)
        out = fn(model, family, prompts(max(1, n // k)), max_new_tokens=t, num_samples=k, temperature=1.0,
                 top_p=0.9)
        return {"ids": out.ids, "surprisal": out.surprisal}

    return call


def worker(phase: str, way: str, rows: int, tokens: int, out: str) -> None:
    torch.set_num_threads(2)
    call = {"update": update, "rollout": rollout}[phase](way, rows, tokens)
    call(8 if phase == "rollout" else 2, 4)  # warm-up: small, but every kernel and lazy buffer once
    base = rss_bytes()
    start = time.perf_counter()
    result = call(rows, tokens)
    seconds = time.perf_counter() - start
    peak = peak_bytes() - base
    torch.save(result, out)
    print(json.dumps({"peak": peak, "seconds": seconds}))


def run(phase: str, way: str, rows: int, tokens: int, folder: Path, glibc_default: bool) -> tuple[dict, dict]:
    out = folder / f"{phase}-{way}.pt"
    env = dict(os.environ) | ({} if glibc_default else {"MALLOC_MMAP_THRESHOLD_": "65536"})
    done = subprocess.run([sys.executable, __file__, "--worker", phase, way, "--rows", str(rows), "--tokens",
                           str(tokens), "--out", str(out)], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{phase} ({way}) failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1]), torch.load(out)


def largest_difference(old: dict, new: dict) -> str:
    if "ids" in old:
        if not torch.equal(old["ids"], new["ids"]):
            return "sampled ids differ"
        return f"ids equal, surprisal {float((old['surprisal'] - new['surprisal']).abs().max()):.1e}"
    grads = max(float((a - b).abs().max()) for a, b in zip(old["grads"], new["grads"], strict=True))
    return f"log-probs {float((old['logp'] - new['logp']).abs().max()):.1e}, LoRA grads {grads:.1e}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="50 new tokens instead of 200")
    parser.add_argument("--rows-update", type=int, default=6)
    parser.add_argument("--rows-rollout", type=int, default=48)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--glibc-default", action="store_true", help="malloc's own mmap threshold (see above)")
    parser.add_argument("--worker", nargs=2, metavar=("PHASE", "WAY"), help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker, args.rows, args.tokens, args.out)
        return
    import transformers

    tokens = 50 if args.quick else args.tokens
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, 2 threads, V = {VOCAB:,}, "
          f"{tokens} completion tokens; peak RSS less the RSS after load, each in a fresh process"
          f"{', glibc malloc as configured' if args.glibc_default else ', MALLOC_MMAP_THRESHOLD_=65536'}")
    print(f"{'call':<32}{'old MB':>10}{'new MB':>10}{'ratio':>8}{'old s':>8}{'new s':>8}  old vs new")
    with tempfile.TemporaryDirectory() as tmp:
        for phase, rows, what in (("update", args.rows_update, "log-probs fwd+bwd"),
                                  ("rollout", args.rows_rollout, "rollout + surprisal")):
            (old, old_out), (new, new_out) = (run(phase, way, rows, tokens, Path(tmp), args.glibc_default)
                                            for way in ("old", "new"))
            name = f"{what} {rows} x {tokens}"
            print(f"{name:<32}{old['peak'] / 2**20:>10.0f}{new['peak'] / 2**20:>10.0f}"
                  f"{old['peak'] / max(new['peak'], 1):>7.1f}x{old['seconds']:>8.1f}{new['seconds']:>8.1f}  "
                  f"{largest_difference(old_out, new_out)}")


if __name__ == "__main__":
    main()
