"""What every model family provides, and the family-free operations built on it.

Notation used for tensor shapes:
    N rows, P prompt tokens (left-padded), T completion tokens (right-padded), V vocab.

A family (Qwen2-Audio, Granite Speech, text-only causal LMs) differs only in a small class
that turns prompts and audio into model inputs. Everything else here, from repeating rows K
times to the log-probabilities of given completions, is written once for all of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from leafrl.audio.io import AudioError
from leafrl.errors import UserError


@runtime_checkable
class ModelFamily(Protocol):
    """One model family: the small piece of glue between leafrl and a family of checkpoints
    (Qwen2-Audio, Granite Speech, text-only causal LMs). Built by its ``load`` classmethod
    together with the model. (The LoRA that RL trains is the "adapter" of ``--adapter``.)

    name: the name users and logs see ("qwen2_audio", "granite_speech", "text").
    tokenizer: the text tokenizer (for targets and decoding).
    sampling_rate: the rate audio must have (None for text-only models).
    max_audio_seconds: the longest audio one prompt can carry (None: no audio or no limit).
    row_keys: the model-input keys whose first dimension is the row; they follow the rows
        when a batch is repeated K times or cut into micro-batches.
    pad_token_id / eos_token_ids: for generation and for cutting completions.
    keeps_logits: the model's forward takes ``logits_to_keep`` (computes only the logits asked).
    suppress_token_ids: tokens a response must never contain (the audio placeholders: a sampled
        one would be read as an audio slot when the response is fed back to the model).
    projector: the name of the module that maps audio features into the language model's inputs
        (None without audio); ``leafrl sft`` with finetune "lora+projector" trains it in full.
    rows_encode_alone: a row's inputs do not depend on the other rows of its batch beyond the
        prompt's left padding (Whisper-style features padded to a fixed window do not; features
        padded to the batch's longest clip do), so rows can be encoded once and batched later
        (``split_rows`` / ``collate_rows``).

    Families with audio also give ``audio_tokens(samples) -> int``: the audio tokens a clip of
    ``samples`` becomes in the prompt (below 1: too short for the encoder), which the start-up
    checks (``leafrl.preflight``) use to measure prompts without encoding them.

    Optional, for ``leafrl sft``'s alignment stage of a model trained from scratch:
    ``audio_frames(model, inputs) -> (frames [N, S, D], lengths [N])``, the projected audio
    before it is merged with the text.
    """

    name: str
    tokenizer: Any
    sampling_rate: int | None
    max_audio_seconds: float | None
    row_keys: tuple[str, ...]
    pad_token_id: int
    eos_token_ids: list[int]
    keeps_logits: bool
    suppress_token_ids: list[int]
    projector: str | None
    rows_encode_alone: bool

    @classmethod
    def load(cls, name_or_path: str, *, dtype: torch.dtype | None = None) -> tuple[Any, ModelFamily]:
        """Load (model, family) from a hub name or a local directory in the HF layout."""
        ...

    def build_prompt(self, text: str, system: str | None = None) -> str:
        """The full prompt string: chat template, the family's audio placeholder, generation cue."""
        ...

    def encode(self, prompts: Sequence[str], audios: Sequence[np.ndarray] | None,
               ids: Sequence[str]) -> dict[str, torch.Tensor]:
        """Model inputs for a batch of built prompts (left-padded for generation).

        ``audios[i]`` is float32 mono at ``sampling_rate``; ``ids[i]`` names row i in errors.
        """
        ...

    def decode(self, completion_ids: torch.Tensor) -> list[str]:
        """Completion ids [N, T] -> texts, special tokens and padding removed."""
        ...

    def save(self, model: Any, path: str) -> None:
        """Save model and processor files so that ``load_speech_lm(path)`` reloads both."""
        ...


def to_model(inputs: dict[str, torch.Tensor], model: Any) -> dict[str, torch.Tensor]:
    """``inputs`` on the model's device, floating ones (audio features) in the model's dtype
    (a bfloat16 audio encoder does not take float32 features)."""
    device, dtype = model.device, model.dtype
    return {k: v.to(device, dtype) if v.is_floating_point() else v.to(device) for k, v in inputs.items()}


