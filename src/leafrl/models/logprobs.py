"""Log-probabilities of given completions under a model, for every family: the one function
leafrl's rollouts, updates and evaluations (and its TRL trainer on speech models) score
responses with. Memory O(N T D): the model computes the logits of its last position only and
the completion's come from its output head a chunk at a time.

Shapes: N rows, P prompt tokens (left-padded), T completion tokens (right-padded), V vocab.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.checkpoint import checkpoint

from leafrl.models.base import SEQUENCE_KEYS, generation_positions, prefill_prompts


def checkpointed(model: Any) -> bool:
    """Whether a forward of ``model`` now runs activation-checkpointed layers (training mode with
    ``gradient_checkpointing_enable``): transformers then drops any cache those layers are given."""
    return model.training and any(getattr(m, "gradient_checkpointing", False) for m in model.modules())


LOGITS_PER_CHUNK = 1 << 24
"""Logits ``completion_logprobs`` computes at once (110 positions at V = 152k). In float32 a chunk
is 64 MiB, over glibc's largest mmap threshold (32 MiB): on CPU it goes back to the system when freed."""


class LastPositionHead:
    """While open (``with``), the model's output head (``get_output_embeddings``) is handed only
    the last position of the hidden states it receives, so a forward computes logits [N, 1, V]
    whatever its length; ``hidden`` keeps what the head received last ([N, L, D])."""

    def __init__(self, model: Any):
        self.head = getattr(model, "module", model).get_output_embeddings()  # DDP keeps the model in .module
        if self.head is None:
            raise RuntimeError(f"{type(model).__name__}: get_output_embeddings() is None (no output head)")
        self.hidden: torch.Tensor | None = None

    def _keep_last(self, module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        hidden = args[0] if args else kwargs["input"]
        self.hidden = hidden
        if hidden.dim() != 3:  # not [N, L, D]: left whole (completion_logprobs then refuses it)
            return args, kwargs
        return ((hidden[:, -1:], *args[1:]), kwargs) if args else (args, kwargs | {"input": hidden[:, -1:]})

    def __enter__(self) -> LastPositionHead:
        self.hidden = None
        self.handle = self.head.register_forward_pre_hook(self._keep_last, with_kwargs=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.remove()


def _head_transforms(model: Any) -> list[tuple[str, Any]]:
    """What a family may do to its head's output, as (name, fn): what its text config says
    (Granite: / logits_scaling; Cohere: * logit_scale; Gemma 2 on: final_logit_softcapping), then nothing."""
    text = getattr(model, "module", model).config.get_text_config()
    scaling, scale, cap = (getattr(text, k, None) for k in ("logits_scaling", "logit_scale", "final_logit_softcapping"))

    def configured(x: torch.Tensor) -> torch.Tensor:  # in the order of the families' own forwards
        x = x / scaling if isinstance(scaling, (int, float)) and scaling != 1 else x
        x = x * scale if isinstance(scale, (int, float)) and scale != 1 else x
        return torch.tanh(x / cap) * cap if isinstance(cap, (int, float)) and cap else x

    return [(f"logits_scaling {scaling}, logit_scale {scale}, final_logit_softcapping {cap}", configured),
            ("the head's output as is", lambda x: x)]


@torch.no_grad()
def _head_transform(model: Any, head: Any, hidden: torch.Tensor, logits: torch.Tensor) -> Any:
    """The function of the head's output that gives the model's logits, checked where the model
    computed them: ``hidden`` [N, D] (the head's input), ``logits`` [N, V] (the model's output).
    The text config proposes; the model's own logits decide (transformers 5's Granite Speech, for
    one, returns its head's output without its text config's logits_scaling). RuntimeError naming
    the model class when no candidate fits: no silent wrong log-probs on an unknown family."""
    candidates, want = _head_transforms(model), logits.float()
    if want.numel() == 0:  # no rows: nothing to check, nothing to compute
        return candidates[0][1]
    scale = max(1.0, float(want.nan_to_num(0, 0, 0).abs().max()))  # infinities (masked tokens) must match
    tolerance = (1e-4 if logits.dtype == torch.float32 else 1e-2) * scale
    out = head(hidden)
    for _, fn in candidates:
        if torch.isclose(fn(out).float(), want, rtol=0, atol=tolerance).all():
            return fn
    raise RuntimeError(f"{type(model).__name__}: its logits are not its output head's ({type(head).__name__}) "
                       f"output under any transformation leafrl knows (tried: "
                       f"{'; '.join(name for name, _ in candidates)}); leafrl cannot compute its log-probs")


def _token_logprobs(head: Any, transform: Any, temperature: float, hidden: torch.Tensor,
                    ids: torch.Tensor, entropy: bool = False) -> torch.Tensor:
    """log softmax(transform(head(hidden)) / temperature)[ids] -> [C] float32; with ``entropy``
    [C, 2]: the log-prob and the entropy of that distribution. hidden [C, D], ids [C]."""
    logits = transform(head(hidden)).float()  # [C, V]
    if temperature != 1.0:
        logits = logits / temperature
    norm = torch.logsumexp(logits, dim=-1)
    logp = logits.gather(1, ids[:, None]).squeeze(1) - norm
    return torch.stack([logp, norm - (logits.softmax(-1) * logits).sum(-1)], 1) if entropy else logp


def completion_logprobs(model: Any, inputs: dict[str, torch.Tensor], completion_ids: torch.Tensor,
                        completion_mask: torch.Tensor, keeps_logits: bool,
                        prompt_of_row: torch.Tensor | None = None, temperature: float = 1.0,
                        entropy: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Log-probabilities of given completions under ``model`` -> [N, T] float32 (0 on padding);
    with ``entropy``, (log-probs, entropies) [N, T] each: the entropy of the distribution each
    token was drawn from (as TRL logs and regularizes it).

    Shapes: inputs: G left-padded prompts, as a family's ``encode`` makes them
    (["input_ids"] / ["attention_mask"] [G, P] plus the family's audio keys) or as
    ``embed_prompts`` does (["inputs_embeds"] [G, P, D], ["attention_mask"]);
    completion_ids [N, T] int, completion_mask [N, T] bool; prompt_of_row [N] long in [0, G):
    the prompt that row i continues (default: prompt i, G == N). Logits are never held for all
    N x T positions at once: the model's forward computes them for its last position only, and
    the log-probs of the masked positions come from its output head ``LOGITS_PER_CHUNK`` logits at
    a time (under grad, each recomputed in the backward): memory O(N T D), not O(N T V).
    Each prompt runs once however many rows continue it (``prefill_prompts``); then the rows
    run their last prompt token and completion. Under activation checkpointing (``checkpointed``)
    each row runs its prompt and completion whole instead: the same log-probs and gradients.
    Whatever the model's dtype, the log-softmax is taken in float32. Positions follow
    ``generate``'s convention, so on-policy ratios are exactly 1. keeps_logits: the model takes
    ``logits_to_keep``. temperature: log-probs of softmax(logits / temperature), the distribution
    sampled from. A family's scaling of its head's output is checked (``_head_transform``).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    g = inputs["attention_mask"].shape[0]
    n, t = completion_ids.shape
    if prompt_of_row is None:
        prompt_of_row = torch.arange(g, device=completion_ids.device)
    if prompt_of_row.shape != (n,) or (n and not (0 <= int(prompt_of_row.min()) <= int(prompt_of_row.max()) < g)):
        raise ValueError(f"prompt_of_row: expected [{n}] indices into {g} prompts, got shape "
                         f"{list(prompt_of_row.shape)}")
    if completion_mask.shape != completion_ids.shape or t == 0:
        raise ValueError(f"completion_ids / completion_mask: expected the same [N, T] with T >= 1, got "
                         f"{list(completion_ids.shape)} and {list(completion_mask.shape)}")
    shared = not checkpointed(model)  # a checkpointed layer keeps no cache: then rows run whole
    with LastPositionHead(model) as last:  # the prompts' logits are never needed
        cache = prefill_prompts(model, inputs, prompt_of_row, keeps_logits) if shared else None
    prompt_mask = inputs["attention_mask"][prompt_of_row]
    attention = torch.cat([prompt_mask, completion_mask[:, :-1].to(prompt_mask.dtype)], 1)  # [N, P + T - 1]
    start = prompt_mask.shape[1] - 1 if shared else 0  # the prompt's last token on, or all of it
    positions = generation_positions(attention)[:, start:]
    # each row reads (its prompt, or its prompt's last token), then its completion but the last token
    if "inputs_embeds" in inputs:
        embed = getattr(model, "module", model).get_input_embeddings()  # DDP keeps the model in .module
        embeds = inputs["inputs_embeds"]
        tail = {"inputs_embeds": torch.cat([embeds[prompt_of_row, start:],
                                            embed(completion_ids[:, :-1]).to(embeds.dtype)], 1)}
    else:
        tail = {"input_ids": torch.cat([inputs["input_ids"][prompt_of_row, start:], completion_ids[:, :-1]], 1)}
        if not shared:  # the audio too, once per row
            tail |= {k: v[prompt_of_row] for k, v in inputs.items() if k not in SEQUENCE_KEYS}
    with last:  # the model computes the logits of its last position only; the head's input is kept
        out = model(**tail, attention_mask=attention, position_ids=positions, past_key_values=cache,
                     use_cache=shared)
    if last.hidden is None or last.hidden.dim() != 3 or last.hidden.shape[0] != n or last.hidden.shape[1] < t:
        raise RuntimeError(f"{type(model).__name__}: its forward did not hand its output head "
                           f"({type(last.head).__name__}) hidden states [{n}, >= {t}, D]")
    hidden = last.hidden[:, -t:]  # [N, T, D]: position P - 1 + j predicts completion token j
    transform = _head_transform(model, last.head, hidden[:, -1], out.logits[:, -1])
    size = max(1, LOGITS_PER_CHUNK // out.logits.shape[-1])
    del out
    picked_hidden, picked_ids = hidden[completion_mask], completion_ids[completion_mask]  # [M, D], [M]
    grad = torch.is_grad_enabled() and any(x.requires_grad for x in (picked_hidden, *last.head.parameters()))
    # under grad, the backward recomputes each chunk's logits instead of keeping them all
    parts = [checkpoint(_token_logprobs, last.head, transform, temperature, h, ids, entropy, use_reentrant=False)
             if grad else _token_logprobs(last.head, transform, temperature, h, ids, entropy)
             for h, ids in zip(picked_hidden.split(size), picked_ids.split(size))]  # chunks, not tokens
    width = (2,) if entropy else ()
    picked = torch.cat(parts) if parts else picked_hidden.new_zeros(0, *width, dtype=torch.float32)  # [M, (2)]
    full = torch.zeros(n, t, *width, dtype=torch.float32, device=hidden.device).masked_scatter(
        completion_mask[..., None] if entropy else completion_mask, picked)
    return (full[..., 0], full[..., 1]) if entropy else full
