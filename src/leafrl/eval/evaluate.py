"""Decode a held-out set and score it: greedy or sampled passes, corpus BLEU."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from leafrl.eval.metrics import corpus_bleu
from leafrl.rollout.batch import encode_examples
from leafrl.rollout.hf import generate_completions


@dataclass(frozen=True)
class EvalResult:
    bleu: float  # lowercased corpus BLEU (the paper's evaluation)
    bleu_cased: float
    predictions: list[str]


def evaluate(model: Any, adapter: Any, examples: Sequence[Any], *, max_new_tokens: int,
             batch_size: int = 32, do_sample: bool = False, temperature: float = 1.0,
             top_p: float = 1.0, seed: int | None = None, progress: Any = None) -> EvalResult:
    """Decode every example once (greedy unless do_sample) and score against its reference.

    progress: an optional callable ``progress(n_done)`` for a progress bar.
    """
    if seed is not None:
        torch.manual_seed(seed)
    was_training = model.training
    model.eval()
    predictions: list[str] = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        inputs = {k: v.to(model.device) for k, v in encode_examples(adapter, chunk).items()}
        out = generate_completions(model, adapter, inputs, do_sample=do_sample,
                                   max_new_tokens=max_new_tokens, temperature=temperature,
                                   top_p=top_p, surprisal=None)
        predictions += [p.strip() for p in adapter.decode(out.ids)]
        if progress is not None:
            progress(len(predictions))
    model.train(was_training)
    references = [ex.reference for ex in examples]
    return EvalResult(corpus_bleu(predictions, references), corpus_bleu(predictions, references, lowercase=False),
                      predictions)
