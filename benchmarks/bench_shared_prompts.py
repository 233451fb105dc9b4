"""Shared prompts against repeated rows: the time of the rollout's sampling and of the log-prob
passes (reference: no grad; update: forward + backward) when each prompt runs once and its K
samples share its cache, against the same calls on the prompt rows repeated K times.

    python benchmarks/bench_shared_prompts.py [--model DIR] [--repeats 5]

Without --model, the built-in base model. The prompts are the built-in task's (built once if
missing), embedded as the trainer embeds them; 6 prompts x 8 samples, 32 new tokens
(``leafrl train``'s built-in setting).
Prints seconds per call, the median of --repeats after a warm-up, and the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from rich.console import Console

from leafrl.builtin import base_model, prepare_task
from leafrl.data import load_split
from leafrl.models import EMBEDDED_KEYS, attach_lora, completion_logprobs, embed_prompts, load_speech_lm, slice_rows
from leafrl.rollout.batch import encode_examples
from leafrl.rollout.hf import completion_mask, generate_completions


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="HF directory (default: the built-in base model)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--prompts", type=int, default=6)
    parser.add_argument("--k", type=int, default=8)
    args = parser.parse_args()
    train = list(load_split(prepare_task(Console(quiet=True)), "train"))[: args.prompts]
    model, family = load_speech_lm(args.model or base_model())
    torch.manual_seed(0)
    model = attach_lora(model, rank=16, alpha=32, dropout=0.0)
    model.eval()
    k, n = args.k, args.prompts * args.k
    prompts = embed_prompts(model, encode_examples(family, train))
    of_row = torch.arange(n) // k
    repeated = slice_rows(prompts, of_row, EMBEDDED_KEYS)
    sampling = {"temperature": 1.0, "top_p": 0.9, "max_new_tokens": 32}
    out = generate_completions(model, family, prompts, num_samples=k, **sampling)
    ids, mask = out.ids, out.mask

    def hf_generate():  # transformers' own: every row reads its whole prompt
        with torch.no_grad():
            seq = model.generate(**repeated, **sampling, do_sample=True, top_k=0, pad_token_id=family.pad_token_id,
                                 eos_token_id=family.eos_token_ids, suppress_tokens=family.suppress_token_ids,
                                 return_dict_in_generate=True, output_scores=True).sequences
            completion_mask(seq, family.eos_token_ids)

    def forward_backward(inputs, index):
        model.zero_grad(set_to_none=True)
        completion_logprobs(model, inputs, ids, mask, family.keeps_logits, index).sum().backward()

    def no_grad(fn):
        def run():
            with torch.no_grad():
                fn()
        return run

    cases = {
        "sampling": (hf_generate, lambda: generate_completions(model, family, prompts, num_samples=k, **sampling)),
        "log-probs, no grad": (
            no_grad(lambda: completion_logprobs(model, repeated, ids, mask, family.keeps_logits)),
            no_grad(lambda: completion_logprobs(model, prompts, ids, mask, family.keeps_logits, of_row))),
        "log-probs, fwd+bwd": (lambda: forward_backward(repeated, None), lambda: forward_backward(prompts, of_row)),
    }
    width = prompts["attention_mask"].shape[1]
    print(f"{args.prompts} prompts x {k} samples, prompts {width} tokens wide, completions {ids.shape[1]} "
          f"(mean {mask.sum(1).float().mean():.1f})")
    print(f"{'call':<22}{'repeated s':>12}{'shared s':>10}{'ratio':>8}")
    for name, (baseline, shared) in cases.items():
        a, b = median_seconds(baseline, args.repeats), median_seconds(shared, args.repeats)
        print(f"{name:<22}{a:>12.3f}{b:>10.3f}{a / b:>7.2f}x")


if __name__ == "__main__":
    main()
