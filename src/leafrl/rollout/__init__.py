"""Sampling responses from a model: completions, their mask and their surprisal."""

from leafrl.rollout.hf import Completions, generate_completions

__all__ = ["Completions", "generate_completions"]
