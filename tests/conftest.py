"""Shared fixtures: a tiny built-in SALLM (a real Qwen2-Audio-class model, random weights)."""

import numpy as np
import pytest

from leafrl.models.tiny import TinySize

TEXTS = ["drei rote Äpfel und ein blaues Auto", "there are three apples on the table",
         "Translate the English speech into German.", "How many cars are there?"] * 20
TINY = TinySize(vocab_size=320, n_mels=32, window_seconds=3, audio_dim=32, audio_layers=1,
                audio_heads=2, text_dim=32, text_layers=2, text_heads=2, text_kv_heads=1,
                max_positions=512)


@pytest.fixture(scope="session")
def tiny_sallm():
    """(model, adapter) of a tiny SALLM, in eval mode."""
    from leafrl.models.tiny import new_tiny_sallm

    model, adapter = new_tiny_sallm(TEXTS, TINY)
    return model.eval(), adapter


def noise(seconds: float, rate: int = 16000, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * rate))).astype(np.float32)
