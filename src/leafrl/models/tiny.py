"""The built-in tiny SALLM: a randomly initialised ``Qwen2AudioForConditionalGeneration`` of a
few million parameters with a byte-level BPE tokenizer trained on the task's own text.

It is small enough to train on a laptop CPU in minutes, and it is a real transformers class:
once saved, it loads, trains and generates through the same Qwen2-Audio family as the 7B
model. Nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from leafrl.errors import UserError

# the tokens the Qwen2-Audio processor and its default chat template use
PAD, BOS, EOS = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
AUDIO, AUDIO_BOS, AUDIO_EOS = "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>"
SPECIAL_TOKENS = [PAD, BOS, EOS, AUDIO, AUDIO_BOS, AUDIO_EOS]
# Qwen2-Audio's chat layout without the released template's default system prompt and "Audio 1:"
# label: about 20 fewer tokens in every prompt, all of which a model trained from scratch would
# have to read past in every forward pass.
CHAT_TEMPLATE = (
    "{% for m in messages %}" + BOS + "{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'audio' %}" + AUDIO_BOS + AUDIO + AUDIO_EOS + "\n"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}" + EOS + "\n"
    "{% endfor %}{% if add_generation_prompt %}" + BOS + "assistant\n{% endif %}"
)
CHAT_ROLES = "system\nuser\nassistant\n"


@dataclass(frozen=True)
class TinyConfig:
    """Dimensions of the tiny SALLM (defaults: the built-in model)."""

    vocab_size: int = 1024
    """Tokens of the byte-level BPE tokenizer trained on the task's text."""
    n_mels: int = 80
    """Mel bins of the audio features."""
    hop_length: int = 640
    """Samples (at 16 kHz) between feature frames: 40 ms, 6.25 audio tokens a second (Whisper: 10 ms, 25)."""
    n_fft: int = 640
    """FFT size of the features."""
    window_seconds: int = 8
    """The Whisper-style feature window every clip is padded to (the built-in clips are <= 7.5 s)."""
    audio_dim: int = 128
    """Width of the audio encoder."""
    audio_layers: int = 2
    """Layers of the audio encoder."""
    audio_heads: int = 4
    """Attention heads of the audio encoder."""
    text_dim: int = 192
    """Width of the language model."""
    text_layers: int = 4
    """Layers of the language model."""
    text_heads: int = 4
    """Attention heads of the language model."""
    text_kv_heads: int = 2
    """Key/value heads of the language model (grouped-query attention)."""
    max_positions: int = 1024
    """The language model's context, in tokens."""

    def __post_init__(self) -> None:
        frames = self.window_seconds * 16000 / self.hop_length
        if frames != int(frames) or int(frames) % 2:
            raise UserError(f"TinyConfig: window_seconds * 16000 / hop_length must be an even whole number "
                            f"of feature frames (the encoder halves them), got {frames:g}")


def train_tokenizer(texts: Iterable[str], vocab_size: int, special_tokens: list[str] = SPECIAL_TOKENS,
                    pad: str = PAD, eos: str = EOS) -> Any:
    """A byte-level BPE tokenizer trained on ``texts`` (any text encodes; frequent words are
    single tokens), wrapped as a transformers fast tokenizer; ``special_tokens`` stay whole."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special_tokens,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    core.train_from_iterator(texts, trainer)
    extra = [t for t in special_tokens if t not in (pad, eos)]
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token=pad, eos_token=eos,
                                   additional_special_tokens=extra)


def tiny_tokenizer(texts: Iterable[str], vocab_size: int) -> Any:
    """The tiny SALLM's tokenizer: byte-level BPE trained on ``texts`` and the chat roles (counted
    as often as half the texts, so each role is one token). Deterministic for the same texts."""
    corpus = list(texts)
    return train_tokenizer(corpus + [CHAT_ROLES] * max(1, len(corpus) // 2), vocab_size)


def build_tiny_sallm(texts: Iterable[str], size: TinyConfig = TinyConfig(), seed: int = 0) -> tuple[Any, Any]:
    """(model, processor) of a fresh tiny SALLM whose tokenizer is trained on ``texts`` (give it
    all the task's text: prompts, references and what the audio says) and the chat roles.

    Save both with ``save_pretrained(dir)``; ``load_speech_lm(dir)`` reloads them.
    """
    import torch
    from transformers import (
        Qwen2AudioConfig,
        Qwen2AudioForConditionalGeneration,
        Qwen2AudioProcessor,
        WhisperFeatureExtractor,
    )

    tokenizer = tiny_tokenizer(texts, size.vocab_size)
    extractor = WhisperFeatureExtractor(feature_size=size.n_mels, sampling_rate=16000, hop_length=size.hop_length,
                                        chunk_length=size.window_seconds, n_fft=size.n_fft)
    processor = Qwen2AudioProcessor(feature_extractor=extractor, tokenizer=tokenizer, chat_template=CHAT_TEMPLATE)
    config = Qwen2AudioConfig(
        audio_config={
            "d_model": size.audio_dim, "encoder_layers": size.audio_layers,
            "encoder_attention_heads": size.audio_heads, "encoder_ffn_dim": 4 * size.audio_dim,
            "num_mel_bins": size.n_mels, "max_source_positions": int(extractor.nb_max_frames) // 2,
        },
        text_config={
            "model_type": "qwen2", "vocab_size": len(tokenizer), "hidden_size": size.text_dim,
            "intermediate_size": 4 * size.text_dim, "num_hidden_layers": size.text_layers,
            "num_attention_heads": size.text_heads, "num_key_value_heads": size.text_kv_heads,
            "max_position_embeddings": size.max_positions, "tie_word_embeddings": True,
        },
        audio_token_index=tokenizer.convert_tokens_to_ids(AUDIO),
    )
    torch.manual_seed(seed)
    model = Qwen2AudioForConditionalGeneration(config)
    # The encoder's position table is frozen and, in released checkpoints, holds Whisper's
    # sinusoids; a fresh model would otherwise keep random noise there and see no time order.
    table = model.model.audio_tower.embed_positions.weight
    with torch.no_grad():
        table.copy_(sinusoids(*table.shape))
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids(EOS)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.config.leafrl_tiny_size = asdict(size)  # recorded in config.json
    return model, processor


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> Any:
    """Whisper's sinusoidal position table [length, channels] (sin half, then cos half)."""
    import math

    import torch

    increment = math.log(max_timescale) / (channels // 2 - 1)
    inv_timescales = torch.exp(-increment * torch.arange(channels // 2))
    scaled = torch.arange(length)[:, None] * inv_timescales[None, :]
    return torch.cat([torch.sin(scaled), torch.cos(scaled)], dim=1)


def new_tiny_sallm(texts: Iterable[str], size: TinyConfig = TinyConfig(), seed: int = 0) -> tuple[Any, Any]:
    """(model, family) of a fresh tiny SALLM, ready to train like any loaded model."""
    from leafrl.models.base import takes_logits_to_keep
    from leafrl.models.qwen2_audio import Qwen2AudioFamily

    model, processor = build_tiny_sallm(texts, size, seed)
    return model, Qwen2AudioFamily(processor, [model.generation_config.eos_token_id],
                                    keeps_logits=takes_logits_to_keep(model))
