"""The leafrl command line (typer): commands listed, explain runs and validates options."""

import dataclasses

import pytest
from typer.testing import CliRunner

from leafrl import __version__
from leafrl.cli import app
from leafrl.config import TrainConfig

runner = CliRunner()


def test_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "explain" in result.output and "version" in result.output


def test_version():
    result = runner.invoke(app, ["version"])
    assert result.exit_code == 0 and result.output.strip() == __version__


def test_explain_shows_the_worked_example():
    result = runner.invoke(app, ["explain"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "boundaries [3 (surprisal 5.00), 7 (surprisal 4.00)]" in result.output
    assert "root value 0.300" in result.output  # V(root): the mean reward, as the tree reports it
    # spec's z-scored spans of response 1 and the GRPO value beside it
    for value in ("+0.28", "+0.60", "+1.22", "-2.08", "+0.90"):
        assert value in result.output


def test_explain_options_change_the_result():
    result = runner.invoke(app, ["explain", "--fork-budget", "1"], terminal_width=200)
    assert result.exit_code == 0 and "boundaries [3 (surprisal 5.00)]" in result.output
    result = runner.invoke(app, ["explain", "--boundaries", "trie", "--normalize", "none"],
                           terminal_width=200)
    assert result.exit_code == 0 and "+0.40" in result.output  # raw tail of response 1


def test_explain_rejects_bad_option_naming_it():
    result = runner.invoke(app, ["explain", "--terms", "sideways"])
    assert result.exit_code == 2
    assert "LeafConfig.terms" in result.output


def test_data_demo_builds_a_small_task(tmp_path):
    import shutil

    import pytest

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    result = runner.invoke(app, ["data", "demo", "--out", str(tmp_path), "--n-train", "6", "--n-valid", "2",
                                  "--n-test", "2", "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "train.jsonl").read_text().count("\n") == 6
    assert "train" in result.output


def _main(args, capsys):
    """(exit status, stderr) of the ``leafrl`` command with ``args``."""
    from leafrl.cli import main

    with pytest.raises(SystemExit) as exited:
        main(args)
    return exited.value.code, capsys.readouterr().err


def test_data_convert_names_a_bad_dataset_or_missing_release(tmp_path, capsys):
    status, err = _main(["data", "convert", "timit", str(tmp_path), str(tmp_path / "out")], capsys)
    assert status == 1 and "'timit'" in err and "covost2, librisqa, longaudio" in err
    status, err = _main(["data", "convert", "covost2", str(tmp_path), str(tmp_path / "out"), "--librispeech",
                         str(tmp_path)], capsys)
    assert status == 1 and "--librispeech is for librisqa only" in err
    status, err = _main(["data", "convert", "covost2", str(tmp_path), str(tmp_path / "out")], capsys)
    assert status == 1 and "not found" in err and "Traceback" not in err and len(err.strip().splitlines()) <= 3


def test_library_errors_are_one_line_with_the_fix(tmp_path, capsys, monkeypatch):
    """A missing espeak-ng from `leafrl train` (the built-in task is synthesized first) is one
    line naming the install command, not a traceback; LEAFRL_TRACEBACK=1 brings the traceback."""
    import leafrl.data.demo
    from leafrl.data.demo import EspeakError

    monkeypatch.setenv("LEAFRL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(leafrl.data.demo.shutil, "which", lambda name: None)
    status, err = _main(["train", "--quiet"], capsys)
    assert status == 1 and "espeak-ng is not on PATH" in err and "apt-get install espeak-ng" in err
    assert "Traceback" not in err
    monkeypatch.setenv("LEAFRL_TRACEBACK", "1")
    from leafrl.cli import main

    with pytest.raises(EspeakError):
        main(["train", "--quiet"])


def test_a_bad_setting_is_one_line_naming_it(capsys):
    status, err = _main(["train", "--set", "optim.minibatch=0", "--quiet"], capsys)
    assert status == 1 and "TrainConfig.optim.minibatch must be >= 1" in err


def test_train_ends_with_a_before_after_table():
    from rich.console import Console

    from leafrl.summary import RunSummary
    from leafrl.viz.runs import bleu_table

    summary = RunSummary(algo="leaf", steps=120, processes=1, valid_examples=300, wall_seconds=1.0,
                         valid_bleu_before=60.0, valid_bleu_after=63.5, valid_bleu_p_value=0.004,
                         valid_bleu_sampled_before=50.25, valid_bleu_sampled_after=52.0,
                         valid_bleu_sampled_p_value=0.02)
    console = Console(width=100, record=True)
    console.print(bleu_table(summary))
    text = console.export_text()
    assert "300 rows" in text and "120 leaf steps" in text
    assert "+3.50" in text and "+1.75" in text and "greedy" in text and "sampled" in text
    assert "0.004" in text and "0.020" in text and "paired bootstrap" in text


def _train_config(monkeypatch, args):
    """The TrainConfig ``leafrl train ARGS`` would run with (the trainer replaced), and stderr."""
    import leafrl.trainer

    seen = {}
    monkeypatch.setattr(leafrl.trainer, "train", lambda cfg, **kw: seen.setdefault("cfg", cfg) and None)
    result = CliRunner().invoke(app, ["train", *args, "--quiet"])
    assert result.exit_code == 0, result.output
    return seen["cfg"], result.stderr if hasattr(result, "stderr") else result.output


def test_a_one_line_config_file_trains_the_builtin_at_its_settings(monkeypatch, tmp_path):
    """Plain `leafrl train` is `--recipe builtin-conventions`, and a --config file applies over it:
    what a run starts from never depends on which flags were absent."""
    from leafrl.config import load_config

    (tmp_path / "steps.yaml").write_text("steps: 7\n")
    builtin = load_config(TrainConfig, recipe="builtin-conventions")
    cfg, _ = _train_config(monkeypatch, ["--config", str(tmp_path / "steps.yaml")])
    assert cfg == dataclasses.replace(builtin, steps=7)
    assert (cfg.model, cfg.data) == ("builtin:conventions", "builtin:conventions")
    assert (cfg.lora.rank, cfg.optim.lr, cfg.rollout.max_new_tokens) == (16, 3e-4, 32)  # not the paper's 64, 5e-6
    plain, _ = _train_config(monkeypatch, [])
    assert plain == builtin and _train_config(monkeypatch, ["--builtin", "conventions"])[0] == builtin


def test_settings_resolve_recipe_then_file_then_options_then_set(monkeypatch, tmp_path):
    (tmp_path / "run.yaml").write_text("steps: 7\nalgo: grpo\noptim:\n  lr: 0.01\n")
    cfg, _ = _train_config(monkeypatch, ["--config", str(tmp_path / "run.yaml"), "--steps", "9", "--set",
                                         "steps=11", "--set", "lora.rank=2"])
    assert (cfg.steps, cfg.algo, cfg.optim.lr, cfg.lora.rank) == (11, "grpo", 0.01, 2)
    assert cfg.lora.alpha == 32  # the recipe's, untouched by the layers above it
    paper, _ = _train_config(monkeypatch, ["--recipe", "paper", "--model", "some/model", "--data", "d"])
    assert paper == dataclasses.replace(TrainConfig(), model="some/model", data="d")


def test_another_model_on_a_builtin_recipe_is_warned_about(monkeypatch, tmp_path):
    from leafrl.builtin import base_model

    cfg, err = _train_config(monkeypatch, ["--model", "some/model"])
    assert cfg.model == "some/model" and cfg.lora.rank == 16 and "--recipe paper" in err
    _, err = _train_config(monkeypatch, ["--model", base_model()])  # the built-in model by its path: no warning
    assert "--recipe paper" not in err
    _, err = _train_config(monkeypatch, ["--recipe", "paper", "--model", "some/model", "--data", "d"])
    assert "warning" not in err


@pytest.mark.skipif(__import__("shutil").which("espeak-ng") is None, reason="needs espeak-ng")
def test_train_on_the_builtin_base_model_ends_with_the_table_and_examples(tmp_path, capfd):
    """The main command, shortened: the shipped base model on a small built-in task. It ends with
    the before/after table, held-out examples and the conventions table; the terminal shows no
    transformers progress bars or FutureWarnings."""
    from rich.console import Console

    from leafrl.builtin import prepare_task
    from leafrl.cli import main

    data = prepare_task(Console(quiet=True), tmp_path / "task", n_train=12, n_valid=6, n_test=0)
    with pytest.raises(SystemExit) as exited:
        main(["train", "--data", str(data), "--out", str(tmp_path / "run"), "--steps", "2",
              "--set", "eval.examples=6", "--set", "rollout.prompts_per_step=2", "--set", "eval.sampled_passes=2"])
    assert exited.value.code == 0
    out, err = capfd.readouterr()
    text = out + err
    assert "held-out BLEU (6 rows), 2 leaf steps" in text and "sampled (mean of passes)" in text
    assert "held-out examples" in text and "valid-00000" in text and "how the greedy answers are written" in text
    for noise in ("Loading weights", "Writing model shards", "FutureWarning", "Traceback"):
        assert noise not in text
    summary = __import__("json").loads((tmp_path / "run" / "summary.json").read_text())
    assert {"valid_bleu_p_value", "valid_bleu_sampled_p_value"} <= set(summary)


def test_a_finished_process_of_a_distributed_run_exits_0_with_its_output_written():
    """Under torchrun (WORLD_SIZE > 1) a finished command leaves without interpreter finalization,
    where gloo's teardown can abort it: its output is flushed first, and a failure keeps its status."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "WORLD_SIZE": "2"}
    done = subprocess.run([sys.executable, "-m", "leafrl.cli", "recipes"], capture_output=True, text=True, env=env)
    assert done.returncode == 0 and "builtin-conventions" in done.stdout
    failed = subprocess.run([sys.executable, "-m", "leafrl.cli", "eval", "--limit", "0"], capture_output=True,
                            text=True, env=env)
    assert failed.returncode == 1 and "--limit" in failed.stderr
