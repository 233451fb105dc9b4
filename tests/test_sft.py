"""leafrl sft end to end on a tiny SALLM: loss falls, held-out BLEU rises, the saved model
reloads through load_speech_lm with identical outputs."""

import dataclasses
import json

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from conftest import TINY, tone_dataset
from leafrl.cli import app
from leafrl.config import SFTConfig, apply_overrides
from leafrl.models import load_speech_lm
from leafrl.rollout.batch import encode_examples
from leafrl.sft import run_sft
from leafrl.summary import SFTSummary


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return tone_dataset(tmp_path_factory.mktemp("tones"))


def sft_config(data, out, *settings):
    """An SFTConfig of the tiny SALLM on ``data`` into ``out`` with ``settings`` ("key=value")."""
    return apply_overrides(SFTConfig(data=str(data), out=str(out), tiny=TINY), list(settings))


def test_sft_learns_and_saves_a_reloadable_model(data, tmp_path):
    cfg = sft_config(data, tmp_path / "run", "align_steps=30", "steps=100", "optim.batch_size=8",
                     "align_batch_size=8", "optim.lr=3e-3", "eval.every=50", "eval.examples=8",
                     "eval.max_new_tokens=16")
    summary = run_sft(cfg, quiet=True)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    ctc = [r["align_ctc"] for r in rows if "align_ctc" in r]
    assert len(ctc) == 30 and np.mean(ctc[-5:]) < 0.6 * np.mean(ctc[:5])  # the audio aligns first
    assert [next(k for k in r if k.endswith(("ctc", "loss"))) for r in rows if "lr" in r] == (
        ["align_ctc"] * 30 + ["loss"] * 100)
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 100 and np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    assert summary.valid_bleu_after > summary.valid_bleu_before + 20
    assert [r["step"] for r in rows if "valid_bleu" in r] == [0, 50, 100]
    assert summary.wall_seconds > 0 and summary.steps == 100 and summary.train_examples == 24
    assert SFTSummary.load(tmp_path / "run" / "summary.json") == summary
    # the saved model is a standard HF directory that reloads with the same outputs
    model, family = load_speech_lm(summary.model_dir)
    from leafrl.data import load_split

    examples = list(load_split(data, "valid"))[:2]
    inputs = encode_examples(family, examples)
    with torch.no_grad():
        logits = model.eval()(**inputs).logits
    assert torch.isfinite(logits).all() and logits.shape[0] == 2


def test_sft_with_lora_changes_only_adapter_weights_then_merges(data, tmp_path):
    cfg = sft_config(data, tmp_path / "lora", "align_steps=0", "steps=3", "optim.batch_size=4", "eval.examples=2",
                     "eval.max_new_tokens=2", "finetune=lora", "lora.rank=4", "lora.alpha=8")
    summary = run_sft(cfg, quiet=True)
    from safetensors.torch import load_file

    weights = load_file(f"{summary.model_dir}/model.safetensors")
    assert not any("lora" in k for k in weights)  # merged into the base weights


def test_cli_sft_runs_with_a_config_file(data, tmp_path):
    config = tmp_path / "sft.yaml"
    config.write_text("tiny:\n" + "".join(f"  {k}: {v}\n" for k, v in dataclasses.asdict(TINY).items()))
    result = CliRunner().invoke(app, ["sft", "--data", str(data), "--out", str(tmp_path / "cli"), "--steps", "2",
                                      "--config", str(config), "--set", "eval.examples=2", "--set", "align_steps=1",
                                      "--set", "eval.max_new_tokens=2", "--quiet"])
    assert result.exit_code == 0, result.output
    saved = yaml.safe_load((tmp_path / "cli" / "config.yaml").read_text())
    assert saved["steps"] == 2 and saved["eval"]["examples"] == 2 and saved["data"] == str(data)


def test_cli_sft_reports_bad_settings(tmp_path, capsys):
    from leafrl.cli import main

    for args, named in ((["sft", "--set", "stepz=3"], "stepz"),
                        (["sft", "--data", str(tmp_path), "--steps", "1"], "train")):  # no train split here
        with pytest.raises(SystemExit) as exited:
            main(args)
        err = capsys.readouterr().err
        assert exited.value.code == 1 and named in err and "Traceback" not in err


