"""Audio in and out: decode any source a dataset row may hold into float32 mono at one rate.

``load_audio`` is the one entry point the data layer uses. It accepts a path, raw file bytes,
an HF ``datasets.Audio(decode=False)`` dict, a decoded ``{"array", "sampling_rate"}`` dict or
an ``(array, rate)`` tuple, and returns a 1-D float32 array at ``sampling_rate``. Every failure
is an ``AudioError`` that names the example id and the file, so a bad row in a 100k-row
manifest can be found. numpy + soundfile (libsndfile: WAV/FLAC/OGG/MP3) + soxr; no torch.

A path the operating system will not read is named with the cause (``_files.path_problem``:
missing, a directory, a symlink loop, no permission). A WAV whose data chunk is cut short (a
download cut off) is used as far as it goes, with one warning per file and process naming how
much is missing.

Notation used for array shapes:
    S samples, C channels (soundfile's layout is [S, C]).
"""

from __future__ import annotations

import os
import uuid
from io import BytesIO
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf
import soxr

from leafrl._files import path_problem
from leafrl.errors import UserError

TOO_LONG = ("error", "trim")
# suffix -> (libsndfile format, subtype) for write_audio
WRITE_FORMATS = {".wav": ("WAV", "PCM_16"), ".flac": ("FLAC", "PCM_16"), ".ogg": ("OGG", "VORBIS")}
_CHECKED: set[tuple] = set()  # the files already checked for a cut-short WAV in this process


class AudioError(UserError):
    """Audio that cannot be used; the message names the example id and/or the file."""


def _where(example_id: str | None, name: str | None) -> str:
    """Name the culprit for an error message: "example 'x' (a.wav)", "example 'x'" or "'a.wav'"."""
    if example_id is None:
        return repr(name) if name is not None else "audio"
    return f"example {example_id!r}" + (f" ({name})" if name is not None else "")


def _check_rate(name: str, rate: object) -> int:
    """Return ``rate`` as an int, or raise ValueError naming the argument."""
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or rate <= 0:
        raise ValueError(f"{name} must be a positive int, got {rate!r}")
    return int(rate)


def to_mono(audio: np.ndarray) -> np.ndarray:
    """Downmix ``audio`` [S] or [S, C] to [S] by the mean over channels.

    A non-empty 2-D array with more channels than samples is rejected: it is almost surely
    [C, S] (channels first, as torch audio libraries return it).
    """
    audio = np.asarray(audio)
    if audio.ndim == 1:
        return audio
    if audio.ndim != 2:
        raise ValueError(f"audio: expected [S] or [S, C], got shape {list(audio.shape)}")
    S, C = audio.shape
    if 0 < S < C:
        raise ValueError(f"audio: shape {list(audio.shape)} has more channels than samples; "
                         "expected [S, C] (samples, channels): transpose a [C, S] array")
    return audio.mean(axis=1)  # float32 stays float32


def _to_float(audio: np.ndarray) -> np.ndarray:
    """Integer PCM -> float32 in [-1, 1] (int16 / 32768, uint8 (x - 128) / 128); floats -> float32."""
    if audio.dtype.kind == "f":
        return audio.astype(np.float32, copy=False)
    if audio.dtype.kind in "iu":
        info = np.iinfo(audio.dtype)
        half = 2.0 ** (info.bits - 1)  # int16: 32768
        offset = 0.0 if audio.dtype.kind == "i" else half
        return ((audio.astype(np.float64) - offset) / half).astype(np.float32)
    raise ValueError(f"audio: expected a float or integer PCM array, got dtype {audio.dtype}")


def resample(audio: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    """Resample float ``audio`` [S] or [S, C] from ``orig_rate`` to ``target_rate`` (soxr, HQ).

    Returns float32 [round(S * target_rate / orig_rate)] (or [.., C]); the input itself
    (as float32) when the rates are equal.
    """
    orig_rate, target_rate = _check_rate("orig_rate", orig_rate), _check_rate("target_rate", target_rate)
    audio = np.asarray(audio)
    if audio.dtype.kind != "f":
        raise ValueError(f"audio: resample expects a float array, got dtype {audio.dtype}")
    audio = audio.astype(np.float32, copy=False)
    if orig_rate == target_rate:
        return audio
    return soxr.resample(audio, orig_rate, target_rate, quality="HQ").astype(np.float32, copy=False)


def duration_seconds(audio: np.ndarray, sampling_rate: int) -> float:
    """Seconds of ``audio`` [S] or [S, C] at ``sampling_rate``."""
    return np.shape(audio)[0] / _check_rate("sampling_rate", sampling_rate)


def _wav_shortfall(f: BinaryIO) -> tuple[float, float] | None:
    """(seconds the header promises, seconds the file holds) when ``f`` is a RIFF/WAVE file whose
    data chunk is cut short; None otherwise, and for a streamed header (data size 0 or 0xFFFFFFFF:
    the writer could not seek back to fill it in). Reads the chunk headers only."""
    size = f.seek(0, os.SEEK_END)
    f.seek(0)
    head = f.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:] != b"WAVE":
        return None
    byte_rate, pos = 0, 12
    while True:
        f.seek(pos)
        chunk = f.read(20)  # a chunk's name and size, and the fmt chunk up to its byte rate
        if len(chunk) < 8:
            return None
        name, length = chunk[:4], int.from_bytes(chunk[4:8], "little")
        if name == b"fmt " and len(chunk) == 20:
            byte_rate = int.from_bytes(chunk[16:20], "little")
        if name == b"data":
            held = size - pos - 8
            if length in (0, 0xFFFFFFFF) or length <= held or not byte_rate:
                return None
            return length / byte_rate, held / byte_rate
        pos += 8 + length + (length & 1)  # chunks are padded to an even size


