"""A hostile-but-realistic user, continued: numbers on the command line checked like the config's
settings, a one-seed comparison that says it has no interval, a memory plan without data, and
BLEU on languages written without spaces."""

import json
import re
import shutil

import numpy as np
import pytest

from test_compare import fake_run
from test_faults import leafrl, one_line_error, world  # noqa: F401

ZH_REFERENCE = "我喜欢在周末和朋友一起去公园散步"
ZH_ANSWER = "我喜欢在周末和朋友们一起去公园散步"  # one character more: a near-identical answer


# ------------------------------------------------------------------------- numbers on the line


@pytest.mark.parametrize(("args", "option", "value"), [
    (["eval", "--limit", "-3", "--out", "OUT"], "--limit", "-3"),  # was: the first 5 of 8 rows (a slice)
    (["eval", "--limit", "0", "--out", "OUT"], "--limit", "0"),  # was: an IndexError traceback
    (["eval", "--passes", "-1", "--out", "OUT"], "--passes", "-1"),
    (["credit", "--limit", "-1", "--out", "OUT"], "--limit", "-1"),  # was: all items but the last
    (["forks", "--limit", "0", "--out", "OUT"], "--limit", "0"),
    (["inspect", "--items", "0", "--html", "OUT"], "--items", "0"),
    (["compare", "--jobs", "0", "--seeds", "1", "--steps", "1", "--out", "OUT"], "--jobs", "0"),  # was: accepted
    (["plan", "--prompt-tokens", "0"], "--prompt-tokens", "0"),
])
def test_a_number_option_out_of_range_is_one_line_naming_it(world, tmp_path, capsys, args, option,  # noqa: F811
                                                             value):
    """Refused before anything is loaded or written, like a setting of the config."""
    args = [tmp_path / "out" if a == "OUT" else a for a in args]
    status, _, err = leafrl(capsys, *args, "--recipe", "paper", "--model", world / "model", "--data", world / "data")
    assert status == 1, err
    one_line_error(err, f"{option} {value}:", ">=")
    assert not (tmp_path / "out").exists()


def test_a_one_seed_comparison_says_it_has_no_interval(world, tmp_path, capsys, monkeypatch):  # noqa: F811
    """One seed gives no spread: the command's last line and report.md say "n/a: one seed"
    where a 95% interval (and a p-value) would be, never "nan"."""
    from leafrl import compare

    out = tmp_path / "cmp"
    fake_run(out / "runs" / "leaf" / "seed-0", 31.0, [10.0, 20.0], 20.0, 0.1)
    fake_run(out / "runs" / "grpo" / "seed-0", 30.0, [10.0, 20.0], 19.0, 0.1)
    monkeypatch.setattr(compare, "run_all", lambda *args, **kwargs: None)  # the runs above are finished
    status, text, err = leafrl(capsys, "compare", "--recipe", "paper", "--model", world / "model", "--data",
                               world / "data", "--seeds", "1", "--out", out, "--quiet")
    assert status == 0, err
    last = " ".join(text.split("leaf - grpo: greedy BLEU")[-1].split())
    assert last.startswith("+1.00 [n/a: one seed]; report in"), text
    report = (out / "report.md").read_text()
    assert "nan" not in report.lower() and "nan" not in text.lower()
    assert "| greedy | +1.00 | +1.00 [n/a: one seed] | n/a: one seed |" in report
    assert "| leaf | 31.00 [n/a: one seed] |" in report


# ------------------------------------------------------------------------------ leafrl plan


def plan_text(capsys, world, *args):  # noqa: F811
    status, text, err = leafrl(capsys, "plan", "--model", world / "model", *args)
    assert status == 0, err
    return " ".join(text.split())


def test_plan_without_data_plans_from_the_context_window_and_says_so(world, capsys):  # noqa: F811
    """Without --data, plan does not measure the recipe's own task (whose clips are longer than
    the tiny model's 3 s window: it used to fail listing 3,228 rows); it plans the longest prompt
    the model's context takes and says so."""
    text = plan_text(capsys, world, "--set", "rollout.max_new_tokens=40")
    assert ("prompt length: 472 tokens, the model's context window 512 minus rollout.max_new_tokens 40 "
            "(no --data given; pass --data or --prompt-tokens to measure)") in text
    text = plan_text(capsys, world, "--prompt-tokens", "100")
    assert "prompt length: 100 tokens, given with --prompt-tokens" in text


def test_plan_measures_data_that_fits_and_says_which_rows_do_not(world, tmp_path, capsys):  # noqa: F811
    text = plan_text(capsys, world, "--data", world / "data")
    measured = re.search(r"prompt length: (\d+) tokens, the longest of \S+ train split, measured", text)
    assert measured and int(measured.group(1)) < 100, text
    data = tmp_path / "data"
    shutil.copytree(world / "data", data)
    from leafrl.audio.io import write_audio

    write_audio(data / "audio" / "train3.wav", np.zeros(16000 * 5, dtype=np.float32), 16000)  # over the 3 s window
    text = plan_text(capsys, world, "--data", data, "--set", "rollout.max_new_tokens=40")
    assert "prompt length: 472 tokens, the model's context window 512 minus rollout.max_new_tokens 40" in text
    assert "1 of 8 rows cannot be used by this model" in text


