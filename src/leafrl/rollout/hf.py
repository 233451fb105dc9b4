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
from transformers import (
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
    SuppressTokensLogitsProcessor,
    TemperatureLogitsWarper,
    TopPLogitsWarper,
)

from leafrl.models.base import SEQUENCE_KEYS, ModelFamily, prefill_prompts, repeat_rows
from leafrl.models.logprobs import LastPositionHead
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


def completion_mask(ids: torch.Tensor, eos_token_ids: list[int], stops: torch.Tensor | None = None) -> torch.Tensor:
    """[N, T] True up to and including each row's first end: an end-of-sequence token, or a token
    where ``stops`` [N, T] bool is True (the last token of a stop string)."""
    ended = torch.isin(ids, torch.tensor(eos_token_ids, device=ids.device))
    if stops is not None:
        ended |= stops
    return (ended.long().cumsum(1) - ended.long()) == 0


def stop_strings(model: Any) -> list[str]:
    """The stop strings of the checkpoint's generation config (none: [])."""
    value = getattr(model.generation_config, "stop_strings", None)
    return [value] if isinstance(value, str) else list(value or [])


def stop_string_ends(ids: torch.Tensor, tokenizer: Any, strings: list[str]) -> torch.Tensor:
    """[N, T] bool: True at each token with which a row's text so far ends in one of ``strings``.
    transformers' own ``StopStringCriteria`` (what ``generate`` stops on) is asked at every
    position; a loop over positions, run only for checkpoints that set stop strings."""
    from transformers.generation.stopping_criteria import StopStringCriteria

    criteria = StopStringCriteria(tokenizer, strings)
    if ids.shape[1] == 0:
        return torch.zeros_like(ids, dtype=torch.bool)
    return torch.stack([criteria(ids[:, : j + 1], None) for j in range(ids.shape[1])], 1)


class SampledSurprisal(LogitsProcessor):
    """-log softmax(scores)[sampled token] of each ``generate`` step -> ``surprisal`` [N, T] float32,
    read from the scores this logits processor is handed (its place in the processor list decides
    which: first, the model's own logits; last, the distribution sampled from; it returns them
    unchanged). The token is sampled after the processors run: ``read``, a stopping criterion that
    ``generate`` calls with it in the same step, reads its score and lets the scores go. So no
    [N, V] tensor outlives its step (generate's ``output_scores`` keeps all T of them).
    ``temperature``: the scores are divided by it first, for a processor that runs before the
    temperature warper generate builds itself from its generation config (TRL's generation).
    """

    def __init__(self, max_new_tokens: int, temperature: float = 1.0) -> None:
        self.max_new_tokens, self.temperature = max_new_tokens, temperature
        self.surprisal: torch.Tensor | None = None  # [N, max_new_tokens], filled step by step
        self.steps = 0
        self.pending: tuple[torch.Tensor, torch.Tensor] | None = None  # this step's scores [N, V], lse [N]
        self.read = _ReadSampled(self)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        scaled = scores.float() if self.temperature == 1.0 else scores.float() / self.temperature
        self.pending = (scaled, torch.logsumexp(scaled, -1))
        return scores

    def sampled(self, ids: torch.Tensor) -> None:
        """The tokens [N] sampled from the pending scores."""
        scores, lse = self.pending
        self.pending = None
        if self.surprisal is None:
            self.surprisal = lse.new_zeros(len(ids), self.max_new_tokens)
        if self.steps < self.max_new_tokens:  # a step generate undoes (a deferred stop) is not kept
            self.surprisal[:, self.steps] = lse - scores.float().gather(1, ids[:, None]).squeeze(1)
        self.steps += 1

    def finish(self, ids: torch.Tensor) -> torch.Tensor:
        """The surprisal [N, T] float32 of the completion ``ids`` [N, T] that ``generate`` returned."""
        n, t = ids.shape
        if t > min(self.steps, self.max_new_tokens):
            raise RuntimeError(f"generate returned {t} tokens but sampled {self.steps}")
        return self.surprisal[:, :t] if t else ids.new_zeros((n, 0), dtype=torch.float32)


class _ReadSampled(StoppingCriteria):
    """Hands each step's sampled tokens to a ``SampledSurprisal``; never stops anything."""

    def __init__(self, recorder: SampledSurprisal) -> None:
        self.recorder = recorder

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        self.recorder.sampled(input_ids[:, -1])
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


