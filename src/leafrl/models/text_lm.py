"""Text-only causal LMs (any ``AutoModelForCausalLM``): LEAF is not speech-specific.

Prompts go through the tokenizer's chat template when it has one, else they are used as
written (with the system text, if any, on a line before).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from leafrl.errors import UserError
from leafrl.models.base import eos_token_ids, prepare_tokenizer, takes_logits_to_keep
from leafrl.models.gguf import pretrained_args


@dataclass
class TextLMFamily:
    tokenizer: Any
    eos_token_ids: list[int]
    name: str = "text"
    rows_encode_alone: bool = True  # text only
    row_keys: tuple[str, ...] = ("input_ids", "attention_mask")
    keeps_logits: bool = True  # set at load from the model's forward (takes_logits_to_keep)
    projector: None = None
    sampling_rate: None = None
    max_audio_seconds: None = None
    pad_token_id: int = field(init=False)
    suppress_token_ids: list[int] = field(default_factory=list)

    @classmethod
    def load(cls, name_or_path: str, *, dtype: torch.dtype | None = None) -> tuple[Any, TextLMFamily]:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        source, kwargs = pretrained_args(name_or_path)  # a GGUF file: its directory and gguf_file=
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **kwargs)
        return model, cls(tokenizer, eos_token_ids(model, tokenizer), keeps_logits=takes_logits_to_keep(model))

    def __post_init__(self) -> None:
        self.pad_token_id = prepare_tokenizer(self.tokenizer).pad_token_id

    def build_prompt(self, text: str, system: str | None = None) -> str:
        if self.tokenizer.chat_template is None:
            return text if system is None else f"{system}\n{text}"
        messages = [] if system is None else [{"role": "system", "content": system}]
        messages.append({"role": "user", "content": text})
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def encode(self, prompts: Sequence[str], audios: Sequence[np.ndarray] | None,
               ids: Sequence[str]) -> dict[str, torch.Tensor]:
        if audios is not None and any(a is not None for a in audios):
            raise UserError(f"audios: a text-only model cannot take audio (rows {list(ids)[:3]}...); "
                             "use a text dataset or a speech model")
        # a chat template writes its own special tokens; a plain prompt gets the tokenizer's
        batch = self.tokenizer(list(prompts), return_tensors="pt", padding=True,
                               add_special_tokens=self.tokenizer.chat_template is None)
        return {k: batch[k] for k in self.row_keys}

    def decode(self, completion_ids: torch.Tensor) -> list[str]:
        return self.tokenizer.batch_decode(completion_ids, skip_special_tokens=True)

    def save(self, model: Any, path: str) -> None:
        model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