# --------------------------------------------------------------------- BLEU without spaces


def test_chinese_bleu_is_tokenized_by_characters_of_its_script():
    """sacrebleu's default 13a sees a Chinese sentence as one word: a near-identical answer scored
    0. "auto" picks the zh tokenizer from the references, in the reward and the corpus BLEU; German
    and English keep 13a, so every earlier number stays."""
    import sacrebleu

    from leafrl.eval.metrics import bleu_tokenizer, corpus_bleu, text_metrics
    from leafrl.rewards import resolve_reward

    assert sacrebleu.sentence_bleu(ZH_ANSWER, [ZH_REFERENCE]).score == 0  # the bug, in sacrebleu's default
    assert resolve_reward("bleu")(ZH_ANSWER, ZH_REFERENCE) > 0.5
    assert corpus_bleu([ZH_ANSWER], [ZH_REFERENCE]) > 50
    assert text_metrics([ZH_ANSWER], [ZH_REFERENCE])["bleu_cased"] > 50
    assert bleu_tokenizer("auto", [ZH_REFERENCE, "我用Python写代码"]) == "zh"
    german = ["drei rote Äpfel und ein Auto", "the cat sat on the mat"]
    assert bleu_tokenizer("auto", german) == "13a"
    assert corpus_bleu(["drei rote Äpfel", "the cat sat"], german) == sacrebleu.corpus_bleu(
        ["drei rote Äpfel", "the cat sat"], [german], lowercase=True).score


def test_an_explicit_bleu_tokenizer_is_honoured_and_shown_in_the_signature():
    from leafrl.config import TrainConfig, load_config
    from leafrl.errors import UserError
    from leafrl.eval.metrics import bleu_signature, corpus_bleu
    from leafrl.rewards import resolve_reward

    answer, reference = "我们用Python写了代码", "我用Python写代码"  # char splits Python into letters, zh does not
    assert corpus_bleu([answer], [reference], tokenize="char") != corpus_bleu([answer], [reference])
    assert corpus_bleu([ZH_ANSWER], [ZH_REFERENCE], tokenize="13a") == 0
    assert resolve_reward("bleu", "13a")(ZH_ANSWER, ZH_REFERENCE) == 0
    assert "tok:char" in bleu_signature("char") and "case:lc" in bleu_signature("char")
    assert load_config(TrainConfig, overrides=["eval.bleu_tokenize=char"]).eval.bleu_tokenize == "char"
    with pytest.raises(UserError, match="eval.bleu_tokenize must be one of auto, 13a, zh"):
        load_config(TrainConfig, overrides=["eval.bleu_tokenize=spaces"])


def test_japanese_without_mecab_says_what_to_install():
    from leafrl.errors import UserError
    from leafrl.eval.metrics import bleu_tokenizer

    try:
        import ipadic  # noqa: F401
        import MeCab  # noqa: F401
        pytest.skip("MeCab is installed here")
    except ImportError:
        pass
    with pytest.raises(UserError, match=r"ja-mecab .*Japanese.*sacrebleu\[ja\].*eval.bleu_tokenize=char"):
        bleu_tokenizer("auto", ["私は東京に住んでいます"])
    assert bleu_tokenizer("char", ["私は東京に住んでいます"]) == "char"


def test_eval_shows_the_bleu_signature(world, tmp_path, capsys):  # noqa: F811
    """`leafrl eval` decides the tokenizer once from the rows it scores and writes sacrebleu's
    signature to metrics.json and the terminal: zh for Chinese references, the setting when set."""
    data = tmp_path / "data"
    shutil.copytree(world / "data", data)
    rows = [json.loads(line) for line in (data / "valid.jsonl").read_text().splitlines()]
    (data / "valid.jsonl").write_text("".join(json.dumps({**r, "reference": ZH_REFERENCE}, ensure_ascii=False) + "\n"
                                              for r in rows))
    common = ["eval", "--recipe", "paper", "--model", world / "model", "--data", data, "--passes", "0", "--quiet",
              "--set", "rollout.max_new_tokens=4"]
    for setting, tok in (([], "zh"), (["--set", "eval.bleu_tokenize=char"], "char")):
        out = tmp_path / tok
        status, text, err = leafrl(capsys, *common, *setting, "--out", out)
        assert status == 0, err
        signature = json.loads((out / "metrics.json").read_text())["bleu_signature"]
        assert f"tok:{tok}" in signature["bleu"] and "case:lc" in signature["bleu"]
        assert "case:mixed" in signature["bleu_cased"] and f"tok:{tok}" in signature["bleu_cased"]
        assert f"BLEU signature: {signature['bleu']}" in " ".join(text.split())