def takes_logits_to_keep(model: Any) -> bool:
    """Whether the model's forward takes ``logits_to_keep`` (transformers added it family by
    family: Qwen2-Audio's, for one, only in later 4.x releases)."""
    import inspect

    return "logits_to_keep" in inspect.signature(model.forward).parameters


def prepare_tokenizer(tokenizer: Any) -> Any:
    """Left padding (prompts end where generation starts); a pad token is required."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        raise UserError("tokenizer: a pad token is required (set tokenizer.pad_token before loading)")
    return tokenizer


def eos_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """The ids that end a response: the model's generation config (which lists chat models'
    end-of-turn tokens too), else the tokenizer's eos."""
    ids = model.generation_config.eos_token_id
    if ids is None:
        ids = tokenizer.eos_token_id
    if ids is None:
        raise UserError("model.generation_config.eos_token_id and tokenizer.eos_token_id are both "
                         "unset: leafrl cannot tell where a response ends")
    return sorted({ids} if isinstance(ids, int) else set(ids))


def check_clips(prompts: Sequence[str], audios: Sequence[np.ndarray] | None, ids: Sequence[str],
                sampling_rate: int, max_seconds: float | None, family: str) -> None:
    """One clip per prompt, none longer than the family's feature window (naming the row).

    Whisper-style extractors cut features at their window while the processor may count
    audio tokens from the whole clip; the mismatch otherwise crashes deep in transformers.
    Trim upstream (``load_audio(..., max_seconds=..., too_long="trim")``) to keep such rows.
    """
    if audios is None or len(audios) != len(prompts):
        raise ValueError(f"audios: {family} needs one clip per prompt, got "
                         f"{None if audios is None else len(audios)} for {len(prompts)} prompts")
    if max_seconds is None:
        return
    limit = int(round(max_seconds * sampling_rate))
    for audio, row_id in zip(audios, ids):
        if len(audio) > limit:
            raise AudioError(
                f"example {row_id!r}: audio of {len(audio) / sampling_rate:.2f} s exceeds the "
                f"{max_seconds:g} s feature window of {family}; trim it when loading "
                f"(max_seconds={max_seconds:g}, too_long='trim') or drop the row"
            )


def repeat_rows(inputs: dict[str, torch.Tensor], k: int, row_keys: Sequence[str]) -> dict[str, torch.Tensor]:
    """Repeat every row k times in place order (row i -> rows i*k .. i*k+k-1)."""
    return {key: v.repeat_interleave(k, dim=0) if key in row_keys else v for key, v in inputs.items()}


def slice_rows(inputs: dict[str, torch.Tensor], rows: slice | torch.Tensor,
               row_keys: Sequence[str]) -> dict[str, torch.Tensor]:
    """The micro-batch of ``rows`` (a slice or an index tensor)."""
    return {key: v[rows] if key in row_keys else v for key, v in inputs.items()}


SEQUENCE_KEYS = ("input_ids", "inputs_embeds", "attention_mask")
"""The model-input keys that run along the prompt's tokens (the others hold audio)."""


