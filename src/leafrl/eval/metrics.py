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


def paired_bootstrap(before: Sequence[Sequence[str]], after: Sequence[Sequence[str]], references: Sequence[str], *,
                     n_samples: int = 1000, seed: int = 12345, lowercase: bool = True) -> dict[str, float]:
    """Is ``after`` better than ``before`` by more than the choice of rows explains? Paired
    bootstrap resampling (Koehn, 2004) of the mean corpus BLEU over decoding passes: each system
    is a list of passes, each pass one prediction per reference (greedy: one pass; the paper's
    sampled evaluation: five). Every resample draws rows with replacement and scores every pass
    of both systems on the same rows. With one pass this is sacrebleu's paired bootstrap test
    (same seed, resamples and p-value: the share of centred resampled differences above the
    observed one).

    Returns {"bleu_before", "bleu_after", "delta", "p_value"} (1 for identical predictions,
    where resampling degenerates) and "ci_after" (half-width of the 95% interval of ``after``).
    """
    import numpy as np
    from sacrebleu.metrics import BLEU
    from sacrebleu.significance import estimate_ci

    n = len(references)
    if not n or not before or not after or any(len(p) != n for p in (*before, *after)):
        raise ValueError(f"before and after: give one or more passes of {n} predictions each (one per "
                         f"reference), got {[len(p) for p in before]} and {[len(p) for p in after]}")
    metric = BLEU(lowercase=lowercase)
    refs = [list(references)]

    def scores(passes: Sequence[Sequence[str]], idxs: np.ndarray) -> tuple[float, np.ndarray]:
        """(mean BLEU of the passes, their mean BLEU on each resample [n_samples])."""
        stats = [np.array(metric._extract_corpus_statistics(list(p), refs), dtype="float32") for p in passes]
        observed = float(np.mean([metric._aggregate_and_compute(s.tolist()).score for s in stats]))
        sampled = np.mean([[metric._compute_score_from_stats(x.sum(0)).score for x in s[idxs]] for s in stats], 0)
        return observed, sampled

    idxs = np.random.default_rng(seed).choice(n, size=(n_samples, n), replace=True)
    first, first_resampled = scores(before, idxs)
    second, second_resampled = scores(after, idxs)
    diffs = np.abs(second_resampled - first_resampled)
    p_value = (np.sum(diffs - diffs.mean() > abs(second - first)).item() + 1) / (n_samples + 1)
    same = [list(p) for p in before] == [list(p) for p in after]
    return {"bleu_before": first, "bleu_after": second, "delta": second - first,
            "p_value": 1.0 if same else float(p_value),
            "ci_after": float(estimate_ci(second_resampled)[1])}
