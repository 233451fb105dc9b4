"""Held-out metrics: corpus BLEU and the paired bootstrap test of a change in BLEU, over one
decoding pass (equal to sacrebleu's own test) or the mean of several."""

import random

import pytest

from leafrl.eval.metrics import corpus_bleu, paired_bootstrap

REFS = [f"ich sehe {n} rote hunde und eine katze" for n in ("zwei", "drei", "vier", "fünf")] * 50


def _worse_and_better(seed=0):
    rng = random.Random(seed)
    worse = [" ".join(rng.sample(r.split(), 4)) for r in REFS]
    better = [" ".join(r.split()[: rng.choice((5, 6, 7))]) for r in REFS]
    return worse, better


def test_a_large_consistent_gain_is_significant():
    worse, better = _worse_and_better()
    result = paired_bootstrap([worse], [better], REFS)
    assert result["bleu_before"] == pytest.approx(corpus_bleu(worse, REFS))
    assert result["bleu_after"] == pytest.approx(corpus_bleu(better, REFS))
    assert result["delta"] > 20 and result["p_value"] < 0.01


def test_one_pass_is_sacrebleus_paired_bootstrap():
    """(b) the same resamples, p-value and interval as sacrebleu's PairedTest (seed 12345)."""
    from sacrebleu.metrics import BLEU
    from sacrebleu.significance import PairedTest

    rng = random.Random(3)
    before = [" ".join(rng.sample(r.split(), 6)) for r in REFS]
    after = [r if rng.random() < 0.2 else b for r, b in zip(REFS, before)]
    _, scores = PairedTest([("before", before), ("after", after)], {"BLEU": BLEU(lowercase=True)},
                           references=[REFS], test_type="bs", n_samples=1000)()
    ours = paired_bootstrap([before], [after], REFS)
    assert ours["p_value"] == pytest.approx(scores["BLEU"][1].p_value)
    assert ours["ci_after"] == pytest.approx(scores["BLEU"][1].ci, rel=1e-5)
    assert ours["bleu_after"] == pytest.approx(scores["BLEU"][1].score)


def test_several_passes_score_their_mean():
    passes_before = [_worse_and_better(seed)[0] for seed in range(3)]
    passes_after = [_worse_and_better(seed)[1] for seed in range(3)]
    result = paired_bootstrap(passes_before, passes_after, REFS)
    mean_after = sum(corpus_bleu(p, REFS) for p in passes_after) / 3
    assert result["bleu_after"] == pytest.approx(mean_after)
    assert result["p_value"] < 0.01


def test_a_change_on_one_row_is_not():
    after = list(REFS)
    after[0] = "ich sehe"
    result = paired_bootstrap([REFS], [after], REFS)
    assert result["delta"] < 0 and result["p_value"] > 0.05


def test_identical_systems_are_not_different():
    preds = [" ".join(r.split()[:5]) for r in REFS]
    result = paired_bootstrap([preds], [preds], REFS)
    assert result["delta"] == 0 and result["p_value"] > 0.5


@pytest.mark.parametrize("before,after", [([["a"]], [["a", "b"]]), ([], [["a"]]), ([["a"]], [["a"], ["a", "b"]])])
def test_every_pass_needs_one_prediction_per_reference(before, after):
    with pytest.raises(ValueError, match=r"predictions each \(one per reference\)"):
        paired_bootstrap(before, after, ["a"])
