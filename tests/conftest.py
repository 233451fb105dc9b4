"""Shared fixtures: a tiny built-in SALLM (a real Qwen2-Audio-class model, random weights)."""

import json

import numpy as np
import pytest

from leafrl.models.tiny import TinyConfig

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
