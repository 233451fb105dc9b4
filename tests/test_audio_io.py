"""leafrl.audio.io: every source kind decodes to the same float32 mono samples, and every bad
input raises an AudioError that names the example (and the file). Audio is generated here."""

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from leafrl.audio import io as audio_io
from leafrl.audio.io import AudioError, clip_seconds, duration_seconds, load_audio, resample, to_mono, write_audio

SR = 16000


def tone(seconds: float = 1.0, hz: float = 440.0, rate: int = SR, amp: float = 0.5) -> np.ndarray:
    """A float32 sine [round(seconds * rate)]."""
    t = np.arange(round(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def peak_hz(audio: np.ndarray, rate: int) -> float:
    """Frequency of the largest FFT bin."""
    return float(np.argmax(np.abs(np.fft.rfft(audio))) * rate / len(audio))


@pytest.fixture
def wav(tmp_path) -> tuple[Path, np.ndarray]:
    """A 1 s 440 Hz mono WAV at 16 kHz and the samples it holds (PCM_16 quantized)."""
    path = tmp_path / "tone.wav"
    write_audio(path, tone(), SR)
    return path, sf.read(path, dtype="float32")[0]


# ---------------------------------------------------------------- formats and source kinds

@pytest.mark.parametrize("suffix", [".wav", ".flac"])
def test_lossless_round_trip(tmp_path, suffix):
    x = tone()
    write_audio(tmp_path / f"a{suffix}", x, SR)
    y = load_audio(tmp_path / f"a{suffix}", sampling_rate=SR)
    assert y.dtype == np.float32 and y.shape == (SR,)
    np.testing.assert_allclose(y, x, atol=1 / 32768 + 1e-6)  # PCM_16: half a step of 2 / 65536 + rounding


def test_lossy_round_trips_keep_length_pitch_and_level(tmp_path):
    x = tone()
    write_audio(tmp_path / "a.ogg", x, SR)
    sf.write(tmp_path / "a.mp3", x, SR, format="MP3")  # write_audio does not write MP3; load_audio reads it
    for name in ("a.ogg", "a.mp3"):
        y = load_audio(tmp_path / name, sampling_rate=SR)
        assert y.dtype == np.float32 and y.ndim == 1 and abs(len(y) - SR) <= 1152, name  # <= 1 MP3 frame
        assert abs(peak_hz(y, SR) - 440.0) <= 1.0, name
        assert abs(np.sqrt(np.mean(y**2)) - 0.5 / np.sqrt(2)) < 0.02, name


def test_every_source_kind_gives_the_same_samples(wav):
    path, expected = wav
    data = path.read_bytes()
    sources = {
        "str": str(path),
        "Path": path,
        "bytes": data,
        "hf bytes": {"bytes": data, "path": "elsewhere/not-read.wav"},  # bytes win over path
        "hf path": {"bytes": None, "path": str(path)},
        "decoded dict": {"array": expected.astype(np.float64), "sampling_rate": SR, "path": str(path)},
        "tuple": (expected, SR),
    }
    for kind, source in sources.items():
        got = load_audio(source, sampling_rate=SR, example_id=kind)
        assert got.dtype == np.float32 and got.flags["C_CONTIGUOUS"], kind
        np.testing.assert_array_equal(got, expected, err_msg=kind)


def test_stereo_file_is_downmixed_by_mean(tmp_path):
    left, right = tone(hz=440.0, amp=0.4), tone(hz=1000.0, amp=0.2)
    write_audio(tmp_path / "stereo.flac", np.stack([left, right], axis=1), SR)  # [S, 2]
    got = load_audio(tmp_path / "stereo.flac", sampling_rate=SR)
    assert got.shape == (SR,)
    np.testing.assert_allclose(got, (left + right) / 2, atol=2 / 32768)


def test_integer_pcm_is_scaled_to_unit_range():
    # int16: x / 32768 -> -32768 -> -1, 16384 -> 0.5, 32767 -> 32767 / 32768
    pcm16 = np.array([-32768, 0, 16384, 32767], dtype=np.int16)
    np.testing.assert_array_equal(load_audio((pcm16, SR), sampling_rate=SR),
                                  np.array([-1.0, 0.0, 0.5, 32767 / 32768], dtype=np.float32))
    # uint8 is offset binary: (x - 128) / 128 -> 0 -> -1, 128 -> 0, 192 -> 0.5
    pcm8 = np.array([0, 128, 192], dtype=np.uint8)
    np.testing.assert_array_equal(load_audio((pcm8, SR), sampling_rate=SR), [-1.0, 0.0, 0.5])
    # stereo int32 [S=2, C=2]: scale by 2**31, then mean: (0.5 + -0.25) / 2 = 0.125, (0 + 0.5) / 2
    pcm32 = np.array([[2**30, -(2**29)], [0, 2**30]], dtype=np.int32)
    np.testing.assert_array_equal(load_audio((pcm32, SR), sampling_rate=SR), [0.125, 0.25])


def test_to_mono_rejects_channels_first():
    assert to_mono(np.ones((5, 2), np.float32)).shape == (5,)
    with pytest.raises(ValueError, match=r"\[2, 5\].*transpose"):
        to_mono(np.ones((2, 5), np.float32))


# ---------------------------------------------------------------- resampling and duration

@pytest.mark.parametrize(("n", "expected"), [(22050, 16000), (441, 320), (44100, 32000), (1000, 726)])
def test_resample_length_is_rounded_ratio(n, expected):
    # 16000 / 22050 = 320 / 441: 22050 -> 16000, 441 -> 320, 1000 -> round(725.6) = 726
    out = resample(np.zeros(n, np.float32), 22050, 16000)
    assert out.dtype == np.float32 and out.shape == (expected,)


def test_resample_keeps_the_tone_and_identity_is_exact():
    x = tone(hz=1000.0, rate=22050)
    y = resample(x, 22050, SR)
    interior = slice(200, -200)  # away from the filter's edge transients
    np.testing.assert_allclose(y[interior], tone(hz=1000.0)[interior], atol=1e-3)
    np.testing.assert_array_equal(resample(x.astype(np.float64), SR, SR), x)
    with pytest.raises(ValueError, match="orig_rate"):
        resample(x, 0, SR)
    with pytest.raises(ValueError, match="float"):
        resample(np.zeros(10, np.int16), 22050, SR)


def test_load_audio_resamples_a_file(tmp_path):
    write_audio(tmp_path / "a.wav", tone(hz=440.0, rate=22050), 22050)
    got = load_audio(tmp_path / "a.wav", sampling_rate=SR)
    assert got.shape == (SR,)  # 22050 samples * 320 / 441
    assert abs(peak_hz(got, SR) - 440.0) <= 1.0


def test_clip_seconds_of_every_source_kind(tmp_path):
    path = tmp_path / "a.flac"
    write_audio(path, tone(1.25, rate=22050), 22050)
    data = path.read_bytes()
    sources = {"str": str(path), "Path": path, "bytes": data, "hf path": {"bytes": None, "path": str(path)},
               "hf bytes": {"bytes": data, "path": "elsewhere/not-read.flac"},
               "decoded dict": {"array": tone(1.25, rate=22050), "sampling_rate": 22050},
               "tuple": (np.zeros((27562, 2), np.float32), 22050)}
    for kind, source in sources.items():
        assert clip_seconds(source, example_id=kind) == pytest.approx(27562 / 22050), kind


def test_clip_seconds_names_the_row_of_a_missing_or_bad_file(tmp_path):
    with pytest.raises(AudioError, match="example 'r7'.*not found"):
        clip_seconds(tmp_path / "missing.wav", example_id="r7")
    (tmp_path / "junk.wav").write_bytes(b"not audio at all")
    with pytest.raises(AudioError, match="example 'r8'.*junk.wav.*header"):
        clip_seconds(tmp_path / "junk.wav", example_id="r8")


def test_duration_seconds():
    assert duration_seconds(np.zeros(24000), SR) == 1.5
    assert duration_seconds(np.zeros((8000, 2)), SR) == 0.5


def test_trim_keeps_exactly_max_seconds():
    x = tone(seconds=2.0)
    got = load_audio((x, SR), sampling_rate=SR, max_seconds=1.25, too_long="trim")
    np.testing.assert_array_equal(got, x[:20000])  # 1.25 s * 16000
    # with resampling: 2 s at 22050 trimmed to 1 s at 16 kHz
    source = (tone(seconds=2.0, rate=22050), 22050)
    got = load_audio(source, sampling_rate=SR, max_seconds=1.0, too_long="trim")
    assert got.shape == (SR,)
    # exactly at the limit is not too long
    assert load_audio((x, SR), sampling_rate=SR, max_seconds=2.0).shape == (32000,)


# ---------------------------------------------------------------- writing

def test_write_audio_is_atomic_and_creates_parents(tmp_path, monkeypatch):
    path = tmp_path / "deep" / "er" / "a.wav"
    write_audio(path, tone(), SR)
    assert os.listdir(path.parent) == ["a.wav"]  # no temporary file left behind
    before = path.read_bytes()

    def failing_write(file, *args, **kwargs):
        Path(file).write_bytes(b"half written")
        raise RuntimeError("disk full")

    monkeypatch.setattr(audio_io.sf, "write", failing_write)
    with pytest.raises(RuntimeError, match="disk full"):
        write_audio(path, tone(amp=0.1), SR)
    assert path.read_bytes() == before  # the old file is untouched
    assert os.listdir(path.parent) == ["a.wav"]


@pytest.mark.parametrize(("name", "audio", "culprit"), [
    ("a.mp3", tone(), "suffix"),
    ("a.wav", tone() * 3, r"within \[-1, 1\]"),  # would clip
    ("a.wav", np.full(10, np.nan, np.float32), "finite"),
    ("a.wav", np.zeros(10, np.int16), "float"),
])
def test_write_audio_rejects_bad_input(tmp_path, name, audio, culprit):
    with pytest.raises(ValueError, match=culprit) as info:
        write_audio(tmp_path / name, audio, SR)
    assert name in str(info.value)
    assert not (tmp_path / name).exists()


# ---------------------------------------------------------------- bad inputs: one row per case

def _corrupt(tmp_path):
    return b"RIFF\x00\x00\x00\x00WAVEnot really a wav file" * 4


def _missing(tmp_path):
    return tmp_path / "nope.wav"


def _corrupt_file(tmp_path):
    (tmp_path / "corrupt.flac").write_bytes(b"fLaC" + b"\x00" * 50)
    return tmp_path / "corrupt.flac"


def _empty_file(tmp_path):
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), SR)
    return tmp_path / "empty.wav"


