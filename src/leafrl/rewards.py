"""Terminal rewards of responses against references, one float per response.

Built in: ``bleu`` (sentence BLEU / 100, cased, sacrebleu: the paper's training reward; tokenized
as eval.bleu_tokenize sets, by default from the reference's language: ``eval.metrics.bleu_tokenizer``),
``chrf`` (sentence chrF / 100), ``wer`` (1 - WER with jiwer, floored at 0), ``exact`` (exact
match after normalization) and ``f1`` (token F1 after normalization). Or ``module:function``:
any importable ``function(prediction: str, reference: str) -> float``; an exception it raises
is reported with the function's name and the example.

Whitespace in predictions is normalized (stripped, runs collapsed) before scoring. A reward
that is not a finite number raises ValueError naming the example.
"""

from __future__ import annotations

import functools
import importlib
import math
import re
import string
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from leafrl.errors import UserError

BUILT_IN = ("bleu", "chrf", "wer", "exact", "f1")


def _normalize_answer(text: str) -> str:
    """Lowercase, drop punctuation and articles, collapse spaces (SQuAD-style)."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def sentence_bleu(prediction: str, reference: str, tokenize: str = "auto") -> float:
    """Cased sentence BLEU / 100, tokenized by ``tokenize`` (an eval.bleu_tokenize setting)."""
    from leafrl.eval.metrics import sentence_bleu as bleu

    return bleu(prediction, reference, tokenize=tokenize) / 100


def sentence_chrf(prediction: str, reference: str) -> float:
    import sacrebleu

    return sacrebleu.sentence_chrf(prediction, [reference]).score / 100


def one_minus_wer(prediction: str, reference: str) -> float:
    import jiwer

    return max(0.0, 1.0 - jiwer.wer(reference, prediction)) if prediction else 0.0


def exact_match(prediction: str, reference: str) -> float:
    return float(_normalize_answer(prediction) == _normalize_answer(reference))


def token_f1(prediction: str, reference: str) -> float:
    pred, ref = _normalize_answer(prediction).split(), _normalize_answer(reference).split()
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


FUNCTIONS: dict[str, Callable[[str, str], float]] = {
    "bleu": sentence_bleu, "chrf": sentence_chrf, "wer": one_minus_wer, "exact": exact_match, "f1": token_f1,
}


def resolve_reward(name: str, bleu_tokenize: str = "auto") -> Callable[[str, str], float]:
    """A built-in reward by name, or ``module:function`` imported from the Python path;
    ``bleu_tokenize``: the tokenizer of the ``bleu`` reward (eval.bleu_tokenize)."""
    if name == "bleu" and bleu_tokenize != "auto":
        from leafrl.eval.metrics import bleu_tokenizer

        return functools.partial(sentence_bleu, tokenize=bleu_tokenizer(bleu_tokenize, []))  # checked now
    if name in FUNCTIONS:
        return FUNCTIONS[name]
    module, sep, attr = name.partition(":")
    if not sep or not module or not attr:
        raise UserError(f"reward {name!r}: use one of {BUILT_IN} or 'module:function'")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:
        raise UserError(f"reward {name!r}: cannot import {attr!r} from {module!r} ({err})") from err
    if not callable(fn):
        raise UserError(f"reward {name!r}: {attr} is not callable")
    return fn


def compute_rewards(reward: Callable[[str, str], float], predictions: Sequence[str],
                    references: Sequence[str], ids: Sequence[str]) -> list[float]:
    """One reward per prediction. A reward that raises, or returns anything but a finite number,
    raises ValueError naming the reward function (``module:function``) and the example."""
    out = []
    for prediction, reference, row_id in zip(predictions, references, ids, strict=True):
        try:
            value = reward(" ".join(prediction.split()), reference)
        except Exception as err:  # a user's function: any exception, named with its row
            name = f"{getattr(reward, '__module__', '?')}:{getattr(reward, '__qualname__', repr(reward))}"
            raise UserError(f"reward {name} raised {type(err).__name__} on example {row_id!r}: {err} "
                             f"(prediction {prediction[:60]!r})") from err
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
            raise UserError(f"example {row_id!r}: reward {value!r} is not a finite number "
                             f"(prediction {prediction[:60]!r})")
        out.append(float(value))
    return out


def group_rewards(reward: Callable[[str, str], float], texts: Sequence[str], examples: Sequence[Any],
                  k: int) -> list[float]:
    """Rewards of K responses per example: ``texts[i * k + j]`` is response j to ``examples[i]``
    (errors name it ``id#j``)."""
    refs = [ex.reference for ex in examples for _ in range(k)]
    return compute_rewards(reward, texts, refs, [f"{ex.id}#{j}" for ex in examples for j in range(k)])

