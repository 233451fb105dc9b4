"""The learning-rate schedule of the paper: linear warmup, then cosine decay to a floor."""

from __future__ import annotations

import math


def warmup_cosine(step: int, total: int, peak: float, warmup_frac: float, floor_ratio: float) -> float:
    """lr of optimizer step ``step`` (0-based) of ``total``: linear warmup over
    max(1, warmup_frac * total) steps to ``peak``, then cosine down to ``floor_ratio * peak``
    at the last step (the horizon is the real number of optimizer steps)."""
    warmup = max(1, int(warmup_frac * total))
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - 1 - warmup)
    return peak * (floor_ratio + (1 - floor_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))
