"""Audio for speech-aware LLMs: decoding and resampling (``io``) and encoder features (``features``)."""

from leafrl.audio.features import mel_filterbank, num_audio_features, stacked_log_mel
from leafrl.audio.io import AudioError, clip_seconds, duration_seconds, load_audio, resample, to_mono, write_audio

__all__ = [
    "AudioError",
    "clip_seconds",
    "duration_seconds",
    "load_audio",
    "mel_filterbank",
    "num_audio_features",
    "resample",
    "stacked_log_mel",
    "to_mono",
    "write_audio",
]
