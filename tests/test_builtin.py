"""The built-in base model shipped in the package: it loads, it was built for this build's task
format from this build's corpus (its tokenizer is the one the corpus trains), it answers held-out
clips in the mixed conventions it learnt, and the command that made it runs at reduced size."""

import json
import shutil

import pytest
import torch

from leafrl import builtin
from leafrl.data.demo import FORMAT_VERSION

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")


def test_the_shipped_base_model_loads_in_float32_from_half_the_bytes():
    from leafrl.models import load_speech_lm

    path = builtin.base_model()
    info = json.loads((builtin.BASE_MODEL_DIR / "leafrl_base.json").read_text())
    assert info["task_format_version"] == FORMAT_VERSION
    model, adapter = load_speech_lm(path)
    assert adapter.family == "qwen2_audio" and next(model.parameters()).dtype == torch.float32
    size = (builtin.BASE_MODEL_DIR / "model.safetensors").stat().st_size
    assert size < 2.2 * sum(p.numel() for p in model.parameters())  # stored in 16 bits


def test_its_tokenizer_is_the_one_this_builds_corpus_trains():
    import inspect

    from leafrl.data import Example
    from leafrl.data.base_corpus import corpus_rows
    from leafrl.data.demo import build_demo, draw_all
    from leafrl.models import load_speech_lm
    from leafrl.models.tiny import TinySize, tiny_tokenizer
    from leafrl.sft import task_texts

    defaults = inspect.signature(build_demo).parameters
    sizes = {s: defaults[f"n_{s}"].default for s in ("train", "valid", "test")}
    rows = corpus_rows(draw_all(defaults["seed"].default, sizes)["train"])
    examples = [Example(id=r["id"], audio=None, prompt=r["prompt"], reference=r["reference"], task=r["task"],
                        meta={"transcript": r["transcript"]}) for r in rows]
    expected = tiny_tokenizer(task_texts(examples), TinySize().vocab_size)
    _, adapter = load_speech_lm(builtin.base_model())
    assert adapter.tokenizer.get_vocab() == expected.get_vocab()


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
    model, adapter = load_speech_lm(builtin.base_model())
    result = evaluate(model, adapter, rows, max_new_tokens=32, sampled_passes=2)
    kinds = {convention_of(p, ex.task, ex.reference, ex.meta["transcript"])
             for r in (result.greedy, *result.sampled) for p, ex in zip(r.predictions, rows)}
    assert len(kinds) >= 3 and "task" in kinds, kinds
    assert result.greedy.bleu > 5


@needs_espeak
@pytest.mark.slow
def test_build_base_runs_at_reduced_size(tmp_path):
    from rich.console import Console

    from leafrl.models import load_speech_lm

    small = ["align_steps=2", "steps=2", "batch_size=4", "eval_examples=2", "max_new_tokens=4",
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
