"""The report statistics against known answers."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from leafrl.eval.stats import bootstrap_interval, paired_difference, steps_to_reach, t_interval, wilson


def test_t_interval_by_hand():
    # mean 2, sd 1 over 3 values: half-width t(0.975, 2) / sqrt(3) = 4.302653 / 1.732051 = 2.484138
    mean, low, high = t_interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and low == pytest.approx(2 - 2.484138, abs=1e-5) and high == pytest.approx(2 + 2.484138,
                                                                                                    abs=1e-5)
    assert math.isnan(t_interval([5.0])[1])
    with pytest.raises(ValueError, match="values"):
        t_interval([])


def test_t_interval_covers_the_mean_at_its_rate():
    rng = np.random.default_rng(0)
    hits = sum(low <= 10.0 <= high for low, high in (t_interval(rng.normal(10, 3, 5))[1:] for _ in range(2000)))
    assert 0.93 <= hits / 2000 <= 0.97  # nominal 95%, small samples


def test_paired_difference_pairs_by_seed():
    a = {0: 10.0, 1: 12.0, 2: 11.0, 7: 99.0}
    b = {0: 9.0, 1: 10.0, 2: 8.0}
    d = paired_difference(a, b)
    assert d["seeds"] == [0, 1, 2] and d["diffs"] == [1.0, 2.0, 3.0] and d["mean"] == 2.0
    assert d["ci95"] == pytest.approx([2 - 2.484138, 2 + 2.484138], abs=1e-5)
    # paired t: t = 2 / (1 / sqrt 3) = 3.4641, df 2 -> two-sided p 0.07418
    assert d["p_value"] == pytest.approx(0.07418, abs=1e-4)
    assert paired_difference({0: 1.0, 1: 2.0}, {0: 1.0, 1: 2.0})["p_value"] == 1.0
    with pytest.raises(ValueError, match="no seed in common"):
        paired_difference({0: 1.0}, {1: 1.0})


def test_pairing_removes_the_shared_seed_effect():
    # seed effects of +-5 shared by both arms, a constant +1 advantage: the paired CI is tight
    seed_effect = [5.0, -5.0, 3.0, -2.0, 0.0]
    a = {s: 50 + e + 1.0 + 0.01 * s for s, e in enumerate(seed_effect)}
    b = {s: 50 + e for s, e in enumerate(seed_effect)}
    low, high = paired_difference(a, b)["ci95"]
    assert 0.9 < low < 1.02 < high < 1.1


def test_steps_to_reach():
    assert steps_to_reach([0, 40, 80, 120], [10.0, 30.0, 50.0, 55.0], 50.0) == 80
    assert steps_to_reach([0, 40], [10.0, 30.0], 31.0) is None


def test_curve_mean_by_hand():
    from leafrl.eval.stats import curve_mean

    assert curve_mean([0, 20, 40], [10.0, 30.0, 30.0]) == 25.0  # (20 * 20 + 20 * 30) / 40
    assert curve_mean([0, 10, 40], [0.0, 40.0, 40.0]) == 35.0  # unequal spacing: (10 * 20 + 30 * 40) / 40
    assert curve_mean([5], [7.0]) == 7.0
    with pytest.raises(ValueError, match="increase"):
        curve_mean([0, 0], [1.0, 2.0])
    with pytest.raises(ValueError, match="as many"):
        curve_mean([0, 1], [1.0])


def test_wilson_by_hand():
    # 8 of 10: centre (0.8 + 0.19207) / 1.38415 = 0.71678, half 0.23565 -> (0.4902, 0.9433)
    low, high = wilson(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4) and high == pytest.approx(0.9433, abs=1e-4)
    assert wilson(0, 5)[0] == 0.0 and wilson(5, 5)[1] == 1.0
    with pytest.raises(ValueError, match="wilson"):
        wilson(3, 2)


@given(st.integers(1, 500), st.data())
def test_wilson_contains_the_rate(n, data):
    k = data.draw(st.integers(0, n))
    low, high = wilson(k, n)
    assert 0.0 <= low <= k / n <= high <= 1.0


def test_bootstrap_interval_of_a_mean():
    x = np.random.default_rng(1).normal(0.0, 1.0, 400)
    low, high = bootstrap_interval(lambda idx: float(x[idx].mean()), len(x), seed=3)
    se = x.std() / 20
    assert low == pytest.approx(x.mean() - 1.96 * se, abs=0.4 * se)
    assert high == pytest.approx(x.mean() + 1.96 * se, abs=0.4 * se)
