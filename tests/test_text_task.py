"""The text built-in task (builtin:text) and GGUF model references, without real weights."""

import json

import pytest
import torch

from leafrl.builtin import locate_data
from leafrl.data.sources import load_split
from leafrl.data.text_task import INSTRUCTION, build_text_task
from leafrl.errors import UserError
from leafrl.models import model_config
from leafrl.models.gguf import gguf_file, pretrained_args
from leafrl.rollout.record import Rollout


def test_text_task_is_the_spoken_qa_rows_written_out(tmp_path):
    summary = build_text_task(tmp_path / "a", n_train=60, n_valid=20, n_test=20)
    rows = [json.loads(line) for line in (tmp_path / "a" / "train.jsonl").read_text().splitlines()]
    assert summary["counts"]["train"]["rows"] == len(rows) and 15 < len(rows) < 45  # about half are QA
    assert all(r["audio"] is None and r["task"] == "qa" for r in rows)
    first = rows[0]["prompt"].splitlines()
    assert first[0] == INSTRUCTION and first[1].startswith("Scene: ") and first[2].startswith("Question: ")
    assert not any(r["held_out_pair"] for r in rows)  # held-out colour-noun pairs stay out of train
    valid = [json.loads(line) for line in (tmp_path / "a" / "valid.jsonl").read_text().splitlines()]
    assert any(r["held_out_pair"] for r in valid)
    # the same seed and sizes give the same bytes; a second build is a no-op
    build_text_task(tmp_path / "b", n_train=60, n_valid=20, n_test=20)
    assert (tmp_path / "a" / "train.jsonl").read_bytes() == (tmp_path / "b" / "train.jsonl").read_bytes()
    before = (tmp_path / "a" / "summary.json").stat().st_mtime_ns
    build_text_task(tmp_path / "a", n_train=60, n_valid=20, n_test=20)
    assert (tmp_path / "a" / "summary.json").stat().st_mtime_ns == before


def test_builtin_text_data_is_built_on_first_use(tmp_path, monkeypatch):
    monkeypatch.setenv("LEAFRL_CACHE", str(tmp_path))
    where = locate_data("builtin:text")
    assert where == str(tmp_path / "text")
    examples = load_split("builtin:text", "valid")
    assert examples and all(ex.audio is None and ex.task == "qa" for ex in examples)


def test_gguf_references(tmp_path):
    assert gguf_file("HuggingFaceTB/SmolLM2-135M-Instruct") is None
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text("{}")
    (tmp_path / "hf" / "x.gguf").write_bytes(b"")
    assert gguf_file(str(tmp_path / "hf")) is None  # an HF directory stays one
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "m.gguf").write_bytes(b"GGUF")
    assert gguf_file(str(tmp_path / "one")) == tmp_path / "one" / "m.gguf"
    assert pretrained_args(str(tmp_path / "one" / "m.gguf")) == (str(tmp_path / "one"), {"gguf_file": "m.gguf"})
    (tmp_path / "one" / "n.gguf").write_bytes(b"GGUF")
    with pytest.raises(UserError, match="2 GGUF files there"):
        gguf_file(str(tmp_path / "one"))
    with pytest.raises(UserError, match="not a GGUF model transformers reads"):
        model_config(str(tmp_path / "one" / "m.gguf"))
    (tmp_path / "w.bin").write_bytes(b"x")
    with pytest.raises(UserError, match="not a GGUF one"):
        model_config(str(tmp_path / "w.bin"))


def test_truncated_responses_are_those_without_an_end():
    eos, pad = 2, 2  # pad = eos, as in SmolLM2
    ids = torch.tensor([[5, 6, eos, pad], [5, 6, 7, 8], [eos, pad, pad, pad]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.bool)
    rollout = Rollout(ids, mask, None, torch.tensor([0, 0, 0]))
    assert rollout.truncated([eos], limit=4).tolist() == [False, True, False]
    assert rollout.truncated([eos, 8], limit=4).tolist() == [False, False, False]  # ended on its last token
    assert rollout.truncated([eos], limit=5).tolist() == [False, False, False]  # under the limit: it stopped
