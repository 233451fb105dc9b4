"""leafrl.rewards: hand-checked values, user functions, and errors that name the example."""

import math
import sys

import pytest

from leafrl.rewards import compute_rewards, exact_match, resolve_reward, token_f1


def test_sentence_bleu_is_cased_and_scaled_to_one():
    bleu = resolve_reward("bleu")
    assert bleu("drei rote Äpfel und ein Auto", "drei rote Äpfel und ein Auto") == pytest.approx(1.0)
    assert bleu("Drei Rote Äpfel und ein Auto", "drei rote Äpfel und ein Auto") < 1.0  # cased
    assert bleu("völlig anders", "drei rote Äpfel und ein Auto") == pytest.approx(0.0, abs=0.05)
    # whitespace in predictions is normalized before scoring
    assert compute_rewards(bleu, ["  drei rote   Äpfel und ein Auto "], ["drei rote Äpfel und ein Auto"],
                           ["x"]) == pytest.approx([1.0])


def test_wer_chrf_exact_f1():
    # one substitution in four words: WER 1/4 -> 0.75
    assert resolve_reward("wer")("the car is red", "the car is blue") == pytest.approx(0.75)
    assert resolve_reward("wer")("", "the car") == 0.0
    assert 0 < resolve_reward("chrf")("the car is red", "the car is blue") < 1
    assert exact_match("The car is blue.", "the car is blue") == 1.0
    # f1: prediction {car, red} vs reference {car, blue} -> p = r = 1/2 -> 0.5 ("the"/"is" kept)
    assert token_f1("car red", "car blue") == pytest.approx(0.5)
    assert token_f1("", "car") == 0.0


def test_user_function_and_bad_names(tmp_path, monkeypatch):
    (tmp_path / "myreward.py").write_text(
        "def length_ratio(p, r):\n    return len(p) / len(r)\n\ndef broken(p, r):\n    return float('nan')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    fn = resolve_reward("myreward:length_ratio")
    assert compute_rewards(fn, ["ab"], ["abcd"], ["r1"]) == [0.5]
    with pytest.raises(ValueError, match="'r7'"):
        compute_rewards(resolve_reward("myreward:broken"), ["a"], ["b"], ["r7"])
    for bad in ("meteor", "myreward:nope", "nomodule_xyz:f"):
        with pytest.raises(ValueError, match="reward"):
            resolve_reward(bad)
    sys.modules.pop("myreward", None)


def test_rewards_need_matching_lengths():
    with pytest.raises(ValueError):
        compute_rewards(lambda p, r: 1.0, ["a", "b"], ["a"], ["x", "y"])
    assert math.isfinite(compute_rewards(lambda p, r: 1, ["a"], ["a"], ["x"])[0])
