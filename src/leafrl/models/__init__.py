"""Model families behind one protocol (see ``base.ModelFamily``).

``load_speech_lm(name_or_path)`` reads the checkpoint's ``config.model_type`` and picks the
family: Qwen2-Audio, Granite Speech, or any causal LM (text-only). ``attach_lora`` adds the RL
LoRA with peft; the reference policy is the same model with that LoRA disabled.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Any

import torch

from leafrl._files import path_problem
from leafrl.errors import UserError
from leafrl.models.base import (
    EMBEDDED_KEYS,
    ModelFamily,
    collate_rows,
    embed_prompts,
    generation_positions,
    prefill_prompts,
    repeat_rows,
    slice_rows,
    split_rows,
    to_model,
    trim_padding,
)
from leafrl.models.gguf import pretrained_args
from leafrl.models.granite_speech import GraniteSpeechFamily
from leafrl.models.logprobs import completion_logprobs
from leafrl.models.qwen2_audio import Qwen2AudioFamily
from leafrl.models.text_lm import TextLMFamily

FAMILIES: dict[str, type] = {
    "qwen2_audio": Qwen2AudioFamily,
    "granite_speech": GraniteSpeechFamily,
}
# The LoRA targets of the paper (q/k/v/o/gate/up/down), in the language model only: audio
# encoders have projections of the same names that RL does not train.
LORA_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def family_of(model_type: str) -> type:
    """The family class for a ``config.model_type``; text-only for any causal LM."""
    if model_type in FAMILIES:
        return FAMILIES[model_type]
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return TextLMFamily
    raise UserError(f"model_type {model_type!r} is not supported: leafrl knows "
                     f"{', '.join(sorted(FAMILIES))} and any text-only causal LM "
                     "(AutoModelForCausalLM, e.g. llama, qwen2, granite)")


def load_speech_lm(name_or_path: str, *, dtype: torch.dtype | None = None) -> tuple[Any, ModelFamily]:
    """(model, family) for a hub name, a local directory in the standard HF layout, a GGUF file (or
    a directory holding one) or a built-in base model (``builtin:NAME``). A path that is no model,
    a config.json that is not JSON and weights that do not load raise one UserError naming the
    path and the cause."""
    from safetensors import SafetensorError

    name_or_path = locate(name_or_path)
    config = model_config(name_or_path)
    try:
        return family_of(config.model_type).load(name_or_path, dtype=dtype)
    except (OSError, RuntimeError, SafetensorError, json.JSONDecodeError) as err:
        raise UserError(f"model {name_or_path}: cannot load it ({type(err).__name__}: {_first_line(err)})") from err


def model_config(name_or_path: str) -> Any:
    """The transformers config of a local model directory (checked first, so a mistake names the
    path), a GGUF file, a hub name or a built-in base model (``builtin:NAME``)."""
    from transformers import AutoConfig

    name_or_path = locate(name_or_path)
    path = Path(name_or_path).expanduser()
    source, kwargs = pretrained_args(name_or_path)
    if kwargs:  # a GGUF file: its header holds the config
        try:
            return AutoConfig.from_pretrained(source, **kwargs)
        except (OSError, ValueError, KeyError, RuntimeError, struct.error) as err:  # struct: a cut-off header
            raise UserError(f"model {path}: not a GGUF model transformers reads ({_first_line(err)})") from err
    if path.is_dir():
        file = path / "config.json"
        if not file.is_file():
            raise UserError(f"model {path}: no config.json there (neither a model saved in the Hugging Face "
                            "layout nor a directory holding a GGUF file)")
        try:
            json.loads(file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise UserError(f"model {file}: not valid JSON ({err})") from err
    elif path.exists():
        raise UserError(f"model {path}: a file, but not a GGUF one (.gguf); give a model directory or a GGUF file")
    elif not HUB_NAME.fullmatch(str(name_or_path)):
        raise UserError(f"model directory {path_problem(path, directory=True) or 'not found'}: {name_or_path}")
    try:
        return AutoConfig.from_pretrained(name_or_path)
    except (OSError, ValueError, KeyError) as err:
        where = "" if path.is_dir() else " (no such directory here, so it was looked up on the Hugging Face hub)"
        raise UserError(f"model {name_or_path}{where}: {_first_line(err)}") from err


def locate(name_or_path: str) -> str:
    """Where a built-in base model (``builtin:NAME``) is, or ``name_or_path`` itself."""
    from leafrl.builtin import locate_model

    return locate_model(name_or_path)


HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")
"""A hub repository id ("name" or "owner/name"); anything else that is not a directory is a missing path."""


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


MODEL_DTYPES = ("auto", "bfloat16", "float16", "float32")


def resolve_dtype(name: str) -> torch.dtype:
    """A ``model_dtype`` setting as a torch dtype: "auto" is bfloat16 on a GPU that supports it,
    else float32 (CPUs, and GPUs without bfloat16, where float16 would need loss scaling)."""
    if name not in MODEL_DTYPES:
        raise UserError(f"model_dtype must be one of {MODEL_DTYPES}, got {name!r}")
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32
    return getattr(torch, name)


def checkpoint_activations(model: Any) -> None:
    """Activation checkpointing of the language model's decoder layers (the trained part; the
    audio encoder runs once per prompt without gradients), for every family: the multimodal
    classes themselves do not all take ``gradient_checkpointing_enable``. Non-reentrant, so the
    frozen embeddings need not require grad."""
    decoder = model.get_decoder()
    if hasattr(decoder, "activation_checkpointing_enable"):  # its name from transformers 5.2x on
        decoder.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        decoder.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def context_length(model: Any) -> int | None:
    """The longest sequence (prompt and response tokens) the language model takes, from its config."""
    return getattr(model.config.get_text_config(), "max_position_embeddings", None)


def lora_config(model: Any, *, rank: int, alpha: int, dropout: float,
                projections: tuple[str, ...] = LORA_PROJECTIONS, full: tuple[str, ...] = ()) -> Any:
    """peft's ``LoraConfig`` of leafrl's LoRA on ``model``: the language model's ``projections``
    (audio encoders have projections of the same names that RL does not train: under a
    ``language_model`` in multimodal models, every matching module in text-only ones); the modules
    named in ``full`` (e.g. a family's ``projector``) are trained in full beside it (peft's
    modules_to_save). For ``attach_lora``, and as ``peft_config`` for TRL's trainers."""
    from peft import LoraConfig

    names = "|".join(projections)
    multimodal = any("language_model" in name for name, _ in model.named_modules())
    scope = r".*language_model.*\." if multimodal else r"(.*\.)?"
    return LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=f"{scope}({names})",
                      task_type="CAUSAL_LM", modules_to_save=list(full) or None)


def attach_lora(model: Any, *, rank: int, alpha: int, dropout: float,
                projections: tuple[str, ...] = LORA_PROJECTIONS, full: tuple[str, ...] = ()) -> Any:
    """Wrap ``model`` in a peft LoRA (``lora_config``): the audio encoders are left frozen."""
    from peft import get_peft_model

    return get_peft_model(model, lora_config(model, rank=rank, alpha=alpha, dropout=dropout,
                                             projections=projections, full=full))


__all__ = [
    "FAMILIES",
    "EMBEDDED_KEYS",
    "LORA_PROJECTIONS",
    "MODEL_DTYPES",
    "ModelFamily",
    "attach_lora",
    "checkpoint_activations",
    "collate_rows",
    "completion_logprobs",
    "context_length",
    "embed_prompts",
    "family_of",
    "generation_positions",
    "load_speech_lm",
    "lora_config",
    "model_config",
    "prefill_prompts",
    "repeat_rows",
    "resolve_dtype",
    "slice_rows",
    "split_rows",
    "to_model",
    "trim_padding",
]