BAD = [
    # (case, source builder, load_audio kwargs, error, substrings the message must contain)
    ("missing file", _missing, {}, AudioError, ["utt-7", "nope.wav", "not found"]),
    ("corrupt bytes", _corrupt, {}, AudioError, ["utt-7", "<bytes>", "cannot decode"]),
    ("corrupt file", _corrupt_file, {}, AudioError, ["utt-7", "corrupt.flac", "cannot decode"]),
    ("hf dict, corrupt bytes", lambda p: {"bytes": b"junk" * 9, "path": "x.wav"}, {}, AudioError,
     ["utt-7", "x.wav"]),
    ("hf dict, nothing", lambda p: {"bytes": None, "path": None}, {}, AudioError, ["utt-7", "neither"]),
    ("empty file", _empty_file, {}, AudioError, ["utt-7", "empty.wav", "0 samples"]),
    ("empty array", lambda p: (np.zeros(0, np.float32), SR), {}, AudioError, ["utt-7", "empty"]),
    ("NaN", lambda p: (np.array([0.0, np.nan, 0.1]), SR), {}, AudioError, ["utt-7", "NaN", "sample 1"]),
    ("inf", lambda p: {"array": np.array([np.inf]), "sampling_rate": SR}, {}, AudioError,
     ["utt-7", "NaN/inf"]),
    ("too long", lambda p: (tone(seconds=2.0), SR), {"max_seconds": 1.5}, AudioError,
     ["utt-7", "2.000 s", "max_seconds=1.5"]),
    ("bare array", lambda p: tone(), {}, AudioError, ["utt-7", "ndarray", "(array, rate)"]),
    ("unknown dict", lambda p: {"audio": 1}, {}, AudioError, ["utt-7", "['audio']"]),
    ("bad rate in tuple", lambda p: (tone(), 0), {}, AudioError, ["utt-7", "sampling_rate"]),
    ("channels first", lambda p: (np.zeros((2, 100), np.float32), SR), {}, AudioError,
     ["utt-7", "transpose"]),
    ("strings", lambda p: (np.array(["a", "b"]), SR), {}, AudioError, ["utt-7", "dtype"]),
    ("bad too_long", lambda p: (tone(), SR), {"too_long": "cut"}, ValueError, ["too_long", "'cut'"]),
    ("bad sampling_rate", lambda p: (tone(), SR), {"sampling_rate": 0}, ValueError, ["sampling_rate"]),
    ("bad max_seconds", lambda p: (tone(), SR), {"max_seconds": -1.0}, ValueError, ["max_seconds"]),
]


@pytest.mark.parametrize(("case", "build", "kwargs", "error", "needles"), BAD, ids=[row[0] for row in BAD])
def test_bad_input_raises_naming_the_culprit(tmp_path, case, build, kwargs, error, needles):
    kwargs = {"sampling_rate": SR, "example_id": "utt-7", **kwargs}
    with pytest.raises(error) as info:
        load_audio(build(tmp_path), **kwargs)
    for needle in needles:
        assert needle in str(info.value), (case, str(info.value))


def test_decoder_errors_keep_the_soundfile_cause():
    with pytest.raises(AudioError) as info:
        load_audio(b"junk" * 20, sampling_rate=SR, example_id="utt-7")
    assert isinstance(info.value.__cause__, sf.SoundFileError)


def test_messages_name_the_file_without_an_example_id(tmp_path):
    with pytest.raises(AudioError, match="nope.wav"):
        load_audio(tmp_path / "nope.wav", sampling_rate=SR)
