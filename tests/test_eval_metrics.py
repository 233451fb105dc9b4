"""Held-out metrics: corpus BLEU and the paired bootstrap test of a change in BLEU."""

import random

import pytest

from leafrl.eval.metrics import corpus_bleu, paired_bleu_test

REFS = [f"ich sehe {n} rote hunde und eine katze" for n in ("zwei", "drei", "vier", "fünf")] * 50


def test_a_large_consistent_gain_is_significant():
    rng = random.Random(0)
    worse = [" ".join(rng.sample(r.split(), 4)) for r in REFS]
    better = [" ".join(r.split()[:6]) for r in REFS]
    result = paired_bleu_test(worse, better, REFS)
    assert result["bleu_before"] == pytest.approx(corpus_bleu(worse, REFS))
    assert result["bleu_after"] == pytest.approx(corpus_bleu(better, REFS))
    assert result["delta"] > 20 and result["p_value"] < 0.01


def test_a_change_on_one_row_is_not():
    after = list(REFS)
    after[0] = "ich sehe"
    result = paired_bleu_test(REFS, after, REFS)
    assert result["delta"] < 0 and result["p_value"] > 0.05


def test_identical_systems_are_not_different():
    preds = [" ".join(r.split()[:5]) for r in REFS]
    result = paired_bleu_test(preds, preds, REFS)
    assert result["delta"] == 0 and result["p_value"] > 0.5


def test_lengths_must_match():
    with pytest.raises(ValueError, match="equally long"):
        paired_bleu_test(["a"], ["a", "b"], ["a"])
