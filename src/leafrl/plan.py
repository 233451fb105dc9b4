"""``leafrl plan``: the memory a training run needs per process, before it is launched.

The model is built from its config on the meta device (no weights are read), so the parameter
counts are exact; the rest is arithmetic on the text model's dimensions:

    weights      parameters x bytes of model_dtype (the LoRA in float32)
    optimizer    LoRA gradients and AdamW's two moments, float32: 12 bytes a trainable parameter
    rollout      one generate call of prompts_per_step x K rows: the KV cache of prompt and
                 response, and one step's float32 scores [N, V] read for the surprisal
    update       one micro-batch's activations saved for the backward (the hidden states the
                 output head reads included), and one chunk of logits with its gradient (the
                 log-probs are computed ``LOGITS_PER_CHUNK`` logits at a time)

Activations per token and decoder layer, in bytes (b: bytes of model_dtype; h hidden, f FFN,
kv the key/value width, r the LoRA rank), measured on transformers' decoders by
``saved_tensors_hooks`` (tests/test_plan.py checks this estimate against that measurement):

    b (8h + 4f + kv) + 28r              (7 LoRA projections keep their rank-r output, float32)
    + 4 (6h + f) when b < 4              (peft casts each LoRA input to float32)
    with gradient_checkpointing: b h (and 4h for the final norm, which keeps its input in float32),
    plus one layer's full activations during its recompute

Tokens with activations: a micro-batch of m rows shares its ceil(m / K) + 1 prompts (P tokens)
and adds T tokens a row; checkpointed, every row reads its prompt whole: m (P + T). So
checkpointing pays on deep models; with long shared prompts and few layers it can cost more.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch

from leafrl.errors import UserError
from leafrl.models.logprobs import LOGITS_PER_CHUNK

GIB = 2**30
OVERHEAD = 1 * GIB
"""The CUDA context, allocator slack and kernels' workspace, added to every GPU total."""


@dataclass(frozen=True)
class Dimensions:
    """What the plan reads from a model: parameter counts and the text model's sizes."""

    parameters: int
    trainable: int
    layers: int
    hidden: int
    ffn: int
    kv: int  # key/value heads x head dim
    vocab: int
    context: int | None


@dataclass(frozen=True)
class Plan:
    """Bytes per process by component; ``peak`` = weights + optimizer + the larger of rollout and
    update. ``micro_batch`` is the one planned."""

    weights: int
    optimizer: int
    rollout: int
    update: int
    peak: int
    micro_batch: int

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def dimensions(model_name: str, rank: int, alpha: int) -> Dimensions:
    """Exact parameter counts of ``model_name`` with the run's LoRA, built on the meta device."""
    import transformers

    from leafrl.models import attach_lora, model_config

    config = model_config(model_name)
    architecture = (config.architectures or [None])[0]
    if architecture is None or not hasattr(transformers, architecture):
        raise UserError(f"model {model_name}: its config.json names no transformers architecture "
                         f"({config.architectures!r}), so leafrl cannot build it to count its parameters")
    with torch.device("meta"):
        model = getattr(transformers, architecture)._from_config(config)
        model = attach_lora(model, rank=rank, alpha=alpha, dropout=0.0)
    text = config.get_text_config()
    heads = text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    return Dimensions(parameters=sum(p.numel() for p in model.parameters() if not p.requires_grad),
                      trainable=sum(p.numel() for p in model.parameters() if p.requires_grad),
                      layers=text.num_hidden_layers, hidden=text.hidden_size, ffn=text.intermediate_size,
                      kv=getattr(text, "num_key_value_heads", heads) * head_dim, vocab=text.vocab_size,
                      context=getattr(text, "max_position_embeddings", None))


def layer_bytes(d: Dimensions, dtype_bytes: int, rank: int) -> int:
    """Activations one decoder layer keeps for the backward, per token (module docstring)."""
    own = dtype_bytes * (8 * d.hidden + 4 * d.ffn + d.kv) + 4 * 7 * rank
    return own + (4 * (6 * d.hidden + d.ffn) if dtype_bytes < 4 else 0)


def saved_bytes(d: Dimensions, dtype_bytes: int, rank: int, rows: int, k: int, prompt: int, response: int,
                checkpointing: bool) -> int:
    """Tensors one micro-batch of ``rows`` keeps for its backward: the decoder layers' activations
    (``layer_bytes``) and the hidden states [rows, T, D] the output head reads (its logits are
    recomputed chunk by chunk in the backward: ``completion_logprobs``). Rows ``k`` at a time share
    a prompt."""
    logits = rows * response * d.hidden * dtype_bytes
    if checkpointing:  # each layer keeps its input (and the final norm its); one layer at a time holds all
        tokens = rows * (prompt + response)
        norm = 4  # the final norm keeps its input in float32, whatever the model's dtype
        return (tokens * d.hidden * (dtype_bytes * d.layers + norm) + tokens * layer_bytes(d, dtype_bytes, rank)
                + logits)
    tokens = min(rows, math.ceil(rows / k) + 1) * prompt + rows * response
    return tokens * layer_bytes(d, dtype_bytes, rank) * d.layers + logits


def rollout_bytes(d: Dimensions, dtype_bytes: int, rows: int, prompt: int, response: int) -> int:
    """One generate call of ``rows``: KV cache of prompt and response, and one step's scores with
    their log-softmax for the surprisal (float32 [rows, V] twice; no step keeps its scores)."""
    cache = 2 * d.layers * d.kv * (prompt + response) * rows * dtype_bytes
    return cache + 2 * 4 * rows * d.vocab


