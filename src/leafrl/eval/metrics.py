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


def paired_bleu_test(before: Sequence[str], after: Sequence[str], references: Sequence[str], *,
                     n_samples: int = 1000, lowercase: bool = True) -> dict[str, float]:
    """Is ``after`` better than ``before`` on these references by more than the choice of examples
    explains? sacrebleu's paired bootstrap resampling (Koehn, 2004; seed 12345) of corpus BLEU.

    Returns {"bleu_before", "bleu_after", "delta", "p_value"} (sacrebleu's p-value of the null
    hypothesis that the two systems score the same; 1 for identical predictions, where sacrebleu's
    resampling degenerates) and "ci_after" (half-width of the 95% interval of ``after``'s BLEU).
    """
    from sacrebleu.metrics import BLEU
    from sacrebleu.significance import PairedTest

    if not (len(before) == len(after) == len(references)) or not references:
        raise ValueError(f"before ({len(before)}), after ({len(after)}) and references ({len(references)}) "
                         "must be equally long and non-empty")
    test = PairedTest([("before", list(before)), ("after", list(after))], {"BLEU": BLEU(lowercase=lowercase)},
                      references=[list(references)], test_type="bs", n_samples=n_samples)
    _, scores = test()
    first, second = scores["BLEU"]
    same = list(before) == list(after)
    return {"bleu_before": float(first.score), "bleu_after": float(second.score),
            "delta": float(second.score - first.score), "p_value": 1.0 if same else float(second.p_value),
            "ci_after": float(second.ci)}
