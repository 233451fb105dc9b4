"""Corpus-level metrics over predictions and references (sacrebleu)."""

from __future__ import annotations

from collections.abc import Sequence


def corpus_bleu(predictions: Sequence[str], references: Sequence[str], *, lowercase: bool = True) -> float:
    """sacrebleu corpus BLEU (0-100), one reference per prediction. The paper evaluates
    lowercased; training rewards are cased sentence BLEU (see leafrl.rewards)."""
    import sacrebleu

    if len(predictions) != len(references):
        raise ValueError(f"predictions ({len(predictions)}) and references ({len(references)}) differ in length")
    if not predictions:
        raise ValueError("predictions: nothing to score")
    return float(sacrebleu.corpus_bleu(list(predictions), [list(references)], lowercase=lowercase).score)
