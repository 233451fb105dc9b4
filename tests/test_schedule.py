"""The paper's schedule: 5% linear warmup, cosine to 0.1 x lr at the last real step."""

import pytest

from leafrl.schedule import warmup_cosine


def test_hand_values():
    # 100 steps, 5% warmup: steps 0..4 climb 0.2, 0.4, ..., 1.0 x peak
    assert [warmup_cosine(s, 100, 1.0, 0.05, 0.1) for s in range(5)] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert warmup_cosine(5, 100, 1.0, 0.05, 0.1) == pytest.approx(1.0)  # cosine starts at the peak
    # halfway through the decay (progress 0.5): floor + (1 - floor) / 2
    mid = 5 + (99 - 5) / 2
    assert warmup_cosine(int(mid), 100, 1.0, 0.05, 0.1) == pytest.approx(0.55, abs=0.02)
    assert warmup_cosine(99, 100, 2.0, 0.05, 0.1) == pytest.approx(0.2)  # the floor at the last step
    assert warmup_cosine(0, 1, 1.0, 0.05, 0.1) == 1.0  # a one-step run trains at the peak
