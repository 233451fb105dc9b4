"""A hostile-but-realistic user: bad input and faults, through the ``leafrl`` command on the tiny
models. Each case asserts the exit status, that the message names the file, row or setting, and
that nothing already on disk was lost (earlier runs compared byte for byte)."""

import json
import shutil
import sys

import numpy as np
import pytest
import yaml

from conftest import save_tiny_sallm, tone_dataset
from leafrl.audio.io import write_audio

TINY_RUN = ["steps=2", "eval.every=100", "eval.examples=2", "save_every=1", "eval.sampled_passes=1",
            "rollout.saved_groups=1", "rollout.rollout_budget=3", "rollout.prompts_per_step=2",
            "rollout.max_new_tokens=6", "optim.micro_batch=4", "optim.minibatch=3", "optim.lr=1e-3", "lora.rank=4",
            "lora.alpha=8", "reward=chrf"]


def leafrl(capsys, *args):
    """(exit status, stdout, stderr) of the ``leafrl`` command."""
    from leafrl.cli import main

    with pytest.raises(SystemExit) as exited:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return exited.value.code or 0, out.out, out.err


def one_line_error(err, *names):
    """The command failed with one ``error:`` line, no traceback, naming each of ``names``."""
    assert "Traceback" not in err, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    text = " ".join(err.split())
    for name in names:
        assert str(name) in text, (name, err)


def snapshot(root):
    """Every file under ``root`` by relative path, with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def steps_logged(run):
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()
            if "loss" in json.loads(line)]


def train_args(data, model, out, *more):
    return ["train", "--recipe", "paper", "--data", data, "--model", model, "--out", out, "--quiet",
            *[x for item in TINY_RUN for x in ("--set", item)], *more]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A data directory, a tiny model, and a finished 2-step run made with relative paths from
    ``root`` (as a user types them); tests copy what they change."""
    root = tmp_path_factory.mktemp("faults")
    tone_dataset(root / "data", n_train=8, n_valid=2)
    save_tiny_sallm(root / "model")
    return root


@pytest.fixture(scope="module")
def finished(world):
    import os

    from leafrl.cli import main

    here = os.getcwd()
    os.chdir(world)
    try:
        with pytest.raises(SystemExit) as exited:
            main(train_args("data", "model", "run"))
    finally:
        os.chdir(here)
    assert exited.value.code in (0, None)
    return world / "run"


# ----------------------------------------------------------------------------------- data loss


def test_resume_of_a_copied_run_writes_only_into_the_copy(world, finished, tmp_path, capsys, monkeypatch):
    """``cp -a run copy && leafrl train --resume copy --set steps=4``, from another working
    directory: the copy goes on to step 4 and the original is untouched."""
    copy = tmp_path / "copy"
    shutil.copytree(finished, copy)
    before = snapshot(finished)
    monkeypatch.chdir(tmp_path)  # relative paths typed in `world` mean nothing here
    status, _, err = leafrl(capsys, "train", "--resume", "copy", "--set", "steps=4", "--quiet")
    assert status == 0, err
    assert snapshot(finished) == before
    assert steps_logged(copy) == [1, 2, 3, 4]
    assert sorted(p.name for p in (copy / "checkpoints").iterdir()) == ["step-000003", "step-000004"]
    saved = yaml.safe_load((copy / "config.yaml").read_text())
    assert saved["out"] == str(copy.resolve()) and saved["steps"] == 4
    assert saved["data"] == str((world / "data").resolve()) and saved["model"] == str((world / "model").resolve())


