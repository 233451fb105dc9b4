"""Statistics of the reports: intervals over seeds, paired differences, Wilson intervals,
bootstrap intervals over groups. Plain functions of numbers (numpy, scipy)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): Student's t interval of the mean of ``values`` (one per seed). One value
    gives an interval of NaN (no spread to estimate)."""
    from scipy import stats

    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("values: nothing to summarize")
    mean = float(x.mean())
    if x.size < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.5 + confidence / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return mean, mean - half, mean + half


def paired_difference(a: Mapping[int, float], b: Mapping[int, float], confidence: float = 0.95) -> dict:
    """``a`` - ``b`` seed by seed (the seeds both have), with the t interval of the mean
    difference: {"seeds", "diffs", "mean", "ci95": [low, high], "p_value"} (two-sided paired t-test;
    NaN with fewer than two seeds)."""
    from scipy import stats

    seeds = sorted(set(a) & set(b))
    if not seeds:
        raise ValueError(f"no seed in common: {sorted(a)} and {sorted(b)}")
    diffs = [a[s] - b[s] for s in seeds]
    mean, low, high = t_interval(diffs, confidence)
    p_value = math.nan
    if len(diffs) > 1:
        p_value = 1.0 if np.allclose(diffs, 0.0) else float(stats.ttest_1samp(diffs, 0.0).pvalue)
    return {"seeds": seeds, "diffs": diffs, "mean": mean, "ci95": [low, high], "p_value": p_value}


def steps_to_reach(steps: Sequence[int], values: Sequence[float], target: float) -> int | None:
    """The first step whose value is at least ``target`` (None when none is)."""
    for step, value in zip(steps, values):
        if value >= target:
            return int(step)
    return None


def curve_mean(steps: Sequence[float], values: Sequence[float]) -> float:
    """The area under a learning curve (trapezoids between its points) divided by the steps it
    spans: the curve's mean over training. A single point is its own mean."""
    if len(steps) != len(values) or not steps:
        raise ValueError(f"curve_mean: need as many values as steps (at least one), got {len(steps)} and {len(values)}")
    if any(b <= a for a, b in zip(steps, steps[1:])):
        raise ValueError(f"curve_mean: steps must increase, got {list(steps)}")
    if len(steps) == 1:
        return float(values[0])
    area = sum((b - a) * (u + v) / 2 for a, b, u, v in zip(steps, steps[1:], values, values[1:]))
    return area / (steps[-1] - steps[0])


def wilson(successes: int, trials: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval (95% by default) of a rate successes / trials."""
    if trials <= 0 or not 0 <= successes <= trials:
        raise ValueError(f"wilson: need 0 <= successes <= trials and trials > 0, got {successes}/{trials}")
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    # at 0 and at n successes the bounds are exactly 0 and 1 (rounding would put them a hair inside)
    return (0.0 if successes == 0 else centre - half), (1.0 if successes == trials else centre + half)


def bootstrap_interval(statistic: Callable[[np.ndarray], float], n_units: int, *, n_samples: int = 1000,
                       seed: int = 0, confidence: float = 0.95) -> tuple[float, float]:
    """Percentile interval of ``statistic(indices)`` over resamples of ``n_units`` units (drawn
    with replacement), where the statistic reads the units it is given."""
    if n_units < 1:
        raise ValueError("bootstrap_interval: no units to resample")
    rng = np.random.default_rng(seed)
    draws = [statistic(rng.integers(0, n_units, n_units)) for _ in range(n_samples)]
    draws = [d for d in draws if math.isfinite(d)]
    if not draws:
        return math.nan, math.nan
    low, high = np.quantile(draws, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(low), float(high)