class Nucleus(LogitsProcessor):
    """Top-p filtering as transformers' ``TopPLogitsWarper`` does it, without sorting the whole
    vocabulary where that is not needed: a row whose ``k`` most likely tokens hold at least
    ``top_p`` of the probability has its whole nucleus among them (every other token has at least
    that much probability ranked above it), so only those k are sorted; a row where they hold less
    (a flat distribution) goes to ``TopPLogitsWarper`` itself. The kept tokens are the warper's,
    but for a token whose cumulative probability is within float rounding of the threshold (the
    sums run in another order). A trained model's nucleus is a few hundred tokens: at a 50k
    vocabulary the warper's sort of [N, V] every step was most of what ``generate`` adds to the
    forwards (``benchmarks/bench_rollout.py``).

    Shapes: scores [N, V]; V <= k goes to the warper whole."""

    def __init__(self, top_p: float, k: int = 1024) -> None:
        self.top_p, self.k = top_p, k
        self.whole = TopPLogitsWarper(top_p=top_p, min_tokens_to_keep=1)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        if scores.shape[-1] <= self.k:
            return self.whole(input_ids, scores)
        top, index = scores.float().softmax(-1).topk(self.k, dim=-1)  # [N, k], most likely first
        keep = (top.cumsum(-1) - top) < self.top_p  # the probability ranked above each is under top_p
        keep[:, 0] = True
        drop = torch.ones_like(scores, dtype=torch.bool).scatter(1, index, ~keep)
        out = scores.masked_fill(drop, -float("inf"))
        flat = top.sum(-1) < self.top_p  # [N]: the nucleus reaches past the k
        if flat.any():
            out[flat] = self.whole(input_ids[flat], scores[flat])
        return out


def sampling_processors(family: ModelFamily, do_sample: bool, temperature: float, top_p: float,
                        surprisal: str | None, max_new_tokens: int, device: torch.device | str = "cpu",
                        ) -> tuple[list[LogitsProcessor], SampledSurprisal | None]:
    """The logits processors of a rollout's ``generate``, in transformers' own order (token
    suppression, then temperature and top-p when sampling), with a ``SampledSurprisal`` first
    ("raw") or last ("processed"). transformers runs processors given to ``generate`` before the
    temperature and top-p it builds itself, so these build them: ``generate`` must then be given
    temperature 1, top_p 1 and no suppress_tokens."""
    chain: list[LogitsProcessor] = []
    if family.suppress_token_ids:
        chain.append(SuppressTokensLogitsProcessor(family.suppress_token_ids, device=device))
    if do_sample and temperature is not None and temperature != 1.0:
        chain.append(TemperatureLogitsWarper(float(temperature)))
    if do_sample and top_p is not None and top_p < 1.0:
        chain.append(Nucleus(top_p))
    recorder = SampledSurprisal(max_new_tokens) if surprisal is not None else None
    if recorder is not None:
        chain = [recorder, *chain] if surprisal == "raw" else [*chain, recorder]
    return chain, recorder


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
    generation_config that reshape the distribution (``RESHAPING``) are turned off; its eos list
    and stop strings end responses (a response ends with the token that completes a stop string).
    surprisal: "processed" reads -log p from the distribution actually sampled from (after
    temperature and top-p: the LEAF authors' choice), "raw" from the model's own logits,
    None skips it (greedy evaluation). It is read as each token is sampled (``SampledSurprisal``):
    no step's [N, V] scores outlive the step.
    """
    if surprisal is not None and surprisal not in SURPRISAL_SOURCES:
        raise ValueError(f"surprisal must be one of {SURPRISAL_SOURCES} or None, got {surprisal!r}")
    # the no-op values override what the checkpoint's generation_config sets (see RESHAPING);
    # temperature, top-p and the suppressed tokens are the processors' (sampling_processors)
    sampling = {name: off for name, off in RESHAPING.items() if hasattr(model.generation_config, name)}
    sampling |= {"do_sample": True, "temperature": 1.0, "top_p": 1.0, "top_k": 0} if do_sample \
        else {"do_sample": False}
    strings = stop_strings(model)  # the checkpoint's; generate needs the tokenizer to find them
    if strings:
        sampling |= {"stop_strings": strings, "tokenizer": family.tokenizer}
    device = inputs["attention_mask"].device
    processors, recorder = sampling_processors(family, do_sample, temperature, top_p, surprisal, max_new_tokens,
                                               device)
    group_ids = grouped(num_samples, inputs["attention_mask"].shape[0], device)  # [N]
    with LastPositionHead(model):  # the prompts' logits are not needed
        cache = prefill_prompts(model, inputs, group_ids, family.keeps_logits)
    # with the prompts cached, generate reads only their tokens (the audio is in the cache)
    keys = [k for k in inputs if k in SEQUENCE_KEYS] if cache is not None else list(inputs)
    rows = repeat_rows({k: inputs[k] for k in keys}, num_samples, keys)
    sequences = model.generate(**rows, past_key_values=cache, **sampling, max_new_tokens=max_new_tokens,
                               logits_processor=LogitsProcessorList(processors),
                               stopping_criteria=StoppingCriteriaList([recorder.read] if recorder else []),
                               pad_token_id=family.pad_token_id, eos_token_id=family.eos_token_ids,
                               return_dict_in_generate=True).sequences
    # generate returns the prompt ids in front of the completion, or only the completion when
    # it was given embeddings (``models.embed_prompts``)
    ids = sequences[:, inputs["input_ids"].shape[1]:] if "input_ids" in inputs else sequences  # [N, T]
    stops = stop_string_ends(ids, family.tokenizer, strings) if strings else None
    mask = completion_mask(ids, family.eos_token_ids, stops)
    ids = ids.masked_fill(~mask, family.pad_token_id)
    if recorder is None:
        return Rollout(ids, mask, None, group_ids)
    return Rollout(ids, mask, recorder.finish(ids).masked_fill(~mask, 0.0), group_ids)