def test_a_new_run_into_a_run_directory_is_refused_and_overwrite_replaces_it(world, finished, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    before = snapshot(run)
    status, _, err = leafrl(capsys, *train_args(world / "data", world / "model", run))
    assert status == 1
    one_line_error(err, run, "--resume", "--overwrite")
    assert snapshot(run) == before
    broken = dataset_with(world, tmp_path / "broken")
    (broken / "audio" / "train3.wav").write_bytes(b"")
    status, _, err = leafrl(capsys, *train_args(broken, world / "model", run, "--overwrite"))
    assert status == 1 and "train3.wav" in err
    assert snapshot(run) == before  # --overwrite deletes only once the new run can start
    (run / "notes.txt").write_text("mine")  # not a run file: --overwrite leaves it
    status, _, err = leafrl(capsys, *train_args(world / "data", world / "model", run, "--set", "steps=1",
                                                "--overwrite"))
    assert status == 0, err
    assert steps_logged(run) == [1] and (run / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-000001"]


def test_resume_refuses_options_that_name_another_run(world, finished, capsys):
    status, _, err = leafrl(capsys, "train", "--resume", finished, "--model", world / "model")
    assert status == 1
    one_line_error(err, "--model", "--set")
    status, _, err = leafrl(capsys, "train", "--resume", finished, "--set", f"out={world / 'elsewhere'}")
    assert status == 1
    one_line_error(err, "out")
    status, _, err = leafrl(capsys, "train", "--resume", world / "nothing-here")
    assert status == 1
    one_line_error(err, "nothing-here", "no run there")


def _cut(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("damaged", ["optimizer.pt", "adapter/adapter_model.safetensors"])
def test_a_corrupt_latest_checkpoint_falls_back_to_the_newest_intact_one(finished, tmp_path, capsys, damaged):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    _cut(run / "checkpoints" / "step-000002" / damaged)
    status, out, err = leafrl(capsys, "train", "--resume", run, "--set", "steps=3", "--quiet")
    assert status == 0, err
    assert f"warning: skipping checkpoint step-000002: {damaged} has" in " ".join(err.split())  # even --quiet
    assert not out
    assert steps_logged(run) == [1, 2, 3]  # step 2 repeated once, from step 1's checkpoint


def test_no_intact_checkpoint_is_an_error_that_keeps_the_run(finished, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    for step in ("step-000001", "step-000002"):
        _cut(run / "checkpoints" / step / "optimizer.pt")
    before = snapshot(run)
    status, _, err = leafrl(capsys, "train", "--resume", run, "--set", "steps=3")
    assert status == 1
    one_line_error(err, "no intact checkpoint", "step-000001", "step-000002", "--overwrite")
    assert snapshot(run) == before


def test_resume_after_a_kill_mid_checkpoint_logs_each_step_once_and_cleans_up(finished, tmp_path, capsys):
    """The state SIGKILL leaves while checkpoint 2 is written: step 2 is logged, its checkpoint is
    a temporary directory and a half-written line ends the log (test_trainer kills a real run)."""
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    shutil.move(run / "checkpoints" / "step-000002", run / "checkpoints" / ".step-000002.k1ll3d")
    for name in ("summary.json", "after.json"):
        (run / name).unlink()
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"step": 3, "loss": 0.1')
    status, _, err = leafrl(capsys, "train", "--resume", run)
    assert status == 0, err
    assert steps_logged(run) == [1, 2]
    assert not list((run / "checkpoints").glob(".step-*"))
    assert (run / "summary.json").is_file()


def test_resume_before_the_first_checkpoint_starts_the_run_again_in_place(finished, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    shutil.rmtree(run / "checkpoints")
    status, out, err = leafrl(capsys, "train", "--resume", run, "--set", "steps=1")
    assert status == 0, err
    assert "starting its run from step 0" in " ".join(out.split()) and steps_logged(run) == [1]


def test_sft_into_a_finished_run_is_refused(world, tmp_path, capsys):
    out = tmp_path / "sft"
    out.mkdir()
    (out / "summary.json").write_text("{}")
    status, _, err = leafrl(capsys, "sft", "--data", world / "data", "--out", out, "--steps", "1", "--quiet")
    assert status == 1
    one_line_error(err, out, "--overwrite")
    assert (out / "summary.json").read_text() == "{}"


# ------------------------------------------------------------- checked before the first step


def dataset_with(world, tmp_path, rows=None, clips=None):
    """A copy of the tone dataset whose train split gets ``rows`` (id -> changed fields) and whose
    clips ``clips`` (file name -> bytes or an array at 16 kHz) are replaced."""
    data = tmp_path / "data"
    shutil.copytree(world / "data", data)
    for name, content in (clips or {}).items():
        if isinstance(content, bytes):
            (data / "audio" / name).write_bytes(content)
        else:
            write_audio(data / "audio" / name, content, 16000)
    lines = [json.loads(line) for line in (data / "train.jsonl").read_text().splitlines()]
    lines = [{**row, **(rows or {}).get(row["id"], {})} for row in lines]
    (data / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in lines))
    return data


def test_every_unreadable_clip_is_named_before_the_first_step(world, tmp_path, capsys):
    data = dataset_with(world, tmp_path, clips={"train3.wav": b"", "train6.wav": b"RIFF\x00\x00 not a wave file"})
    status, _, err = leafrl(capsys, *train_args(data, world / "model", tmp_path / "run"))
    assert status == 1 and "Traceback" not in err
    text = " ".join(err.split())
    assert "2 of 8 rows cannot be used" in text and "train3.wav" in text and "train6.wav" in text
    assert not (tmp_path / "run" / "metrics.jsonl").exists()  # refused before training began


def test_a_clip_too_short_for_the_encoder_and_a_prompt_over_the_context_are_named(world, tmp_path, capsys):
    data = dataset_with(world, tmp_path, rows={"train5": {"prompt": "What do you hear? " * 400}},
                        clips={"train2.wav": np.full(5, 0.1, np.float32)})
    status, _, err = leafrl(capsys, *train_args(data, world / "model", tmp_path / "run"))
    assert status == 1 and "Traceback" not in err
    text = " ".join(err.split())
    assert "'train2'" in text and "shorter than" in text and "audio encoder" in text
    data = dataset_with(world, tmp_path / "long", rows={"train5": {"prompt": "What do you hear? " * 400}})
    status, _, err = leafrl(capsys, *train_args(data, world / "model", tmp_path / "run"))
    assert status == 1
    text = " ".join(err.split())
    assert "'train5'" in text and "over the model's context of 512" in text and "1 of 8 rows" in text


@pytest.mark.parametrize(("setting", "field"), [
    ("rollout.rollout_budget=1", "TrainConfig.rollout.rollout_budget must be >= 2"),
    ("optim.lr=0", "TrainConfig.optim.lr must be > 0"),
    ("optim.lr=-1e-5", "TrainConfig.optim.lr must be > 0"),
    ("optim.micro_batch=0", "TrainConfig.optim.micro_batch must be >= 1"),
    ("rollout.temperature=0", "TrainConfig.rollout.temperature must be > 0"),
    ("rollout.top_p=1.5", "TrainConfig.rollout.top_p must be in (0, 1]"),
    ("lora.rank=0", "TrainConfig.lora.rank must be >= 1"),
    ("optim.grad_clip=0", "TrainConfig.optim.grad_clip must be > 0"),
])
def test_meaningless_train_settings_are_refused_naming_the_field(world, tmp_path, capsys, setting, field):
    status, _, err = leafrl(capsys, *train_args(world / "data", world / "model", tmp_path / "run", "--set", setting))
    assert status == 1
    one_line_error(err, field)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("setting", "field"), [
    ("optim.lr=0", "SFTConfig.optim.lr must be > 0"),
    ("optim.batch_size=0", "SFTConfig.optim.batch_size must be >= 1"),
    ("optim.warmup_frac=1", "SFTConfig.optim.warmup_frac must be in [0, 1)"),
    ("lora.dropout=1", "SFTConfig.lora.dropout must be in [0, 1)"),
    ("finetune=half", "SFTConfig.finetune must be one of full, lora"),
])
def test_meaningless_sft_settings_are_refused_naming_the_field(world, tmp_path, capsys, setting, field):
    status, _, err = leafrl(capsys, "sft", "--data", world / "data", "--out", tmp_path / "sft", "--set", setting)
    assert status == 1
    one_line_error(err, field)


# ----------------------------------------------------------------- one clear line for each


def test_a_missing_or_broken_model_is_one_line_naming_it(world, tmp_path, capsys):
    args = ("--recipe", "paper", "--data", world / "data", "--quiet")
    status, _, err = leafrl(capsys, "train", "--model", tmp_path / "no-such-model", "--out", tmp_path / "a", *args)
    assert status == 1
    one_line_error(err, "model directory not found", "no-such-model")
    broken = tmp_path / "broken"
    shutil.copytree(world / "model", broken)
    (broken / "config.json").write_text('{"model_type": "qwen2_audio",')
    status, _, err = leafrl(capsys, "train", "--model", broken, "--out", tmp_path / "b", *args)
    assert status == 1
    one_line_error(err, broken / "config.json", "not valid JSON")
    (broken / "config.json").unlink()
    status, _, err = leafrl(capsys, "train", "--model", broken, "--out", tmp_path / "c", *args)
    assert status == 1
    one_line_error(err, broken, "no config.json")
    shutil.copy(world / "model" / "config.json", broken / "config.json")
    _cut(broken / "model.safetensors")
    status, _, err = leafrl(capsys, "train", "--model", broken, "--out", tmp_path / "d", *args)
    assert status == 1
    one_line_error(err, broken, "cannot load it")


@pytest.mark.parametrize(("raised", "message"), [("RuntimeError('scorer crashed')", "scorer crashed"),
                                                 ("ValueError(\"invalid literal for int() with base 10: 'x'\")",
                                                  "invalid literal")])
def test_a_reward_that_raises_is_one_line_naming_it_and_the_row(world, tmp_path, capsys, monkeypatch, raised,
                                                                message):
    (tmp_path / "crashing_reward.py").write_text(f"def score(prediction, reference):\n    raise {raised}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "crashing_reward", raising=False)  # and gone again after the test
    status, _, err = leafrl(capsys, *train_args(world / "data", world / "model", tmp_path / "run",
                                                "--set", "reward=crashing_reward:score"))
    assert status == 1
    one_line_error(err, "reward crashing_reward:score raised", message, "on example 'train")


def test_invalid_utf8_and_an_empty_split_name_the_file_and_line(world, tmp_path, capsys):
    data = dataset_with(world, tmp_path)
    lines = (data / "train.jsonl").read_bytes().splitlines(keepends=True)
    lines[2] = lines[2].replace(b"What", b"Wh\xe4t")  # Latin-1, not UTF-8
    (data / "train.jsonl").write_bytes(b"".join(lines))
    status, _, err = leafrl(capsys, *train_args(data, world / "model", tmp_path / "run"))
    assert status == 1
    one_line_error(err, f"{data / 'train.jsonl'}:3", "not valid UTF-8")
    empty = dataset_with(world, tmp_path / "empty")
    (empty / "valid.jsonl").write_text("\n")
    status, _, err = leafrl(capsys, *train_args(empty, world / "model", tmp_path / "run2"))
    assert status == 1
    one_line_error(err, empty / "valid.jsonl", "no rows")


# ------------------------------------------------- handled well before, and kept that way


def test_a_row_without_a_reference_or_with_a_missing_clip_is_named(world, tmp_path, capsys):
    data = dataset_with(world, tmp_path, rows={"train1": {"reference": "  "}})
    status, _, err = leafrl(capsys, *train_args(data, world / "model", tmp_path / "run"))
    assert status == 1
    one_line_error(err, f"{data / 'train.jsonl'}:2", "'train1'", "'reference' is empty")
    data = dataset_with(world, tmp_path / "gone")
    (data / "audio" / "train4.wav").unlink()
    status, _, err = leafrl(capsys, *train_args(data, world / "model", tmp_path / "run"))
    assert status == 1
    one_line_error(err, "'train4'", "audio file not found")


def test_malformed_json_and_unknown_settings_are_named(world, tmp_path, capsys):
    data = dataset_with(world, tmp_path)
    with (data / "train.jsonl").open("a") as f:
        f.write('{"id": "x", "prompt": \n')
    status, _, err = leafrl(capsys, *train_args(data, world / "model", tmp_path / "run"))
    assert status == 1
    one_line_error(err, f"{data / 'train.jsonl'}:9", "invalid JSON")
    status, _, err = leafrl(capsys, *train_args(world / "data", world / "model", tmp_path / "run",
                                                "--set", "optim.learning_rate=1"))
    assert status == 1
    one_line_error(err, "optim.learning_rate")


def test_nan_audio_is_named_and_stereo_44k_trains(world, tmp_path, capsys):
    import scipy.io.wavfile

    t = np.arange(int(44100 * 0.8)) / 44100
    stereo = np.stack([0.3 * np.sin(2 * np.pi * 220 * t), 0.2 * np.sin(2 * np.pi * 330 * t)], axis=1)
    data = dataset_with(world, tmp_path, clips={"train0.wav": stereo.astype(np.float32)})
    status, _, err = leafrl(capsys, *train_args(data, world / "model", tmp_path / "run", "--set", "steps=1"))
    assert status == 0, err
    data = dataset_with(world, tmp_path / "nan")
    scipy.io.wavfile.write(data / "audio" / "train0.wav", 16000, np.full(8000, np.nan, np.float32))
    status, _, err = leafrl(capsys, *train_args(data, world / "model", tmp_path / "run2",
                                                "--set", "rollout.prompts_per_step=8"))  # every row in step 1
    assert status == 1
    one_line_error(err, "'train0'", "NaN")


def test_a_reward_that_is_not_finite_is_named(world, tmp_path, capsys, monkeypatch):
    (tmp_path / "nan_reward.py").write_text("def score(prediction, reference):\n    return float('nan')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "nan_reward", raising=False)  # and gone again after the test
    status, _, err = leafrl(capsys, *train_args(world / "data", world / "model", tmp_path / "run",
                                                "--set", "reward=nan_reward:score"))
    assert status == 1
    one_line_error(err, "example 'train", "reward nan is not a finite number")


# ------------------------------------------------------------------------- a bug is not bad input


def test_a_bug_prints_its_traceback_asks_for_a_report_and_keeps_the_run(world, tmp_path, capsys, monkeypatch):
    """An exception that is no UserError (here a RuntimeError inside step 2) is a bug: its
    traceback, a line saying so, exit status 70; the checkpoint of step 1 is kept and --resume
    finishes the run. A UserError is one line, with no traceback (the cases above)."""
    from leafrl import trainer

    real = trainer.train_step

    def fails_in_step_two(run, step, record=None):
        if step == 1:
            raise RuntimeError("an internal error")
        return real(run, step, record)

    monkeypatch.setattr(trainer, "train_step", fails_in_step_two)
    status, _, err = leafrl(capsys, *train_args(world / "data", world / "model", tmp_path / "run"))
    assert status == 70 and "Traceback" in err and "RuntimeError: an internal error" in err
    assert "this is a bug in leafrl or in a library it calls" in " ".join(err.split())
    assert "training stopped by an error in step 2" in " ".join(err.split()) and "--resume" in err
    assert steps_logged(tmp_path / "run") == [1] and (tmp_path / "run" / "checkpoints" / "step-000001").is_dir()
    monkeypatch.setattr(trainer, "train_step", real)
    status, _, err = leafrl(capsys, "train", "--resume", tmp_path / "run", "--quiet")
    assert status == 0, err
    assert steps_logged(tmp_path / "run") == [1, 2] and (tmp_path / "run" / "summary.json").is_file()


def test_a_user_error_in_the_loop_is_one_line_that_says_how_to_go_on(world, tmp_path, capsys, monkeypatch):
    import torch

    from leafrl import trainer

    def exhausted(run, step, record=None):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(trainer, "train_step", exhausted)
    status, _, err = leafrl(capsys, *train_args(world / "data", world / "model", tmp_path / "run"))
    assert status == 1
    one_line_error(err, "out of memory in step 0", "optim.micro_batch", f"--resume {tmp_path / 'run'}")
