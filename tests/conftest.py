"""Shared fixtures: a tiny built-in SALLM (a real Qwen2-Audio-class model, random weights) and a tiny
Granite Speech model laid out like the release."""

import json

import numpy as np
import pytest
import torch

from leafrl.models.tiny import TinyConfig, train_tokenizer

TEXTS = ["drei rote Äpfel und ein blaues Auto", "there are three apples on the table",
         "Translate the English speech into German.", "How many cars are there?"] * 20
TINY = TinyConfig(vocab_size=320, n_mels=32, hop_length=320, n_fft=400, window_seconds=3, audio_dim=32, audio_layers=1,
                audio_heads=2, text_dim=32, text_layers=2, text_heads=2, text_kv_heads=1,
                max_positions=512)


@pytest.fixture(scope="session")
def tiny_sallm():
    """(model, family) of a tiny SALLM, in eval mode."""
    from leafrl.models.tiny import new_tiny_sallm

    model, family = new_tiny_sallm(TEXTS, TINY)
    return model.eval(), family


def save_tiny_sallm(path):
    """A tiny SALLM (model and processor) saved to ``path`` in the HF layout; returns ``path``."""
    from leafrl.models.tiny import build_tiny_sallm

    model, processor = build_tiny_sallm(TEXTS, TINY)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def noise(seconds: float, rate: int = 16000, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * rate))).astype(np.float32)


REFERENCES = {220.0: "drei rote Äpfel und zwei Autos", 660.0: "ein blaues Auto auf der Straße"}


def tone_dataset(root, n_train=24, n_valid=8):
    """Two 'words' told apart by pitch: a task a tiny model learns in a few dozen steps."""
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("valid", n_valid)):
        rows = []
        for i in range(n):
            freq = list(REFERENCES)[i % 2]
            t = np.arange(int(16000 * rng.uniform(0.6, 1.2))) / 16000
            audio = (0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)
            _write(root / "audio" / f"{split}{i}.wav", audio, 16000)
            rows.append({"id": f"{split}{i}", "audio": f"audio/{split}{i}.wav", "prompt": "What do you hear?",
                         "reference": REFERENCES[freq], "task": "ast",
                         "transcript": REFERENCES[freq]})
        (root / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def _write(path, audio, rate):
    from leafrl.audio.io import write_audio

    write_audio(path, audio, rate)


GRANITE_SPECIALS = ["<|end_of_text|>", "<|start_of_role|>", "<|end_of_role|>", "<|audio|>", "<|pad|>"]
GRANITE_TEMPLATE = ("{% for m in messages %}<|start_of_role|>{{ m['role'] }}<|end_of_role|>"
                    "{{ m['content'] }}<|end_of_text|>\n{% endfor %}"
                    "{% if add_generation_prompt %}<|start_of_role|>assistant<|end_of_role|>{% endif %}")


def granite_parts():
    """A tiny Granite Speech model and tokenizer, and its modality LoRA as a peft model."""
    from peft import LoraConfig, get_peft_model
    from transformers import GraniteSpeechConfig, GraniteSpeechForConditionalGeneration

    tok = train_tokenizer(TEXTS, 320, GRANITE_SPECIALS, pad="<|pad|>", eos="<|end_of_text|>")
    tok.chat_template = GRANITE_TEMPLATE
    config = GraniteSpeechConfig(
        encoder_config={"input_dim": 160, "num_layers": 1, "hidden_dim": 32, "num_heads": 2,
                        "dim_head": 16, "output_dim": 8, "context_size": 20, "conv_kernel_size": 3},
        projector_config={"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                          "intermediate_size": 64, "encoder_hidden_size": 32},
        text_config={"model_type": "granite", "vocab_size": len(tok), "hidden_size": 32,
                     "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                     "num_key_value_heads": 1, "max_position_embeddings": 512},
        audio_token_index=tok.convert_tokens_to_ids("<|audio|>"), has_lora_adapter=True)
    torch.manual_seed(0)
    model = GraniteSpeechForConditionalGeneration(config)
    model.generation_config.eos_token_id = tok.eos_token_id
    # a non-zero modality LoRA on the language model, as the released checkpoints ship one
    lora = LoraConfig(r=4, target_modules=r".*language_model.*\.(q_proj|v_proj)", init_lora_weights=False)
    return model, tok, lambda: get_peft_model(model, lora)


def save_granite(path):
    """Laid out like the release: base weights, tokenizer, preprocessor config, and the
    modality LoRA's adapter_config.json + adapter_model.safetensors in the same directory."""
    model, tok, with_lora = granite_parts()
    model.save_pretrained(path)
    tok.save_pretrained(path)
    (path / "preprocessor_config.json").write_text(json.dumps({
        "feature_extractor_type": "GraniteSpeechFeatureExtractor", "sampling_rate": 16000,
        "melspec_kwargs": {"sample_rate": 16000, "n_fft": 512, "win_length": 400, "hop_length": 160,
                           "n_mels": 80}, "projector_window_size": 15, "projector_downsample_rate": 5}))
    peft_model = with_lora()
    peft_model.save_pretrained(path)
    return peft_model


@pytest.fixture
def trls_advantages(monkeypatch):
    """{"trl": [N]}: the GRPO advantages TRL's own GRPOTrainer gave the last batch it scored,
    recorded before LeafGRPOTrainer replaces them."""
    from trl import GRPOTrainer

    seen = {}
    original = GRPOTrainer._generate_and_score_completions

    def recording(self, inputs):
        out = original(self, inputs)
        seen["trl"] = out["advantages"].clone()
        return out

    monkeypatch.setattr(GRPOTrainer, "_generate_and_score_completions", recording)
    return seen


def assert_trls_grpo(batch, trls):
    """Every completion token of ``batch`` (LeafGRPOTrainer's scored batch) has its response's TRL
    GRPO advantage (TRL adds 1e-4 to the std), padding 0; the rewards differed."""
    leaf, mask = batch["advantages"], batch["completion_mask"].bool()
    assert leaf.dim() == 2 and leaf.shape == mask.shape and not leaf[~mask].any()
    want = trls["trl"][:, None].expand_as(leaf)
    torch.testing.assert_close(leaf[mask], want[mask], atol=1e-3, rtol=1e-3)
    assert trls["trl"].abs().max() > 0.1  # rewards differed, so the comparison has content


def torchrun_two(script_text, tmp_path):
    """Run ``script_text`` (Python whose main process writes ``tmp_path / "result.json"``) under
    torchrun with 2 CPU processes (gloo, even where there is a GPU); returns that JSON."""
    import os
    import subprocess
    import sys

    script = tmp_path / "two.py"
    script.write_text(script_text)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(script)],
                         capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads((tmp_path / "result.json").read_text())
