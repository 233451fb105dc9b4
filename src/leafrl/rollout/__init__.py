"""Sampling responses from a model: the rollout record (ids, mask, surprisal, groups, rewards)."""

from leafrl.rollout.hf import generate_completions
from leafrl.rollout.record import Rollout

__all__ = ["Rollout", "generate_completions"]
