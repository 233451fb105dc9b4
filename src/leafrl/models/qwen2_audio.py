"""Qwen2-Audio (``Qwen2AudioForConditionalGeneration``): Whisper-style log-mel features padded
to a fixed window, ``<|AUDIO|>`` expanded by the processor, ``feature_attention_mask``.

The built-in tiny SALLM is a model of this class, so it loads through this family too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from leafrl.models.base import check_clips, eos_token_ids, prepare_tokenizer, takes_logits_to_keep


@dataclass
class Qwen2AudioFamily:
    processor: Any
    eos_token_ids: list[int]
    name: str = "qwen2_audio"
    rows_encode_alone: bool = True  # Whisper features: every clip padded to the fixed window
    row_keys: tuple[str, ...] = ("input_ids", "attention_mask", "input_features", "feature_attention_mask")
    keeps_logits: bool = True  # set at load from the model's forward (takes_logits_to_keep)
    projector: str = "multi_modal_projector"
    sampling_rate: int = field(init=False)
    max_audio_seconds: float = field(init=False)
    pad_token_id: int = field(init=False)
    suppress_token_ids: list[int] = field(init=False)

    @classmethod
    def load(cls, name_or_path: str, *, dtype: torch.dtype | None = None) -> tuple[Any, Qwen2AudioFamily]:
        from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

        processor = AutoProcessor.from_pretrained(name_or_path)
        model = Qwen2AudioForConditionalGeneration.from_pretrained(name_or_path, dtype=dtype)
        return model, cls(processor, eos_token_ids(model, processor.tokenizer),
                          keeps_logits=takes_logits_to_keep(model))

    def __post_init__(self) -> None:
        self.pad_token_id = prepare_tokenizer(self.processor.tokenizer).pad_token_id
        extractor = self.processor.feature_extractor
        self.sampling_rate = extractor.sampling_rate
        self.max_audio_seconds = extractor.n_samples / extractor.sampling_rate
        p = self.processor
        self.suppress_token_ids = self.tokenizer.convert_tokens_to_ids([p.audio_token, p.audio_bos_token,
                                                                        p.audio_eos_token])

    @property
    def tokenizer(self) -> Any:
        return self.processor.tokenizer

    def build_prompt(self, text: str, system: str | None = None) -> str:
        messages = [] if system is None else [{"role": "system", "content": system}]
        messages.append({"role": "user", "content": [{"type": "audio", "audio_url": "<audio>"},
                                                      {"type": "text", "text": text}]})
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def encode(self, prompts: Sequence[str], audios: Sequence[np.ndarray] | None,
               ids: Sequence[str]) -> dict[str, torch.Tensor]:
        check_clips(prompts, audios, ids, self.sampling_rate, self.max_audio_seconds, self.name)
        batch = self.processor(text=list(prompts), audio=list(audios), sampling_rate=self.sampling_rate,
                               return_tensors="pt", padding=True)
        return {k: batch[k] for k in self.row_keys}

    def audio_tokens(self, samples: int) -> int:
        """The ``<|AUDIO|>`` tokens a clip of ``samples`` (at ``sampling_rate``) becomes, counted as
        the processor counts them from the feature mask; below 1 the encoder has nothing to give."""
        extractor = self.processor.feature_extractor
        frames = -(-min(samples, extractor.n_samples) // extractor.hop_length)  # ceil
        return (((frames - 1) // 2 + 1) - 2) // 2 + 1

    def audio_frames(self, model: Any, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The projected audio as the language model receives it, before merging with the text:
        (frames [N, S, D] padded, lengths [N] of real frames). Runs encoder and projector only,
        with the encoder's attention masked past each clip as in the model's own forward."""
        from transformers.masking_utils import create_bidirectional_mask

        core = (model.get_base_model() if hasattr(model, "get_base_model") else model).model  # under a peft LoRA too
        features = inputs["input_features"]
        encoded, lengths = core.audio_tower._get_feat_extract_output_lengths(inputs["feature_attention_mask"].sum(1))
        positions = (features.shape[-1] - 2) // 2 + 1  # after the encoder's strided convolution
        keep = torch.arange(positions, device=features.device)[None, :] < encoded[:, None]
        mask = create_bidirectional_mask(config=core.audio_tower.config, attention_mask=keep.long(),
                                         inputs_embeds=features.new_zeros(len(features), positions, 1))
        frames = core.multi_modal_projector(core.audio_tower(features, attention_mask=mask).last_hidden_state)
        return frames, lengths

    def decode(self, completion_ids: torch.Tensor) -> list[str]:
        return self.processor.tokenizer.batch_decode(completion_ids, skip_special_tokens=True)

    def save(self, model: Any, path: str) -> None:
        model.save_pretrained(path)
        self.processor.save_pretrained(path)