def test_alignment_needs_transcripts(data, tmp_path):
    rows = (data / "train.jsonl").read_text().splitlines()
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "audio").symlink_to(data / "audio")
    (bare / "valid.jsonl").write_text((data / "valid.jsonl").read_text())
    first = json.loads(rows[0])
    del first["transcript"]
    (bare / "train.jsonl").write_text("\n".join([json.dumps(first), *rows[1:]]) + "\n")
    cfg = sft_config(bare, tmp_path / "run", "steps=1", "optim.batch_size=4", "eval.examples=2",
                     "eval.max_new_tokens=2", "align_steps=2")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "summary.json").write_text("{}")  # an earlier, finished run's
    with pytest.raises(ValueError, match=f"{first['id']}.*transcript.*set align_steps=0"):
        run_sft(cfg, quiet=True, overwrite=True)
    assert not (tmp_path / "run" / "summary.json").exists()  # a failed run does not look finished


def test_alignment_needs_a_family_with_audio_frames():
    from types import SimpleNamespace

    from leafrl.sft import alignment_loss

    text_family = SimpleNamespace(name="text")
    with pytest.raises(ValueError, match="text family.*align_steps=0"):
        alignment_loss(None, text_family, [], [])


@pytest.mark.parametrize("cache_inputs", [True, False])
def test_each_stage_draws_batches_of_its_own_size(data, tmp_path, monkeypatch, cache_inputs):
    """SFT steps take batch_size rows; alignment steps take align_batch_size."""
    from leafrl import sft

    seen: dict[str, list[int]] = {"align": [], "sft": []}

    def recorder(stage):
        def loss(model, family, inputs, *args, **kwargs):
            seen[stage].append(len(inputs["attention_mask"]))
            return sum(p.sum() for p in model.parameters() if p.requires_grad) * 0.0
        return loss

    monkeypatch.setattr(sft, "alignment_loss", recorder("align"))
    monkeypatch.setattr(sft, "reference_nll", recorder("sft"))
    state_at_start, real_stage = {}, sft.train_stage

    def stage(label, *args, optimizer, **kwargs):
        state_at_start[label] = len(optimizer.state)
        real_stage(label, *args, optimizer=optimizer, **kwargs)

    monkeypatch.setattr(sft, "train_stage", stage)
    cfg = sft_config(data, tmp_path / "run", "align_steps=3", "steps=2", "optim.batch_size=6", "align_batch_size=2",
                     "eval.examples=2", "eval.max_new_tokens=2", "length_buckets=2", f"cache_inputs={cache_inputs}")
    run_sft(cfg, quiet=True)
    assert seen == {"align": [2, 2, 2], "sft": [6, 6]}  # length buckets keep the batch size
    assert state_at_start == {"align": 0, "sft": 0}  # SFT does not inherit the CTC stage's Adam moments
    with pytest.raises(ValueError, match="align_batch_size"):
        SFTConfig(align_batch_size=0)



def test_length_buckets_keep_each_row_once_an_epoch_and_group_similar_lengths():
    from leafrl.sft import batches

    lengths = [((i * 7919) % 1000) / 10 for i in range(640)]  # a deterministic jumble
    take = lambda gen, k: [next(gen) for _ in range(k)]  # noqa: E731
    plain = take(batches(640, 32, 3), 20)
    bucketed = take(batches(640, 32, 3, lengths, bucket=4), 20)
    assert sorted(i for b in bucketed for i in b) == list(range(640))  # one epoch: every row once
    assert all(len(b) == 32 for b in bucketed)
    spread = lambda bs: sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in bs) / len(bs)  # noqa: E731
    assert spread(bucketed) < spread(plain) / 3
    # each bucket holds the rows of 4 plain batches of the same permutation, regrouped
    rows_of = lambda bs: sorted(i for b in bs for i in b)  # noqa: E731
    for first in range(0, 20, 4):
        assert rows_of(bucketed[first:first + 4]) == rows_of(plain[first:first + 4])
    assert take(batches(640, 32, 3, lengths, bucket=4), 20) == bucketed  # seeded
    assert take(batches(640, 32, 3, lengths, bucket=1), 20) == plain
    with pytest.raises(ValueError, match="lengths: 5 given for 640 rows"):
        next(batches(640, 32, 3, lengths[:5], bucket=4))
