"""leafrl.audio.features against an independent numpy reference (transformers.audio_utils).

The reference is the computation of
transformers/models/granite_speech/feature_extraction_granite_speech.py
(``_extract_mel_spectrograms``: torchaudio MelSpectrogram defaults, log10, 8-decade floor,
pairs of frames) rebuilt from numpy blocks, one clip at a time, in float64.
"""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from transformers.audio_utils import mel_filter_bank, spectrogram, window_function
from transformers.models.granite_speech.feature_extraction_granite_speech import GraniteSpeechFeatureExtractor

from leafrl.audio.features import mel_filterbank, num_audio_features, stacked_log_mel

SR, N_FFT, WIN, HOP, N_MELS = 16000, 512, 400, 160, 80


def reference_log_mel(batch: np.ndarray, periodic: bool = True) -> np.ndarray:
    """[N, S] float64 -> [N, F // 2, 2 * N_MELS], one clip at a time with numpy."""
    filters = mel_filter_bank(num_frequency_bins=N_FFT // 2 + 1, num_mel_filters=N_MELS, min_frequency=0,
                              max_frequency=SR / 2, sampling_rate=SR, norm=None, mel_scale="htk")
    # hann of 400 zero-padded to 512, centred: offset (512 - 400) // 2 = 56, as torch.stft pads it
    window = window_function(WIN, "hann", frame_length=N_FFT, periodic=periodic)
    logmel = np.stack([
        spectrogram(clip, window, frame_length=N_FFT, hop_length=HOP, power=2.0, center=True,
                    pad_mode="reflect", mel_filters=filters, mel_floor=1e-10, log_mel="log10",
                    dtype=np.float64).T  # [F, M]
        for clip in batch])
    logmel = np.maximum(logmel, logmel.max(axis=(1, 2), keepdims=True) - 8.0) / 4 + 1
    frames = logmel.shape[1] - logmel.shape[1] % 2
    return logmel[:, :frames].reshape(len(batch), frames // 2, 2 * N_MELS)


@pytest.fixture(scope="module")
def padded_batch() -> np.ndarray:
    """Row 0: a 1.5 s sine sweep 100 Hz -> 7 kHz; row 1: 17123 samples of noise, zero-padded."""
    t = np.arange(24000) / SR
    sweep = 0.5 * np.sin(2 * np.pi * (100 * t + (7000 - 100) / (2 * 1.5) * t**2))
    noise = np.random.default_rng(0).standard_normal(17123) * 0.1
    batch = np.zeros((2, 24000))
    batch[0], batch[1, :17123] = sweep, noise
    return batch


def test_filterbank_matches_transformers_htk_filters():
    expected = mel_filter_bank(N_FFT // 2 + 1, N_MELS, 0, SR / 2, SR, norm=None, mel_scale="htk")
    got = mel_filterbank(SR, N_FFT, N_MELS)
    assert got.shape == (257, 80) and got.dtype == torch.float32
    np.testing.assert_allclose(got.double().numpy(), expected, atol=1e-5)


def test_window_padding_convention_matches_torch_stft():
    # torch.stft centres a short window inside n_fft; transformers' window_function does too
    torch_window = torch.nn.functional.pad(torch.hann_window(WIN, periodic=True, dtype=torch.float64),
                                           ((N_FFT - WIN) // 2, (N_FFT - WIN) // 2))
    np.testing.assert_allclose(torch_window.numpy(), window_function(WIN, "hann", frame_length=N_FFT),
                               atol=1e-12)


def test_stacked_log_mel_matches_numpy_reference(padded_batch):
    got = stacked_log_mel(torch.tensor(padded_batch, dtype=torch.float32))
    # F = 1 + 24000 // 160 = 151 frames, odd: the last is dropped -> 75 pairs of 80 mels
    assert got.shape == (2, 75, 160) and got.dtype == torch.float32
    np.testing.assert_allclose(got.double().numpy(), reference_log_mel(padded_batch), rtol=1e-4, atol=1e-4)


def test_the_tolerance_catches_a_symmetric_window(padded_batch):
    # periodic vs symmetric Hann is the subtlest convention here: it must not pass unnoticed
    got = stacked_log_mel(torch.tensor(padded_batch, dtype=torch.float32)).double().numpy()
    assert np.abs(got - reference_log_mel(padded_batch, periodic=False)).max() > 1e-2


def test_even_frame_count_keeps_every_frame():
    # S = 1440: F = 1 + 1440 // 160 = 10 frames (even) -> 5 pairs
    audio = torch.randn(1, 1440, generator=torch.Generator().manual_seed(1))
    assert stacked_log_mel(audio).shape == (1, 5, 160)


def test_floor_is_eight_decades_below_each_clips_own_peak():
    # row 0 loud, row 1 quiet: after the clamp every value lies in [peak - 8, peak] / 4 + 1,
    # i.e. max - min <= 2, and the top value of each row is its own peak / 4 + 1
    gen = torch.Generator().manual_seed(2)
    audio = torch.stack([torch.randn(4000, generator=gen), 1e-3 * torch.randn(4000, generator=gen)])
    out = stacked_log_mel(audio)
    spread = out.amax(dim=(1, 2)) - out.amin(dim=(1, 2))
    assert bool((spread <= 2.0 + 1e-6).all())
    assert out[0].max() > out[1].max() + 1.0  # 60 dB quieter = 6 decades = 1.5 after / 4


@pytest.mark.parametrize(("audio", "kwargs", "culprit"), [
    (np.zeros((2, 1000)), {}, "audio"),  # numpy, not a tensor
    (torch.zeros(1000), {}, "audio"),  # 1-D
    (torch.zeros(2, 1000, dtype=torch.int16), {}, "audio"),  # not float
    (torch.zeros(2, 256), {}, "audio"),  # too short for reflect padding (needs > 256)
    (torch.zeros(2, 1000), {"n_mels": 0}, "n_mels"),
    (torch.zeros(2, 1000), {"hop_length": 1.5}, "hop_length"),
    (torch.zeros(2, 1000), {"win_length": 600}, "win_length"),
])
def test_stacked_log_mel_rejects_bad_input(audio, kwargs, culprit):
    with pytest.raises(ValueError, match=culprit):
        stacked_log_mel(audio, **kwargs)


@pytest.mark.parametrize(("length", "expected"), [
    # F = S // 160 + 1 mel frames; E = F // 2; blocks = ceil(E / 15); tokens = blocks * (15 // 5 = 3)
    (0, 0),  # F = 1, E = 0, blocks 0 -> 0
    (160, 3),  # F = 2, E = 1, blocks 1 -> 3
    (4800, 3),  # F = 30 + 1 = 31, E = 15, blocks 1 -> 3 (a full block)
    (4960, 6),  # F = 31 + 1 = 32, E = 16, blocks 2 -> 6 (one frame into the next block)
    (16000, 12),  # 1 s: F = 101, E = 50, blocks ceil(50 / 15) = 4 -> 12
    (480000, 300),  # 30 s: F = 3001, E = 1500, blocks 100 -> 300
])
def test_num_audio_features_by_hand(length, expected):
    assert num_audio_features([length]) == [expected]


def test_num_audio_features_other_parameters_and_batches():
    # hop 320, window 10, rate 2: S = 16000 -> F = 51, E = 25, blocks ceil(25 / 10) = 3,
    # tokens 3 * (10 // 2 = 5) = 15; S = 3200 -> F = 11, E = 5, blocks 1 -> 5
    assert num_audio_features([16000, 3200], hop_length=320, projector_window_size=10,
                              projector_downsample_rate=2) == [15, 5]
    assert num_audio_features(np.array([160, 16000])) == [3, 12]  # numpy ints are fine


@pytest.mark.parametrize(("lengths", "kwargs", "culprit"), [
    ([16000, -1], {}, r"lengths\[1\]"),
    ([16000.0], {}, r"lengths\[0\]"),
    ([16000], {"hop_length": 0}, "hop_length"),
    ([16000], {"projector_window_size": -15}, "projector_window_size"),
])
def test_num_audio_features_rejects_bad_input(lengths, kwargs, culprit):
    with pytest.raises(ValueError, match=culprit):
        num_audio_features(lengths, **kwargs)


def test_num_audio_features_equals_the_transformers_method():
    # the extractor cannot be built without torchaudio, but this method needs only three fields
    fields = SimpleNamespace(melspec_kwargs={"hop_length": 160}, projector_window_size=15,
                             projector_downsample_rate=5)
    lengths = list(range(0, 20000, 37)) + [480000, 480001]
    expected = GraniteSpeechFeatureExtractor._get_num_audio_features(fields, lengths)
    assert num_audio_features(lengths) == expected
