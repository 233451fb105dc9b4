"""Model families behind one adapter protocol (see ``base.SpeechLMAdapter``).

``load_speech_lm(name_or_path)`` reads the checkpoint's ``config.model_type`` and picks the
family: Qwen2-Audio, Granite Speech, or any causal LM (text-only). ``attach_lora`` adds the RL
LoRA with peft; the reference policy is the same model with that adapter disabled.
"""

from __future__ import annotations

from typing import Any

import torch

from leafrl.models.base import (
    EMBEDDED_KEYS,
    SpeechLMAdapter,
    collate_rows,
    completion_logprobs,
    embed_prompts,
    generation_positions,
    prefill_prompts,
    repeat_rows,
    slice_rows,
    split_rows,
    trim_padding,
)
from leafrl.models.granite_speech import GraniteSpeechAdapter
from leafrl.models.qwen2_audio import Qwen2AudioAdapter
from leafrl.models.text_lm import TextLMAdapter

ADAPTERS: dict[str, type] = {
    "qwen2_audio": Qwen2AudioAdapter,
    "granite_speech": GraniteSpeechAdapter,
}
# The LoRA targets of the paper (q/k/v/o/gate/up/down), in the language model only: audio
# encoders have projections of the same names that RL does not train.
LORA_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def family_of(model_type: str) -> type:
    """The adapter class for a ``config.model_type``; text-only for any causal LM."""
    if model_type in ADAPTERS:
        return ADAPTERS[model_type]
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return TextLMAdapter
    raise ValueError(f"model_type {model_type!r} is not supported: leafrl knows "
                     f"{', '.join(sorted(ADAPTERS))} and any text-only causal LM "
                     "(AutoModelForCausalLM, e.g. llama, qwen2, granite)")


def load_speech_lm(name_or_path: str, *, dtype: torch.dtype | None = None) -> tuple[Any, SpeechLMAdapter]:
    """(model, adapter) for a hub name or a local directory in the standard HF layout."""
    from transformers import AutoConfig

    model_type = AutoConfig.from_pretrained(name_or_path).model_type
    return family_of(model_type).load(name_or_path, dtype=dtype)


def attach_lora(model: Any, *, rank: int, alpha: int, dropout: float,
                projections: tuple[str, ...] = LORA_PROJECTIONS) -> Any:
    """Wrap ``model`` in a peft LoRA on the language model's ``projections``.

    Audio encoders are left frozen: only modules under a ``language_model`` (multimodal
    models) or, for text-only models, every matching module is targeted.
    """
    from peft import LoraConfig, get_peft_model

    names = "|".join(projections)
    multimodal = any("language_model" in name for name, _ in model.named_modules())
    scope = r".*language_model.*\." if multimodal else r"(.*\.)?"
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout,
                        target_modules=f"{scope}({names})", task_type="CAUSAL_LM")
    return get_peft_model(model, config)


__all__ = [
    "ADAPTERS",
    "EMBEDDED_KEYS",
    "LORA_PROJECTIONS",
    "SpeechLMAdapter",
    "attach_lora",
    "collate_rows",
    "completion_logprobs",
    "embed_prompts",
    "family_of",
    "generation_positions",
    "load_speech_lm",
    "prefill_prompts",
    "repeat_rows",
    "slice_rows",
    "split_rows",
    "trim_padding",
]