def split_rows(inputs: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """Each row of a family's left-padded batch on its own, its prompt padding removed
    (values [1, ...]); ``collate_rows`` batches them again. Only for families whose
    ``rows_encode_alone``."""
    lengths = inputs["attention_mask"].sum(1).tolist()
    return [{k: v[i:i + 1, v.shape[1] - n:] if k in SEQUENCE_KEYS else v[i:i + 1] for k, v in inputs.items()}
            for i, n in enumerate(lengths)]


def collate_rows(rows: Sequence[dict[str, torch.Tensor]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """One batch from rows on their own (``split_rows``), as the family's ``encode`` would make it
    from the same rows at once: ``input_ids`` left-padded with ``pad_token_id`` and
    ``attention_mask`` with 0; the other (audio) keys stacked."""
    width = max(row["attention_mask"].shape[1] for row in rows)

    def left_pad(v: torch.Tensor, fill: int) -> torch.Tensor:
        return torch.nn.functional.pad(v, (width - v.shape[1], 0), value=fill)

    return {key: torch.cat([left_pad(row[key], pad_token_id if key == "input_ids" else 0) if key in SEQUENCE_KEYS
                            else row[key] for row in rows]) for key in rows[0]}


EMBEDDED_KEYS = ("inputs_embeds", "attention_mask")
"""The row keys of embedded prompts (see ``embed_prompts``)."""


class _Reached(Exception):
    """Raised by the hook in ``embed_prompts`` once the language model's input is known."""

    def __init__(self, embeds: torch.Tensor):
        self.embeds = embeds


@torch.no_grad()
def embed_prompts(model: Any, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What the language model reads for these prompts: token embeddings with the audio merged in.

    Returns {"inputs_embeds" [N, P, D], "attention_mask" [N, P]}. The model runs only up to its
    decoder (audio encoder and projector included), for any family. LoRA sits on the language
    model alone, so these embeddings are the same for every sample, the reference and the update
    of a prompt: embedding once per prompt and repeating the result K times runs the audio
    encoder once per prompt instead of once per sample and pass.
    """
    decoder = model.get_decoder()

    def capture(module: Any, args: tuple, kwargs: dict) -> None:
        embeds = kwargs.get("inputs_embeds")
        if embeds is None:  # a plain causal LM hands its decoder the ids
            embeds = model.get_input_embeddings()(kwargs["input_ids"] if "input_ids" in kwargs else args[0])
        raise _Reached(embeds)

    handle = decoder.register_forward_pre_hook(capture, with_kwargs=True)
    try:
        model(**inputs, use_cache=False)
    except _Reached as reached:
        return {"inputs_embeds": reached.embeds, "attention_mask": inputs["attention_mask"]}
    finally:
        handle.remove()
    raise RuntimeError(f"{type(model).__name__}: its forward never reached get_decoder() "
                       f"({type(decoder).__name__}); leafrl cannot embed its prompts")


def trim_padding(inputs: dict[str, torch.Tensor], completion_ids: torch.Tensor, completion_mask: torch.Tensor,
                 ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """Drop the prompt columns that are padding in every row (left) and the completion columns
    past every row's end (right). Positions count real tokens only, so results do not change.

    Shapes: inputs [N, P, ...] (``EMBEDDED_KEYS``), completion_ids / completion_mask [N, T].
    """
    first = int(inputs["attention_mask"].any(0).long().argmax())
    width = int(completion_mask.any(0).nonzero().max()) + 1 if completion_mask.any() else 1
    return ({k: v[:, first:] for k, v in inputs.items()}, completion_ids[:, :width],
            completion_mask[:, :width])


def generation_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids as ``generate`` makes them: count of real tokens before, 0 on padding."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def prefill_prompts(model: Any, prompts: dict[str, torch.Tensor], prompt_of_row: torch.Tensor,
                    keeps_logits: bool) -> Any | None:
    """The key/value cache of every prompt but its last token, computed once per prompt and
    repeated for the rows that continue it.

    Shapes: prompts [G, P, ...] (a family's ``encode`` or ``embed_prompts``; audio keys are
    read here and nowhere after), prompt_of_row [N] long in [0, G). Returns the model's cache
    of N rows and P - 1 positions, or None for one-token prompts (nothing to cache).
    K samples of a prompt share its prompt, so the prompt's tokens run once instead of K times.
    """
    if prompts["attention_mask"].shape[1] < 2:
        return None
    head = {k: v[:, :-1] if k in SEQUENCE_KEYS else v for k, v in prompts.items()}
    kw = {"logits_to_keep": 1} if keeps_logits else {}
    out = model(**head, position_ids=generation_positions(head["attention_mask"]), use_cache=True, **kw)
    cache = out.past_key_values
    cache.reorder_cache(prompt_of_row)
    return cache

