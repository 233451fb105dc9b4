"""Speech-encoder input features in plain torch (no torchaudio).

``stacked_log_mel`` reproduces, number for number, the log-mel features of the transformers
feature extractor for IBM's speech LLM family (``_extract_mel_spectrograms``), which needs
torchaudio: ``torchaudio.transforms.MelSpectrogram`` with its defaults, then a per-example
dynamic-range clamp and stacking of frame pairs. ``num_audio_features`` is the same
extractor's ``_get_num_audio_features`` (audio tokens after the projector). The model family
in ``leafrl.models`` binds the family's parameters; nothing here is specific to one model.

Notation used for tensor shapes:
    N rows (audio clips, right-padded), S samples, F STFT frames = 1 + S // hop_length,
    M mel bins (n_mels).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral

import torch

from leafrl._validate import check_tensor


def _check_positive_ints(**values: object) -> None:
    """Raise ValueError naming the first argument that is not a positive int."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, Integral) or value <= 0:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


def _hz_to_mel(hz: float) -> float:
    """HTK mel scale (torchaudio ``mel_scale="htk"``)."""
    return 2595.0 * math.log10(1.0 + hz / 700.0)


def mel_filterbank(sampling_rate: int, n_fft: int, n_mels: int,
                   device: torch.device | str = "cpu") -> torch.Tensor:
    """Triangular HTK mel filters over the FFT bins: torchaudio's ``melscale_fbanks`` with
    f_min=0, f_max=sampling_rate // 2, norm=None, mel_scale="htk" (float32, like torchaudio).

    The triangles are linear in Hz, evaluated on the linear grid of the FFT bin frequencies;
    their corners are equally spaced in mel.

    Shapes:
        returns [n_fft // 2 + 1, n_mels]
    """
    f_max = float(sampling_rate // 2)
    bin_hz = torch.linspace(0, sampling_rate // 2, n_fft // 2 + 1, device=device)  # [n_fft//2+1]
    mel_pts = torch.linspace(_hz_to_mel(0.0), _hz_to_mel(f_max), n_mels + 2, device=device)
    corner_hz = 700.0 * (10.0 ** (mel_pts / 2595.0) - 1.0)  # [M + 2]
    width = corner_hz[1:] - corner_hz[:-1]  # [M + 1]
    slopes = corner_hz.unsqueeze(0) - bin_hz.unsqueeze(1)  # [n_fft//2+1, M + 2]
    rising = -slopes[:, :-2] / width[:-1]  # 0 at the left corner, 1 at the centre
    falling = slopes[:, 2:] / width[1:]  # 1 at the centre, 0 at the right corner
    return torch.clamp(torch.minimum(rising, falling), min=0.0)


def _power_spectrogram(audio: torch.Tensor, n_fft: int, win_length: int,
                       hop_length: int) -> torch.Tensor:
    """|STFT|^2 with a periodic Hann window (centred in n_fft), reflect-padded centred frames.

    Shapes:
        audio [N, S] -> [N, n_fft // 2 + 1, F]
    """
    window = torch.hann_window(win_length, periodic=True, device=audio.device, dtype=audio.dtype)
    spec = torch.stft(audio, n_fft, hop_length=hop_length, win_length=win_length, window=window,
                      center=True, pad_mode="reflect", normalized=False, onesided=True,
                      return_complex=True)
    return spec.abs().pow(2.0)


def stacked_log_mel(audio: torch.Tensor, *, sampling_rate: int = 16000, n_fft: int = 512,
                    win_length: int = 400, hop_length: int = 160, n_mels: int = 80) -> torch.Tensor:
    """Log-mel features with a per-clip 8-decade floor, consecutive frames stacked in pairs.

    Steps (as the extractor does, on float32):
        mel = power spectrogram @ mel filters                 # [N, F, M]
        logmel = log10(max(mel, 1e-10))
        logmel = max(logmel, max_over(F, M)(logmel) - 8) / 4 + 1   (per clip, padding included)
        drop the last frame if F is odd; [N, F, M] -> [N, F // 2, 2 * M]

    Args:
        audio: float [N, S], right-padded with zeros (the max is taken over padded frames
            too, exactly like the extractor). Cast to float32. S must exceed n_fft // 2
            (reflect padding).

    Shapes:
        audio [N, S] -> [N, F // 2, 2 * n_mels], F = 1 + S // hop_length
    """
    check_tensor("audio", audio, "float", ndim=2)
    _check_positive_ints(sampling_rate=sampling_rate, n_fft=n_fft, win_length=win_length,
                         hop_length=hop_length, n_mels=n_mels)
    if win_length > n_fft:
        raise ValueError(f"win_length ({win_length}) must be <= n_fft ({n_fft})")
    N, S = audio.shape
    if S <= n_fft // 2:
        raise ValueError(f"audio: needs more than n_fft // 2 = {n_fft // 2} samples per row "
                         f"(reflect padding), got shape {[N, S]}")
    audio = audio.float()
    power = _power_spectrogram(audio, n_fft, win_length, hop_length)  # [N, n_fft//2+1, F]
    mel = power.transpose(-1, -2) @ mel_filterbank(sampling_rate, n_fft, n_mels, audio.device)  # [N, F, M]
    logmel = mel.clamp(min=1e-10).log10()
    peak = logmel.amax(dim=(-2, -1), keepdim=True)  # [N, 1, 1]
    logmel = torch.maximum(logmel, peak - 8.0) / 4 + 1
    F = logmel.shape[1]
    return logmel[:, : F - F % 2].reshape(N, F // 2, 2 * n_mels)  # [N, F // 2, 2M]


def num_audio_features(lengths: Sequence[int], *, hop_length: int = 160, projector_window_size: int = 15,
                       projector_downsample_rate: int = 5) -> list[int]:
    """Audio tokens per clip after the windowed projector, from raw sample counts.

    Per clip of S samples:
        mel frames  F = S // hop_length + 1
        encoder     E = F // 2                       (frames stacked in pairs)
        blocks      ceil(E / projector_window_size)
        tokens      blocks * (projector_window_size // projector_downsample_rate)

    Shapes:
        lengths [N] -> list of N ints
    """
    _check_positive_ints(hop_length=hop_length, projector_window_size=projector_window_size,
                         projector_downsample_rate=projector_downsample_rate)
    tokens_per_block = projector_window_size // projector_downsample_rate
    out = []
    for i, length in enumerate(lengths):
        if isinstance(length, bool) or not isinstance(length, Integral) or length < 0:
            raise ValueError(f"lengths[{i}] must be a non-negative int, got {length!r}")
        encoder_frames = (int(length) // hop_length + 1) // 2
        out.append(-(-encoder_frames // projector_window_size) * tokens_per_block)  # ceil division
    return out
