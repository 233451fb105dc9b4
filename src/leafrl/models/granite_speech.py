"""Granite Speech (``GraniteSpeechForConditionalGeneration``: granite-speech-3.3-2b/8b,
granite-4.0-1b-speech): conformer encoder on stacked log-mels, ``<|audio|>`` expanded to the
projector's output length, ``input_features_mask``.

Features: transformers' ``GraniteSpeechFeatureExtractor`` needs torchaudio, so its log-mel is
recomputed in plain torch (``leafrl.audio.features``, tested against a numpy reference) from
the settings in the checkpoint's ``preprocessor_config.json``.

The modality LoRA: Granite checkpoints ship a LoRA that transformers loads with the model and
switches on whenever audio is present. Every prompt leafrl trains on carries audio, so the
family's loader merges that LoRA into the base weights once at load time. The RL LoRA that
``attach_lora`` adds then sits on top of it, and the reference policy (RL LoRA disabled)
is exactly the released model on audio prompts. A saved RL LoRA therefore applies to the
released checkpoint loaded through this family, which merges the modality LoRA the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from leafrl.audio.features import num_audio_features, stacked_log_mel
from leafrl.errors import UserError
from leafrl.models.base import check_clips, eos_token_ids, prepare_tokenizer, takes_logits_to_keep

# GraniteSpeechFeatureExtractor's own defaults, used where a config omits a setting
EXTRACTOR_DEFAULTS = {"sampling_rate": 16000, "n_fft": 512, "win_length": 400, "hop_length": 160,
                      "n_mels": 80, "projector_window_size": 15, "projector_downsample_rate": 5}


@dataclass
class GraniteSpeechFamily:
    tokenizer: Any
    eos_token_ids: list[int]
    extractor: dict[str, int]  # EXTRACTOR_DEFAULTS' keys, read from preprocessor_config.json
    audio_token: str = "<|audio|>"
    name: str = "granite_speech"
    rows_encode_alone: bool = False  # log-mel features padded to the batch's longest clip
    row_keys: tuple[str, ...] = ("input_ids", "attention_mask", "input_features", "input_features_mask")
    keeps_logits: bool = True  # set at load from the model's forward (takes_logits_to_keep)
    projector: str = "projector"
    max_audio_seconds: None = None  # block attention: no fixed feature window
    sampling_rate: int = field(init=False)
    pad_token_id: int = field(init=False)
    suppress_token_ids: list[int] = field(init=False)

    @classmethod
    def load(cls, name_or_path: str, *, dtype: torch.dtype | None = None) -> tuple[Any, GraniteSpeechFamily]:
        from transformers import AutoTokenizer, GraniteSpeechForConditionalGeneration

        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        model = merge_modality_lora(GraniteSpeechForConditionalGeneration.from_pretrained(name_or_path,
                                                                                          dtype=dtype))
        return model, cls(tokenizer, eos_token_ids(model, tokenizer), read_extractor_config(name_or_path),
                          keeps_logits=takes_logits_to_keep(model))

    def __post_init__(self) -> None:
        self.pad_token_id = prepare_tokenizer(self.tokenizer).pad_token_id
        self.sampling_rate = self.extractor["sampling_rate"]
        if self.audio_token not in self.tokenizer.get_vocab():
            raise UserError(f"tokenizer: no {self.audio_token!r} token; is this a Granite Speech tokenizer?")
        self.suppress_token_ids = [self.tokenizer.convert_tokens_to_ids(self.audio_token)]

    def build_prompt(self, text: str, system: str | None = None) -> str:
        messages = [] if system is None else [{"role": "system", "content": system}]
        messages.append({"role": "user", "content": f"{self.audio_token}{text}"})
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def encode(self, prompts: Sequence[str], audios: Sequence[np.ndarray] | None,
               ids: Sequence[str]) -> dict[str, torch.Tensor]:
        check_clips(prompts, audios, ids, self.sampling_rate, self.max_audio_seconds, self.name)
        for prompt, row_id in zip(prompts, ids):
            if prompt.count(self.audio_token) != 1:
                raise UserError(f"example {row_id!r}: the prompt must hold {self.audio_token} once "
                                 "(build it with build_prompt)")
        lengths = [len(a) for a in audios]
        batch = torch.zeros(len(audios), max(lengths))  # [N, S] right-padded, as the extractor does
        for i, audio in enumerate(audios):
            batch[i, : len(audio)] = torch.from_numpy(np.asarray(audio, dtype=np.float32))
        settings = {k: self.extractor[k] for k in ("n_fft", "win_length", "hop_length", "n_mels")}
        features = stacked_log_mel(batch, sampling_rate=self.sampling_rate, **settings)
        n_audio = [self.audio_tokens(n) for n in lengths]
        texts = [p.replace(self.audio_token, self.audio_token * n) for p, n in zip(prompts, n_audio)]
        tokens = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        mask = torch.arange(max(n_audio))[None, :] < torch.tensor(n_audio)[:, None]  # [N, A]
        return {"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"],
                "input_features": features, "input_features_mask": mask}

    def audio_tokens(self, samples: int) -> int:
        """The ``<|audio|>`` tokens a clip of ``samples`` (at ``sampling_rate``) becomes."""
        return num_audio_features([samples], hop_length=self.extractor["hop_length"],
                                  projector_window_size=self.extractor["projector_window_size"],
                                  projector_downsample_rate=self.extractor["projector_downsample_rate"])[0]

    def decode(self, completion_ids: torch.Tensor) -> list[str]:
        return self.tokenizer.batch_decode(completion_ids, skip_special_tokens=True)

    def save(self, model: Any, path: str) -> None:
        """Model (its modality LoRA already merged), tokenizer and feature settings."""
        import json
        from pathlib import Path

        model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        mel = {k: self.extractor[k] for k in ("n_fft", "win_length", "hop_length", "n_mels")}
        config = {"feature_extractor_type": "GraniteSpeechFeatureExtractor",
                  "sampling_rate": self.sampling_rate, "melspec_kwargs": {"sample_rate": self.sampling_rate, **mel},
                  "projector_window_size": self.extractor["projector_window_size"],
                  "projector_downsample_rate": self.extractor["projector_downsample_rate"]}
        (Path(path) / "preprocessor_config.json").write_text(json.dumps(config, indent=2))


def read_extractor_config(name_or_path: str) -> dict[str, int]:
    """The feature settings of a checkpoint's preprocessor_config.json (without building the
    torchaudio-bound extractor): its ``melspec_kwargs`` or flat keys, else the class defaults."""
    from transformers.feature_extraction_utils import FeatureExtractionMixin

    raw, _ = FeatureExtractionMixin.get_feature_extractor_dict(name_or_path)
    mel = raw.get("melspec_kwargs", {})
    out = {}
    for key, default in EXTRACTOR_DEFAULTS.items():
        mel_key = "sample_rate" if key == "sampling_rate" else key
        out[key] = int(mel.get(mel_key, raw.get(key, default)))
    return out


def merge_modality_lora(model: Any) -> Any:
    """Merge the LoRA that transformers loaded with a Granite Speech checkpoint into the base
    weights and remove it, so that a new peft adapter can be attached on top."""
    if not getattr(model, "_hf_peft_config_loaded", False):
        return model
    from peft.tuners.tuners_utils import BaseTunerLayer

    model.enable_adapters()
    for name, module in list(model.named_modules()):
        if isinstance(module, BaseTunerLayer):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name), child, module.get_base_layer())
    model._hf_peft_config_loaded = False
    del model.peft_config
    return model
