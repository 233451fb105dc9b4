"""Paths the operating system will not read, through the ``leafrl`` command (issue 27): a directory
or a symlink loop where a clip should be, a manifest file or a loop given as ``--data``, and a WAV
cut short. Each is one line naming the path and the cause (a cut WAV: one warning per file)."""

import os

import numpy as np
import pytest

import test_faults
from leafrl.audio.io import AudioError, clip_seconds, load_audio, write_audio
from test_faults import dataset_with, leafrl, one_line_error, train_args

world = test_faults.world  # the module-scoped fixture: a data directory and a tiny model


def _cut_wav(path, keep=0.5):
    """Keep the first ``keep`` of ``path``'s bytes: the header still promises all of the data."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_a_clip_path_that_is_a_directory_is_named_as_one(world, tmp_path, capsys):
    data = dataset_with(world, tmp_path)
    clip = data / "audio" / "train3.wav"
    clip.unlink()
    clip.mkdir()
    status, _, err = leafrl(capsys, *train_args(data, world / "model", tmp_path / "run"))
    assert status == 1
    one_line_error(err, f"{data / 'train.jsonl'}:4", "'train3'", clip, "is a directory")
    assert "not found" not in err


def test_a_clip_path_that_is_a_symlink_loop_is_named_as_one(world, tmp_path, capsys):
    data = dataset_with(world, tmp_path)
    clip = data / "audio" / "train3.wav"
    clip.unlink()
    clip.symlink_to(clip.name)  # points at itself
    status, _, err = leafrl(capsys, *train_args(data, world / "model", tmp_path / "run"))
    assert status == 1
    one_line_error(err, f"{data / 'train.jsonl'}:4", "'train3'", clip, "symlink loop")
    assert "not found" not in err


def test_data_naming_a_manifest_file_says_to_pass_its_directory(world, tmp_path, capsys):
    manifest = world / "data" / "train.jsonl"
    status, _, err = leafrl(capsys, *train_args(manifest, world / "model", tmp_path / "run"))
    assert status == 1
    one_line_error(err, manifest, "is a file", f"(here {world / 'data'})")
    assert "not found" not in err and not (tmp_path / "run").exists()
    status, _, err = leafrl(capsys, "sft", "--data", manifest, "--out", tmp_path / "sft", "--steps", "1")
    assert status == 1
    one_line_error(err, manifest, "is a file")


def test_data_that_is_a_symlink_loop_is_named_as_one(world, tmp_path, capsys):
    loop = tmp_path / "data"
    loop.symlink_to(loop.name)
    status, _, err = leafrl(capsys, *train_args(loop, world / "model", tmp_path / "run"))
    assert status == 1
    one_line_error(err, loop, "symlink loop")
    assert "not found" not in err


def test_a_cut_short_wav_is_used_with_one_warning_naming_it(world, tmp_path, capsys):
    data = dataset_with(world, tmp_path)
    clip = data / "audio" / "train3.wav"
    _cut_wav(clip)
    status, _, err = leafrl(capsys, *train_args(data, world / "model", tmp_path / "run", "--set", "steps=1",
                                                "--set", "rollout.prompts_per_step=8"))  # every row is read
    assert status == 0, err
    text = " ".join(err.split())
    assert text.count("warning:") == 1 and text.count("cut short") == 1, err
    assert str(clip) in text and "'train3'" in text and "the WAV header promises" in text


def test_a_cut_short_wav_warns_once_with_the_seconds_and_a_whole_or_streamed_one_not(tmp_path, capsys):
    clip = tmp_path / "two_seconds.wav"
    write_audio(clip, np.zeros(32000, np.float32), 16000)  # PCM_16: 64000 bytes of data
    whole = clip.read_bytes()
    load_audio(clip, sampling_rate=16000)
    streamed = tmp_path / "streamed.wav"  # a writer that cannot seek back leaves the size unknown
    at = whole.index(b"data") + 4
    streamed.write_bytes(whole[:at] + b"\xff\xff\xff\xff" + whole[at + 4:])
    load_audio(streamed, sampling_rate=16000)
    assert capsys.readouterr().err == ""
    clip.write_bytes(whole[: len(whole) - 32000])  # half the samples gone
    assert clip_seconds(clip) == pytest.approx(1.0)
    assert load_audio(clip, sampling_rate=16000).shape == (16000,)
    assert load_audio({"bytes": clip.read_bytes(), "path": "x.wav"}, sampling_rate=16000, example_id="r1").size
    err = capsys.readouterr().err.splitlines()
    assert err == [f"warning: {str(clip)!r}: the WAV header promises 2.00 s, the file holds 1.00 s (cut short?): "
                   "using what is there",
                   "warning: example 'r1' (x.wav): the WAV header promises 2.00 s, the file holds 1.00 s (cut "
                   "short?): using what is there"], err


def test_path_problem_names_each_cause(tmp_path, monkeypatch):
    from leafrl._files import path_problem

    (tmp_path / "f.wav").write_bytes(b"x")
    (tmp_path / "loop").symlink_to("loop")
    (tmp_path / "dangling").symlink_to("gone.wav")
    os.mkfifo(tmp_path / "fifo")
    assert path_problem(tmp_path / "f.wav") is None and path_problem(tmp_path, directory=True) is None
    assert path_problem(tmp_path / "nope.wav") == "not found"
    assert path_problem(tmp_path) == "is a directory"
    assert path_problem(tmp_path / "f.wav", directory=True) == "is a file"
    assert path_problem(tmp_path / "loop") == "is a symlink loop"
    assert path_problem(tmp_path / "loop" / "x.wav") == "goes through a symlink loop"
    assert path_problem(tmp_path / "dangling") == "is a broken symlink (to 'gone.wav')"
    assert path_problem(tmp_path / "fifo") == "is not a regular file"
    assert path_problem(tmp_path / "f.wav" / "x.wav") == "not found (part of its path is a file)"
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # the tests may run as root
    assert path_problem(tmp_path / "f.wav") == "cannot be read (permission denied)"


def test_load_audio_names_a_directory_and_a_loop(tmp_path):
    with pytest.raises(AudioError, match=r"example 'r1' \(.*\): file is a directory"):
        load_audio(tmp_path, sampling_rate=16000, example_id="r1")
    (tmp_path / "loop.wav").symlink_to("loop.wav")
    with pytest.raises(AudioError, match=r"loop\.wav\): file is a symlink loop"):
        clip_seconds(tmp_path / "loop.wav", example_id="r1")


def test_a_model_path_that_is_a_symlink_loop_is_named_as_one(world, tmp_path, capsys):
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    status, _, err = leafrl(capsys, *train_args(world / "data", loop, tmp_path / "run"))
    assert status == 1
    one_line_error(err, "model directory is a symlink loop", loop)