def plan(d: Dimensions, cfg: Any, dtype_bytes: int, prompt: int, micro_batch: int | None = None) -> Plan:
    """The memory of a TrainConfig ``cfg`` run on a model of dimensions ``d`` whose prompts are
    ``prompt`` tokens (the longest), per process, at ``micro_batch`` (default cfg's)."""
    r, o = cfg.rollout, cfg.optim
    m = micro_batch or o.micro_batch
    m = min(m, o.minibatch, r.prompts_per_step * r.rollout_budget)  # rows a forward pass can hold
    weights = d.parameters * dtype_bytes + d.trainable * 4
    optimizer = 12 * d.trainable
    rollout = rollout_bytes(d, dtype_bytes, r.prompts_per_step * r.rollout_budget, prompt, r.max_new_tokens)
    update = saved_bytes(d, dtype_bytes, cfg.lora.rank, m, r.rollout_budget, prompt, r.max_new_tokens,
                         cfg.gradient_checkpointing) + 3 * 4 * min(m * r.max_new_tokens * d.vocab, LOGITS_PER_CHUNK)
    # one chunk's logits at a time, with their softmax and gradient (``completion_logprobs``)
    return Plan(weights, optimizer, rollout, update, weights + optimizer + max(rollout, update), m)


def largest_micro_batch(d: Dimensions, cfg: Any, dtype_bytes: int, prompt: int, budget: int) -> int | None:
    """The largest micro-batch whose peak, with ``OVERHEAD``, fits in ``budget`` bytes (None: not even 1)."""
    top = min(cfg.optim.minibatch, cfg.rollout.prompts_per_step * cfg.rollout.rollout_budget)
    fits = [m for m in range(1, top + 1) if plan(d, cfg, dtype_bytes, prompt, m).peak + OVERHEAD <= budget]
    return max(fits) if fits else None


@dataclass(frozen=True)
class PlanReport:
    """What ``leafrl plan`` shows: the model's dimensions, the plan at the config's settings, the
    longest prompt it assumed and where that number comes from (``prompt_length``), and, for a GPU
    of ``gpu_memory`` GiB, the largest micro-batch that fits without and with gradient
    checkpointing (None: not even 1)."""

    model: str
    dtype: str
    dimensions: Dimensions
    plan: Plan
    prompt_tokens: int
    prompt_source: str
    """Where ``prompt_tokens`` comes from: given, measured on the data, or the context window."""
    gpu_memory: float | None
    fits: dict[bool, int | None]
    """{gradient_checkpointing: the largest micro_batch}, with a gpu_memory."""


def prompt_length(cfg: Any, d: Dimensions, given: int | None, measure: bool) -> tuple[int, str]:
    """(the longest prompt in tokens, where that number comes from): ``given`` (--prompt-tokens);
    else, when ``measure``, the longest prompt of the train split of ``cfg.data`` (loads the
    model's processor); else, or when those rows do not fit the model, the longest prompt the run
    could take: the model's context window minus ``rollout.max_new_tokens``."""
    if given is not None:
        return given, "given with --prompt-tokens"
    why = "no --data given; pass --data or --prompt-tokens to measure"
    if measure:
        from leafrl.data import DataError, load_split
        from leafrl.models import load_speech_lm
        from leafrl.preflight import longest_prompt

        rows = list(load_split(cfg.data, "train"))
        try:
            return (longest_prompt(rows, load_speech_lm(cfg.model)[1], cfg.system),
                    f"the longest of {cfg.data}'s train split, measured")
        except DataError as err:
            if d.context is None:
                raise
            count = str(err).splitlines()[0].removeprefix("the rows: ").removesuffix("; fix or drop them:")
            why = (f"in {cfg.data}'s train split {count} by this model, as `leafrl train` would say; pass "
                   "--prompt-tokens to plan for other prompts")
    new = cfg.rollout.max_new_tokens
    if d.context is None:
        raise UserError(f"model {cfg.model}: its config gives no context window (max_position_embeddings) to plan "
                        f"the prompts from; pass --prompt-tokens N (the longest prompt) or --data to measure them")
    if d.context <= new:
        raise UserError(f"rollout.max_new_tokens {new}: leaves no room for a prompt in the model's context window "
                        f"of {d.context} tokens; lower it")
    return d.context - new, f"the model's context window {d.context} minus rollout.max_new_tokens {new} ({why})"


def plan_report(cfg: Any, prompt_tokens: int | None, gpu_memory: float | None, *, measure: bool = True) -> PlanReport:
    """``leafrl plan`` on a TrainConfig ``cfg``: ``prompt_tokens`` is the longest prompt (None:
    ``prompt_length`` finds it, measuring ``cfg.data`` when ``measure``)."""
    import dataclasses

    from leafrl.models import resolve_dtype

    dtype = resolve_dtype(cfg.model_dtype)
    d = dimensions(cfg.model, cfg.lora.rank, cfg.lora.alpha)
    prompt_tokens, source = prompt_length(cfg, d, prompt_tokens, measure)
    fits = {} if gpu_memory is None else {
        checkpointing: largest_micro_batch(d, dataclasses.replace(cfg, gradient_checkpointing=checkpointing),
                                           dtype.itemsize, prompt_tokens, int(gpu_memory * GIB))
        for checkpointing in (False, True)}
    return PlanReport(cfg.model, str(dtype).removeprefix("torch."), d, plan(d, cfg, dtype.itemsize, prompt_tokens),
                      prompt_tokens, source, gpu_memory, fits)
