"""The built-in base model shipped in the package: it loads, it was built for this build's task
format from this build's corpus (its tokenizer is the one the corpus trains), it answers held-out
clips in the mixed conventions it learnt, and the command that made it runs at reduced size."""

import json
import shutil

import pytest
import torch

from leafrl import builtin
from leafrl.config import TrainConfig
from leafrl.data.demo import FORMAT_VERSION

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")


def test_the_shipped_base_model_loads_in_float32_from_half_the_bytes():
    from leafrl.models import load_speech_lm

    path = builtin.base_model()
    info = json.loads((builtin.BASE_MODEL_DIR / "leafrl_base.json").read_text())
    assert info["task_format_version"] == FORMAT_VERSION
    model, family = load_speech_lm(path)
    assert family.name == "qwen2_audio" and next(model.parameters()).dtype == torch.float32
    size = (builtin.BASE_MODEL_DIR / "model.safetensors").stat().st_size
    assert size < 2.2 * sum(p.numel() for p in model.parameters())  # stored in 16 bits


def test_its_tokenizer_is_the_one_this_builds_corpus_trains():
    import inspect

    from leafrl.data import Example
    from leafrl.data.base_corpus import corpus_rows
    from leafrl.data.demo import build_demo, draw_all
    from leafrl.models import load_speech_lm
    from leafrl.models.tiny import TinyConfig, tiny_tokenizer
    from leafrl.sft import task_texts

    defaults = inspect.signature(build_demo).parameters
    sizes = {s: defaults[f"n_{s}"].default for s in ("train", "valid", "test")}
    rows = corpus_rows(draw_all(defaults["seed"].default, sizes)["train"])
    examples = [Example(id=r["id"], audio=None, prompt=r["prompt"], reference=r["reference"], task=r["task"],
                        meta={"transcript": r["transcript"]}) for r in rows]
    expected = tiny_tokenizer(task_texts(examples), TinyConfig().vocab_size)
    _, family = load_speech_lm(builtin.base_model())
    assert family.tokenizer.get_vocab() == expected.get_vocab()


def test_a_base_model_for_another_task_format_is_refused(tmp_path):
    with pytest.raises(ValueError, match="build-base"):
        builtin.base_model(tmp_path)  # nothing there
    (tmp_path / "leafrl_base.json").write_text(json.dumps({"task_format_version": FORMAT_VERSION - 1}))
    with pytest.raises(ValueError, match=f"format {FORMAT_VERSION - 1}.*rebuild"):
        builtin.base_model(tmp_path)


@needs_espeak
def test_it_answers_held_out_clips_in_the_conventions_it_learnt(tmp_path):
    """On new clips (another seed), the greedy answers are real answers, in more than one of the
    corpus's conventions: the starting point RL has something to teach."""
    from rich.console import Console

    from leafrl.data import load_split
    from leafrl.data.base_corpus import convention_of
    from leafrl.eval.evaluate import evaluate
    from leafrl.models import load_speech_lm

    task = builtin.prepare_task(Console(quiet=True), tmp_path / "task", seed=7, n_train=0, n_valid=24, n_test=0)
    rows = list(load_split(task, "valid"))
    model, family = load_speech_lm(builtin.base_model())
    e = TrainConfig().eval
    result = evaluate(model, family, rows, max_new_tokens=32, sampled_passes=2, temperature=e.temperature,
                      top_p=e.top_p, seed=e.seed, batch_size=e.batch_size)
    kinds = {convention_of(p, ex.task, ex.reference, ex.meta["transcript"])
             for r in (result.greedy, *result.sampled) for p, ex in zip(r.predictions, rows)}
    assert len(kinds) >= 3 and "task" in kinds, kinds
    assert result.greedy.bleu > 5


