"""Credit-assignment metrics against hand-computed answers and a plain double-loop reference."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from leafrl.eval.credit import credit_metrics, token_correctness
from leafrl.eval.stats import bootstrap_interval


def _metrics(adv, right, mask=None, rewards=None, groups=None, **kw):
    adv = torch.tensor(adv, dtype=torch.float32)
    n, t = adv.shape
    mask = torch.ones(n, t, dtype=torch.bool) if mask is None else torch.tensor(mask)
    rewards = torch.zeros(n) if rewards is None else torch.tensor(rewards, dtype=torch.float64)
    groups = torch.zeros(n, dtype=torch.long) if groups is None else torch.tensor(groups)
    return credit_metrics(adv, mask, torch.tensor(right), rewards, groups, **kw)


def _loop_auc(adv, mask, right):
    """Mean over responses with both kinds of token of P(wrong < right) + 0.5 P(tie), pair by pair."""
    aucs = []
    for a, m, r in zip(adv, mask, right):
        wrong = [x for x, mm, rr in zip(a, m, r) if mm and not rr]
        good = [x for x, mm, rr in zip(a, m, r) if mm and rr]
        if wrong and good:
            score = sum(1.0 if w < g else 0.5 if w == g else 0.0 for w in wrong for g in good)
            aucs.append(score / (len(wrong) * len(good)))
    return sum(aucs) / len(aucs) if aucs else math.nan


def test_auc_by_hand():
    # wrong token -1 is below both right tokens 1 and 0.5: both pairs won
    assert _metrics([[1.0, -1.0, 0.5]], [[True, False, True]])["auc"]["value"] == 1.0
    # the wrong token at 0.2 ties the right one at 0.2
    assert _metrics([[0.2, 0.2]], [[True, False]])["auc"]["value"] == 0.5
    # wrong 0.5 beats right 0 (lost), loses to right 1 (won), ties right 0.5: (0 + 1 + 0.5) / 3
    assert _metrics([[0.0, 0.5, 1.0, 0.5]], [[True, False, True, True]])["auc"]["value"] == pytest.approx(0.5)
    # mean over responses: 1.0 and 0.0; the all-right third response is not eligible
    out = _metrics([[1.0, -1.0], [-1.0, 1.0], [3.0, 3.0]], [[True, False], [True, False], [True, True]])
    assert out["auc"]["value"] == 0.5


def test_auc_ignores_padding():
    # the padded slot would win the pair if it counted
    out = _metrics([[1.0, 0.0, -5.0]], [[True, False, False]], mask=[[True, True, False]])
    assert out["auc"]["value"] == 1.0
    out = _metrics([[0.0, 1.0, 9.0]], [[True, False, True]], mask=[[True, True, False]])
    assert out["auc"]["value"] == 0.0


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_response_constant_advantage_gives_exactly_half(data):
    n, t = data.draw(st.integers(1, 6)), data.draw(st.integers(1, 8))
    values = data.draw(st.lists(st.floats(-10, 10, allow_nan=False), min_size=n, max_size=n))
    right = torch.tensor(data.draw(st.lists(st.lists(st.booleans(), min_size=t, max_size=t), min_size=n, max_size=n)))
    lengths = data.draw(st.lists(st.integers(1, t), min_size=n, max_size=n))
    mask = torch.arange(t)[None, :] < torch.tensor(lengths)[:, None]
    adv = torch.tensor(values)[:, None].expand(n, t)  # GRPO: one value per response
    auc = credit_metrics(adv, mask, right, torch.zeros(n), torch.zeros(n, dtype=torch.long), n_samples=20)["auc"]
    eligible = ((mask & right).any(1) & (mask & ~right).any(1)).any()
    if eligible:
        assert auc["value"] == 0.5 and auc["low"] == 0.5 and auc["high"] == 0.5
    else:
        assert math.isnan(auc["value"])


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_auc_matches_double_loop(data):
    n, t = data.draw(st.integers(1, 6)), data.draw(st.integers(1, 8))
    adv = data.draw(st.lists(st.lists(st.sampled_from([-1.0, -0.5, 0.0, 0.25, 1.0]), min_size=t, max_size=t),
                             min_size=n, max_size=n))  # few values: many ties
    right = data.draw(st.lists(st.lists(st.booleans(), min_size=t, max_size=t), min_size=n, max_size=n))
    mask = data.draw(st.lists(st.lists(st.booleans(), min_size=t, max_size=t), min_size=n, max_size=n))
    out = _metrics(adv, right, mask=mask, n_samples=10)["auc"]["value"]
    expected = _loop_auc(adv, mask, right)
    assert (math.isnan(out) and math.isnan(expected)) or out == pytest.approx(expected, abs=1e-12)


def test_shares_by_hand_across_two_groups():
    # group 0: rewards 1 and 0 (mean 0.5, row 1 low); group 1: rewards 0.2, 0.2, 0.8 (mean 0.4, rows 2 and 3 low)
    adv = [[0.5, -0.5, 0.0],
           [-1.0, 0.0, 0.3],
           [0.1, -0.2, 9.0],
           [-0.3, -0.4, 0.0],
           [-2.0, 2.0, 0.0]]
    right = [[True, False, False],
             [True, True, False],
             [True, False, True],
             [False, True, True],
             [False, True, True]]
    mask = [[True, True, True],
            [True, True, True],
            [True, True, False],
            [True, True, True],
            [True, True, True]]
    out = _metrics(adv, right, mask=mask, rewards=[1.0, 0.0, 0.2, 0.2, 0.8], groups=[7, 7, 3, 3, 3])
    # wrong real tokens: -0.5, 0.0 | 0.3 | -0.2 | -0.3 | -2.0 -> 4 of 6 negative
    assert out["wrong_negative"]["value"] == pytest.approx(4 / 6)
    # right real tokens of low rows: -1.0, 0.0 | 0.1 (9.0 is padding) | -0.4, 0.0 -> 3 of 5 non-negative
    assert out["right_nonnegative_low"]["value"] == pytest.approx(3 / 5)


def test_equal_rewards_are_never_low():
    # three equal rewards whose float64 mean is 0.10000000000000002, not 0.1
    out = _metrics([[1.0]] * 3, [[True]] * 3, rewards=[0.1, 0.1, 0.1])
    assert math.isnan(out["right_nonnegative_low"]["value"])


def test_nan_when_nothing_is_eligible():
    out = _metrics([[1.0, 2.0], [0.5, 0.5]], [[True, True], [True, True]], rewards=[1.0, 0.0])
    assert math.isnan(out["auc"]["value"]) and math.isnan(out["auc"]["low"]) and math.isnan(out["auc"]["high"])
    assert math.isnan(out["wrong_negative"]["value"]) and math.isnan(out["wrong_negative"]["high"])
    assert out["right_nonnegative_low"]["value"] == 1.0  # row 1 is low, its tokens are >= 0


def _random_batch(n_groups, size=4, t=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = n_groups * size
    adv = torch.randn(n, t, generator=g)
    right = torch.rand(n, t, generator=g) < 0.6
    adv = adv + right  # right tokens tend to get more credit
    mask = torch.arange(t)[None, :] < torch.randint(1, t + 1, (n,), generator=g)[:, None]
    rewards = torch.rand(n, generator=g)
    groups = torch.arange(n_groups).repeat_interleave(size)[torch.randperm(n, generator=g)]  # rows interleaved
    return adv, mask, right, rewards, groups


def test_interval_contains_value_and_shrinks_with_more_groups():
    small = credit_metrics(*_random_batch(10), n_samples=500)
    large = credit_metrics(*_random_batch(200), n_samples=500)
    for name in ("auc", "wrong_negative", "right_nonnegative_low"):
        for out in (small, large):
            assert out[name]["low"] <= out[name]["value"] <= out[name]["high"], (name, out[name])
        assert large[name]["high"] - large[name]["low"] < 0.6 * (small[name]["high"] - small[name]["low"]), name
    assert small["auc"]["value"] > 0.6  # the planted signal is seen


def test_bootstrap_is_seeded_and_matches_resampling_groups():
    adv, mask, right, rewards, groups = _random_batch(15, seed=3)
    out = credit_metrics(adv, mask, right, rewards, groups, n_samples=200, seed=5)
    assert out == credit_metrics(adv, mask, right, rewards, groups, n_samples=200, seed=5)
    assert out != credit_metrics(adv, mask, right, rewards, groups, n_samples=200, seed=6)
    # the same interval, resample by resample, from the rows of the drawn groups
    wrong = (mask & ~right).numpy()
    negative = (adv < 0).numpy()
    rows = [np.flatnonzero(groups.numpy() == k) for k in range(15)]

    def share(indices):
        picked = np.concatenate([rows[i] for i in indices])
        return (wrong[picked] & negative[picked]).sum() / wrong[picked].sum()

    low, high = bootstrap_interval(share, 15, n_samples=200, seed=5)
    assert out["wrong_negative"]["low"] == pytest.approx(low) and out["wrong_negative"]["high"] == pytest.approx(high)


def test_token_correctness_by_hand():
    assert token_correctness([[5, 6, 7]], [[5, 6, 7]]) == [[True, True, True]]
    assert token_correctness([[5, 9, 7]], [[5, 6, 7]]) == [[True, False, True]]  # substitution
    assert token_correctness([[5, 6, 9, 7]], [[5, 6, 7]]) == [[True, True, False, True]]  # insertion
    assert token_correctness([[5, 7]], [[5, 6, 7]]) == [[True, True]]  # deletion: nothing generated is wrong
    assert token_correctness([[], [1]], [[1, 2], []]) == [[], [False]]
    assert token_correctness([], []) == []


def test_validation_names_the_argument():
    adv, mask, right = torch.zeros(2, 3), torch.ones(2, 3, dtype=torch.bool), torch.ones(2, 3, dtype=torch.bool)
    rewards, groups = torch.zeros(2), torch.zeros(2, dtype=torch.long)
    cases = {
        "advantages": (torch.zeros(0, 3), mask[:0], right[:0], rewards[:0], groups[:0]),
        "mask": (adv, mask.float(), right, rewards, groups),
        "right": (adv, mask, right[:, :2], rewards, groups),
        "rewards": (adv, mask, right, torch.zeros(3), groups),
        "group_ids": (adv, mask, right, rewards, torch.zeros(2)),
    }
    for name, args in cases.items():
        with pytest.raises(ValueError, match=name):
            credit_metrics(*args)
    with pytest.raises(ValueError, match="advantages"):
        credit_metrics(torch.zeros(2), mask, right, rewards, groups)
    with pytest.raises(ValueError, match="advantages"):
        credit_metrics(torch.tensor([[0.0, math.nan, 0.0], [0.0] * 3]), mask, right, rewards, groups)
    with pytest.raises(ValueError, match="mask"):
        credit_metrics(adv, mask[:1], right, rewards, groups)
    with pytest.raises(ValueError, match="reference_ids"):
        token_correctness([[1]], [])


def test_segment_oracle_by_hand():
    from leafrl.eval.credit import segment_oracle

    segments = torch.tensor([[0, 0, 1, 1, 2], [0, 0, 0, 1, 0]])
    mask = torch.tensor([[True] * 5, [True, True, True, True, False]])
    right = torch.tensor([[True, True, True, False, False], [True, False, True, True, True]])
    # row 0: segment 0 all right (1.0), segment 1 one of two (0.5), segment 2 wrong (0.0)
    # row 1: segment 0 two of three right, segment 1 right; padding 0
    got = segment_oracle(segments, mask, right)
    torch.testing.assert_close(got, torch.tensor([[1.0, 1.0, 0.5, 0.5, 0.0], [2 / 3, 2 / 3, 2 / 3, 1.0, 0.0]]))
    out = _metrics(got.tolist(), right.tolist(), mask=mask.tolist())
    # row 0: wrong tokens (0.5, 0.0) vs right (1, 1, 0.5): 5.5 of 6 pairs; row 1: one wrong at 2/3 vs 2/3, 2/3, 1
    assert out["auc"]["value"] == pytest.approx((5.5 / 6 + 2 / 3) / 2)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_segment_oracle_is_the_best_ranking_constant_on_segments(data):
    """No values constant on each row's segments rank its wrong tokens below its right ones better."""
    from leafrl.eval.credit import segment_oracle

    n, t = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 7))
    segments = torch.tensor([sorted(data.draw(st.lists(st.integers(0, 3), min_size=t, max_size=t)))
                             for _ in range(n)])
    right = torch.tensor(data.draw(st.lists(st.lists(st.booleans(), min_size=t, max_size=t), min_size=n, max_size=n)))
    mask = torch.ones(n, t, dtype=torch.bool)
    oracle = _metrics(segment_oracle(segments, mask, right).tolist(), right.tolist())["auc"]["value"]
    values = torch.tensor(data.draw(st.lists(st.floats(-1, 1, width=32), min_size=4 * n, max_size=4 * n))).view(n, 4)
    other = _metrics(values.gather(1, segments).tolist(), right.tolist())["auc"]["value"]
    assert math.isnan(oracle) and math.isnan(other) or oracle >= other - 1e-9


def test_auc_difference_is_paired():
    from leafrl.eval.credit import auc_difference

    right = torch.tensor([[True, False, True]] * 4)
    mask = torch.ones(4, 3, dtype=torch.bool)
    good = torch.tensor([[1.0, -1.0, 1.0]] * 4)  # AUC 1 on every row
    flat = torch.zeros(4, 3)  # AUC 0.5 on every row
    groups = torch.tensor([0, 0, 1, 1])
    out = auc_difference(good, flat, mask, right, groups, n_samples=200)
    assert out == {"value": 0.5, "low": 0.5, "high": 0.5}  # the same difference in every resample
    mixed = torch.tensor([[1.0, -1.0, 1.0], [-1.0, 1.0, -1.0], [1.0, -1.0, 1.0], [-1.0, 1.0, -1.0]])
    out = auc_difference(mixed, flat, mask, right, groups, n_samples=500)
    assert out["value"] == pytest.approx(0.0) and out["low"] <= 0.0 <= out["high"]
    assert auc_difference(good, good, mask, right, groups)["value"] == 0.0
    with pytest.raises(ValueError, match="advantages_b"):
        auc_difference(good, flat[:2], mask, right, groups)