def _warn_if_cut(source: str | os.PathLike | BytesIO, where: str) -> None:
    """Warn when ``source`` is a WAV cut short (each file checked once per process and version): soundfile
    reads as many samples as the file holds and says nothing, so a cut download would train on
    part of a clip."""
    if isinstance(source, BytesIO):
        key = (where, source.getbuffer().nbytes)
    else:
        info = os.stat(source)
        key = (os.path.abspath(source), info.st_size, info.st_mtime_ns)  # a file changed since is checked again
    if key in _CHECKED:
        return
    _CHECKED.add(key)
    if isinstance(source, BytesIO):
        found = _wav_shortfall(source)
        source.seek(0)
    else:
        with open(source, "rb") as f:
            found = _wav_shortfall(f)
    if found is not None:
        from leafrl.tracking import warn

        warn(f"{where}: the WAV header promises {found[0]:.2f} s, the file holds {found[1]:.2f} s "
             "(cut short?): using what is there")


def _opened(source: str | os.PathLike | bytes, where: str) -> str | os.PathLike | BytesIO:
    """What soundfile opens for a path or file bytes; AudioError if the path cannot be read.
    Warns when it is a WAV cut short (``_warn_if_cut``)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = BytesIO(bytes(source))
    elif (problem := path_problem(source)) is not None:
        raise AudioError(f"{where}: file {problem}")
    _warn_if_cut(source, where)
    return source


def _read_file(source: str | os.PathLike | bytes, where: str) -> tuple[np.ndarray, int]:
    """Decode a path or file bytes with soundfile -> (float32 [S, C], rate)."""
    data = _opened(source, where)
    try:
        return sf.read(data, dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError, EOFError) as err:  # corrupt / unsupported / truncated
        raise AudioError(f"{where}: cannot decode audio: {err}") from err


def _encoded(source: object, example_id: str | None) -> tuple[str | os.PathLike | bytes, str] | None:
    """(a path or file bytes, its name for error messages) when ``source`` is an encoded file:
    a path, bytes, or an HF ``{"bytes", "path"}`` dict (bytes used when present); else None."""
    if isinstance(source, (str, os.PathLike)):
        return source, _where(example_id, os.fspath(source))
    if isinstance(source, (bytes, bytearray, memoryview)):
        return source, _where(example_id, "<bytes>")
    if isinstance(source, dict) and "array" not in source and ("bytes" in source or "path" in source):
        where = _where(example_id, source.get("path") or "<bytes>")
        encoded = source.get("bytes") if source.get("bytes") is not None else source.get("path")
        if encoded is None:
            raise AudioError(f"{where}: audio dict has neither 'bytes' nor 'path'")
        return encoded, where
    return None


def _decode(source: object, example_id: str | None) -> tuple[np.ndarray, int, str]:
    """Turn any supported ``source`` into (array [S] or [S, C], rate, name for error messages)."""
    file = _encoded(source, example_id)
    if file is not None:
        return (*_read_file(*file), file[1])
    if isinstance(source, tuple) and len(source) == 2:
        where = _where(example_id, "<array>")
        return np.asarray(source[0]), _rate_of(source[1], where), where
    if isinstance(source, dict) and "array" in source:
        where = _where(example_id, source.get("path") or "<array>")
        return np.asarray(source["array"]), _rate_of(source.get("sampling_rate"), where), where
    what = f"dict with keys {sorted(map(str, source))}" if isinstance(source, dict) else type(source).__name__
    raise AudioError(f"{_where(example_id, None)}: unknown audio source {what}; expected a path, file bytes, "
                     "{'bytes', 'path'}, {'array', 'sampling_rate'} or (array, rate)")


def clip_seconds(source: object, *, example_id: str | None = None) -> float:
    """Length in seconds of any ``source`` that ``load_audio`` accepts. An encoded file (path,
    bytes or ``{"bytes", "path"}`` dict) is measured from its header, without decoding it."""
    file = _encoded(source, example_id)
    if file is None:
        raw, rate, _ = _decode(source, example_id)
        return duration_seconds(raw, rate)
    encoded, where = file
    try:
        info = sf.info(_opened(encoded, where))
    except (sf.SoundFileError, RuntimeError) as err:
        raise AudioError(f"{where}: cannot read the audio header: {err}") from err
    return info.frames / info.samplerate


def _rate_of(rate: object, where: str) -> int:
    """The sampling rate of an in-memory source, or AudioError naming the example."""
    try:
        return _check_rate("sampling_rate", rate)
    except ValueError as err:
        raise AudioError(f"{where}: {err}") from None


def _check_content(audio: np.ndarray, where: str) -> None:
    """Raise AudioError on empty or non-finite ``audio`` [S]."""
    if audio.shape[0] == 0:
        raise AudioError(f"{where}: audio is empty (0 samples)")
    bad = ~np.isfinite(audio)
    if bad.any():
        raise AudioError(f"{where}: audio has {int(bad.sum())} NaN/inf samples (first at sample "
                         f"{int(np.argmax(bad))})")


def load_audio(source: object, *, sampling_rate: int, example_id: str | None = None,
               max_seconds: float | None = None, too_long: str = "error") -> np.ndarray:
    """Decode ``source`` to float32 mono [S] at ``sampling_rate``.

    Args:
        source: a path (str / Path) to WAV/FLAC/OGG/MP3; raw file bytes; ``{"bytes", "path"}``
            as ``datasets.Audio(decode=False)`` yields (bytes used when present, else path);
            ``{"array", "sampling_rate"}``; or ``(array, rate)``. Arrays are [S] or [S, C];
            integer PCM is scaled to [-1, 1]; channels are averaged.
        example_id: named in every error message.
        max_seconds: longest audio accepted; longer audio raises (``too_long="error"``) or is
            cut to its first ``round(max_seconds * sampling_rate)`` samples (``"trim"``).

    Shapes:
        returns [S'] float32, S' = round(S * sampling_rate / source_rate) (or the trimmed length).
    """
    sampling_rate = _check_rate("sampling_rate", sampling_rate)
    if too_long not in TOO_LONG:
        raise ValueError(f"too_long must be one of {TOO_LONG}, got {too_long!r}")
    if max_seconds is not None and not max_seconds > 0:
        raise ValueError(f"max_seconds must be > 0 or None, got {max_seconds!r}")
    raw, rate, where = _decode(source, example_id)
    try:
        audio = to_mono(_to_float(raw))
    except ValueError as err:
        raise AudioError(f"{where}: {err}") from None
    _check_content(audio, where)
    seconds = duration_seconds(audio, rate)
    if max_seconds is not None and seconds > max_seconds and too_long == "error":
        raise AudioError(f"{where}: audio is {seconds:.3f} s long, over the limit max_seconds={max_seconds}")
    audio = resample(audio, rate, sampling_rate)
    if max_seconds is not None and seconds > max_seconds:  # too_long == "trim"
        audio = audio[: round(max_seconds * sampling_rate)]
    return np.ascontiguousarray(audio)


def write_audio(path: str | os.PathLike, audio: np.ndarray, sampling_rate: int) -> None:
    """Write float ``audio`` [S] or [S, C] to ``path`` by suffix (.wav PCM_16, .flac, .ogg).

    Atomic: the file is written next to ``path`` under a temporary name, then renamed over it;
    parent directories are created. Samples must be finite and within [-1, 1] (nothing is
    clipped silently).
    """
    path = Path(path)
    sampling_rate = _check_rate("sampling_rate", sampling_rate)
    if path.suffix.lower() not in WRITE_FORMATS:
        raise ValueError(f"path: cannot write {path}: suffix must be one of {sorted(WRITE_FORMATS)}")
    audio = np.asarray(audio)
    if audio.dtype.kind != "f" or audio.ndim not in (1, 2):
        raise ValueError(f"audio: expected a float [S] or [S, C] array for {path}, got dtype "
                         f"{audio.dtype} shape {list(audio.shape)}")
    if not np.isfinite(audio).all() or (audio.size and np.abs(audio).max() > 1.0):
        raise ValueError(f"audio: samples for {path} must be finite and within [-1, 1] "
                         f"(peak {np.abs(audio).max() if audio.size else 0.0})")
    fmt, subtype = WRITE_FORMATS[path.suffix.lower()]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        sf.write(tmp, audio, sampling_rate, format=fmt, subtype=subtype)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