@needs_espeak
@pytest.mark.slow
def test_build_base_runs_at_reduced_size(tmp_path):
    from rich.console import Console

    from leafrl.models import load_speech_lm

    small = ["align_steps=2", "steps=2", "optim.batch_size=4", "eval.examples=2", "eval.max_new_tokens=4",
             "tiny.vocab_size=300", "tiny.text_dim=32", "tiny.text_layers=1", "tiny.audio_dim=32",
             "tiny.audio_layers=1"]
    info = builtin.build_base(tmp_path / "base", work=tmp_path / "work", console=Console(quiet=True),
                              task_sizes={"n_train": 12, "n_valid": 2, "n_test": 0}, sft_overrides=small)
    assert info["task_format_version"] == FORMAT_VERSION and info["sft"]["steps"] == 2
    assert builtin.base_model(tmp_path / "base") == str(tmp_path / "base")
    corpus = [json.loads(x) for x in (tmp_path / "work" / "corpus" / "train.jsonl").read_text().splitlines()]
    assert {r["id"].removesuffix("-asr") for r in corpus} == {f"train-{i:05d}" for i in range(12)}
    model, _ = load_speech_lm(str(tmp_path / "base"))
    assert next(model.parameters()).dtype == torch.float32
    assert not (tmp_path / "base.partial").exists()


def test_builtin_references_resolve_where_models_and_data_are_read(monkeypatch, tmp_path):
    """``builtin:conventions`` names the shipped base model wherever a model goes and the built-in
    task wherever data goes (synthesized on first use, never by several processes at once); a
    run's config keeps the reference, not an installation's path."""
    from leafrl.config import resolve_paths
    from leafrl.data import split_source
    from leafrl.errors import UserError
    from leafrl.models import load_speech_lm, model_config

    assert builtin.locate_model("builtin:conventions") == builtin.base_model()
    assert builtin.locate_model("builtin:local") == str(builtin.base_model_dir("local"))
    assert load_speech_lm("builtin:local")[1].name == "qwen2_audio"
    assert builtin.locate_model("some/model") == "some/model" and builtin.locate_data("d") == "d"
    assert model_config("builtin:conventions").model_type == "qwen2_audio"
    assert load_speech_lm("builtin:conventions")[1].name == "qwen2_audio"
    with pytest.raises(UserError, match="builtin:nope: no such built-in; leafrl has builtin:conventions"):
        builtin.locate_model("builtin:nope")
    made = []
    (tmp_path / "valid.jsonl").write_text("")
    monkeypatch.setattr(builtin, "prepare_task", lambda console, name: made.append(name) or tmp_path)
    assert split_source("builtin:conventions", "valid") == str(tmp_path / "valid.jsonl") and made == ["conventions"]
    assert split_source("builtin:local", "valid") == str(tmp_path / "valid.jsonl") and made[-1] == "local"
    monkeypatch.setenv("LEAFRL_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UserError, match="before starting several processes"):
        builtin.locate_data("builtin:conventions")
    cfg = resolve_paths(TrainConfig(model="builtin:conventions", data="builtin:conventions"))
    assert (cfg.model, cfg.data) == ("builtin:conventions", "builtin:conventions")


@needs_espeak
@pytest.mark.slow
def test_build_local_base_fine_tunes_the_conventions_base(tmp_path):
    from rich.console import Console

    from leafrl.data.local_corpus import slot_outcomes

    small = ["steps=2", "optim.batch_size=4", "eval.examples=2", "eval.max_new_tokens=4"]
    info = builtin.build_base(tmp_path / "base", name="local", work=tmp_path / "work", console=Console(quiet=True),
                              task_sizes={"n_train": 12, "n_valid": 2, "n_test": 0}, sft_overrides=small)
    assert info["command"] == "leafrl build-base --builtin local" and info["sft"]["steps"] == 2
    task = [json.loads(x) for x in (tmp_path / "work" / "task" / "train.jsonl").read_text().splitlines()]
    corpus = [json.loads(x) for x in (tmp_path / "work" / "corpus" / "train.jsonl").read_text().splitlines()]
    assert {r["task"] for r in task} == {"ast"} and [r["id"] for r in corpus] == [r["id"] for r in task]
    wrong = [not right for row, varied in zip(task, corpus)
             for _, right in slot_outcomes([row["reference"]], [varied["reference"]])[0]]
    assert 0 < sum(wrong) < len(wrong)  # some slots confused, not all
    assert builtin.base_model(tmp_path / "base") == str(tmp_path / "base")


def test_build_base_and_data_demo_refuse_the_text_builtin(tmp_path):
    from leafrl.errors import UserError

    with pytest.raises(UserError, match="no base model to build for 'text'"):
        builtin.build_base(tmp_path / "base", name="text")
    from leafrl.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["data", "demo", "--builtin", "text", "--out", str(tmp_path / "t")])
    assert exit_info.value.code == 1 and not (tmp_path / "t").exists()
