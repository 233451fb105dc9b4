"""Rollouts with transformers' ``generate``, batched across prompts.

Notation used for tensor shapes:
    N rows (prompts x samples per prompt), P prompt tokens, T completion tokens.

One call returns everything LEAF needs from the sampling itself, as a ``rollout.record.Rollout``:
completion ids, the mask (real tokens up to and including the first end-of-sequence token) and the
surprisal of each sampled token, so LEAF costs no extra decoding.
"""

from __future__ import annotations

from typing import Any

import torch

from leafrl.models.base import SEQUENCE_KEYS, ModelFamily, prefill_prompts, repeat_rows
from leafrl.rollout.record import Rollout, grouped

SURPRISAL_SOURCES = ("processed", "raw")
RESHAPING = {"repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "encoder_repetition_penalty": 1.0,
             "encoder_no_repeat_ngram_size": 0, "bad_words_ids": None, "forced_bos_token_id": None,
             "forced_eos_token_id": None, "min_length": 0, "min_new_tokens": None, "suppress_tokens": None,
             "begin_suppress_tokens": None, "sequence_bias": None, "typical_p": 1.0, "epsilon_cutoff": 0.0,
             "eta_cutoff": 0.0, "min_p": None, "top_k": None, "top_h": None, "exponential_decay_length_penalty": None,
             "renormalize_logits": False, "guidance_scale": None, "diversity_penalty": 0.0,
             "watermarking_config": None}
"""``generate`` settings that reshape the distribution beyond temperature and top-p, each with
its no-op value (None: unset; rollouts sample with top_k 0). A checkpoint's generation_config
may set them (a repetition penalty, say); the log-prob passes of the loss, the KL and the
surprisal know nothing of them, so rollouts and evaluation turn them all off: the loss then
scores the distribution the responses came from."""


def reshaping_settings(model: Any) -> dict[str, Any]:
    """The ``RESHAPING`` settings that ``model``'s generation_config (from its checkpoint) sets to
    anything but unset or a no-op, {name: value}: the ones rollouts turn off (name them to the user)."""
    config = model.generation_config
    return {name: value for name, off in RESHAPING.items() if (value := getattr(config, name, None)) is not None
            and value != off and not (name == "top_k" and value == 0)}


def completion_mask(ids: torch.Tensor, eos_token_ids: list[int]) -> torch.Tensor:
    """[N, T] True up to and including each row's first end-of-sequence token."""
    ended = torch.isin(ids, torch.tensor(eos_token_ids, device=ids.device))
    return (ended.long().cumsum(1) - ended.long()) == 0


@torch.no_grad()
def generate_completions(model: Any, family: ModelFamily, inputs: dict[str, torch.Tensor], *,
                         max_new_tokens: int, num_samples: int = 1, do_sample: bool = True,
                         temperature: float = 1.0, top_p: float = 1.0,
                         surprisal: str | None = "processed") -> Rollout:
    """Sample ``num_samples`` completions per prompt row of ``inputs``: a family's encode, or
    its ``models.embed_prompts`` (then the audio encoder does not run again). Rows come out
    in place order: prompt i's samples are rows i*num_samples .. i*num_samples+num_samples-1.

    Each prompt is read once (``models.prefill_prompts``) and its cache repeated for its
    samples, so the prompt tokens do not run once per sample. Settings of the checkpoint's
    generation_config that reshape the distribution (``RESHAPING``) are turned off.
    surprisal: "processed" reads -log p from the distribution actually sampled from (after
    temperature and top-p: the LEAF authors' choice), "raw" from the model's own logits,
    None skips it (greedy evaluation).
    """
    if surprisal is not None and surprisal not in SURPRISAL_SOURCES:
        raise ValueError(f"surprisal must be one of {SURPRISAL_SOURCES} or None, got {surprisal!r}")
    # the no-op values override what the checkpoint's generation_config sets (see RESHAPING)
    sampling = {name: off for name, off in RESHAPING.items() if hasattr(model.generation_config, name)}
    sampling |= {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0} if do_sample \
        else {"do_sample": False}
    if family.suppress_token_ids:
        sampling["suppress_tokens"] = family.suppress_token_ids
    group_ids = grouped(num_samples, inputs["attention_mask"].shape[0], inputs["attention_mask"].device)  # [N]
    cache = prefill_prompts(model, inputs, group_ids, family.keeps_logits)
    # with the prompts cached, generate reads only their tokens (the audio is in the cache)
    keys = [k for k in inputs if k in SEQUENCE_KEYS] if cache is not None else list(inputs)
    rows = repeat_rows({k: inputs[k] for k in keys}, num_samples, keys)
    out = model.generate(**rows, past_key_values=cache, **sampling, max_new_tokens=max_new_tokens,
                         pad_token_id=family.pad_token_id, eos_token_id=family.eos_token_ids,
                         return_dict_in_generate=True,
                         output_scores=surprisal == "processed", output_logits=surprisal == "raw")
    # generate returns the prompt ids in front of the completion, or only the completion when
    # it was given embeddings (``models.embed_prompts``)
    ids = out.sequences[:, inputs["input_ids"].shape[1]:] if "input_ids" in inputs else out.sequences  # [N, T]
    mask = completion_mask(ids, family.eos_token_ids)
    ids = ids.masked_fill(~mask, family.pad_token_id)
    if surprisal is None:
        return Rollout(ids, mask, None, group_ids)
    steps = out.scores if surprisal == "processed" else out.logits
    return Rollout(ids, mask, sampled_surprisal(steps, ids).masked_fill(~mask, 0.0), group_ids)


def sampled_surprisal(steps: tuple[torch.Tensor, ...], ids: torch.Tensor, chunk: int = 32) -> torch.Tensor:
    """-log softmax(step_t)[ids_t] -> [N, T] float32, from generate's per-step [N, V] scores.

    Steps are stacked ``chunk`` at a time, so memory stays at [N, chunk, V] for large vocabularies.
    """
    out = []
    for start in range(0, len(steps), chunk):  # a loop over chunks of steps, not tokens
        block = torch.stack(steps[start:start + chunk], 1).float()  # [N, c, V]
        picked = block.gather(2, ids[:, start:start + chunk, None]).squeeze(2)
        out.append(torch.logsumexp(block, -1) - picked)
    return torch.cat(out, 1) if out else ids.new_zeros(ids.shape, dtype=torch.float32)
