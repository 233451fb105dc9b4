"""The corpus the built-in *local* base model learns from, and the word slots it disagrees on.

The built-in local regime (``builtin:local``) asks for what the conventions regime does not: a
base model that already answers in the task's form, but at several independent places in each
answer chooses among plausible words, and is often right in some of its samples. The task is
the built-in speech translation of two-clause sentences (``leafrl.data.demo.MIXES["local"]``:
German references of about 15 tokens). The corpus answers each training clip with its German
reference in which every *slot* is, independently with probability ``P_WRONG``, replaced by
the form's usual confusion (``confusion``: one wrong form of the same paradigm, fixed per form),
as sources that agree on the answer's form but not on German inflection would write it:

  - "article": a determiner (der/die/das/den/dem, ein-, kein-, einige/n, viele/n) takes another
    form of its own paradigm ("einen Hund" -> "einem Hund");
  - "ending": an attributive adjective takes another ending (-e, -en, -er, -es);
  - "plural": a plural noun gains or loses the dative -n ("mit drei Tassen"; "Hunde" <-> "Hunden").

The prompt is always the task's. Nothing in a row tells which slots are wrong, so the model
learns each slot's distribution: the confusion more often than the right form (P_WRONG > 1/2),
so its greedy answers are wrong at most slots, while the right form is among its samples (pass@8
near 1). Its errors are scattered and independent within a response: a lesson made of many
local choices, unlike the conventions regime's one global choice.

``slots`` finds the slots of a German sentence; ``slot_outcomes`` says, per slot of each
reference, whether a prediction has the right word there (``leafrl eval``'s per-slot errors).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from difflib import SequenceMatcher
from typing import NamedTuple

from leafrl.data import grammar

P_WRONG = 0.6  # each slot is its confusion in the corpus with this probability, independently
KINDS = ("article", "ending", "plural")
PARADIGMS = (("der", "die", "das", "den", "dem"), ("ein", "eine", "einen", "einem", "einer"),
             ("kein", "keine", "keinen", "keinem", "keiner"), ("einige", "einigen"), ("viele", "vielen"))
ENDINGS = ("e", "en", "er", "es")
ADJECTIVE_STEMS = tuple(sorted(set(grammar.ADJECTIVES.values()), key=len, reverse=True))
# Plurals with a distinct dative form (-n added): not those ending in -n or -s, nor those equal to
# their singular (Schlüssel, Löffel: a form that could be either number is no slot).
DATIVE_PLURALS = {n.de_plural: n.de_plural + "n" for n in grammar.NOUNS.values()
                  if not n.de_plural.endswith(("n", "s")) and n.de_plural != n.de}
_ARTICLE = {form: paradigm for paradigm in PARADIGMS for form in paradigm}
_PLURAL = {**{p: d for p, d in DATIVE_PLURALS.items()}, **{d: p for p, d in DATIVE_PLURALS.items()}}
_WORD = re.compile(r"\w+|[^\w\s]")


class Slot(NamedTuple):
    index: int  # the word's index in ``words(text)``
    kind: str  # one of KINDS
    alternatives: tuple[str, ...]  # the wrong variants


def words(text: str) -> list[str]:
    """``text`` as words and punctuation marks: "Ich sehe einen Hund." -> [..., "Hund", "."]."""
    return _WORD.findall(text)


def _adjective_alternatives(word: str) -> tuple[str, ...] | None:
    for stem in ADJECTIVE_STEMS:
        ending = word[len(stem):]
        if word.startswith(stem) and ending in ENDINGS:
            return tuple(stem + e for e in ENDINGS if e != ending)
    return None


def slots(text: str) -> list[Slot]:
    """The slots of a German reference of the built-in grammar, in order (see the module
    docstring). A determiner directly before "ist" / "sind" is a pronoun subject, not a slot."""
    out = []
    tokens = words(text)
    for i, word in enumerate(tokens):
        after = tokens[i + 1] if i + 1 < len(tokens) else ""
        if word in _ARTICLE and after not in ("ist", "sind"):
            out.append(Slot(i, "article", tuple(f for f in _ARTICLE[word] if f != word)))
        elif (alternatives := _adjective_alternatives(word)) is not None:
            out.append(Slot(i, "ending", alternatives))
        elif word in _PLURAL:
            out.append(Slot(i, "plural", (_PLURAL[word],)))
    return out


def join(tokens: Sequence[str]) -> str:
    """Words and punctuation back into text (no space before punctuation)."""
    return re.sub(r" ([^\w\s])", r"\1", " ".join(tokens))


def confusion(word: str, alternatives: Sequence[str]) -> str:
    """The wrong form the corpus writes for ``word``: one of its ``alternatives``, drawn once by
    a generator seeded with the word (the same in every build)."""
    return random.Random(f"leafrl-local-confusion/{word}").choice(sorted(alternatives))


def vary(text: str, rng: random.Random, p_wrong: float = P_WRONG) -> str:
    """``text`` with each slot, independently with probability ``p_wrong``, replaced by its
    ``confusion``."""
    tokens = words(text)
    for slot in slots(text):
        if rng.random() < p_wrong:
            tokens[slot.index] = confusion(tokens[slot.index], slot.alternatives)
    return join(tokens)


def corpus_rows(task_rows: Sequence[dict], seed: int = 0) -> list[dict]:
    """The local base corpus of ``task_rows`` (the built-in local task's manifest rows): each row
    with its reference varied by ``vary`` (seeded), its ``source`` "local"."""
    rng = random.Random(f"leafrl-local-corpus/{seed}")
    rows = []
    for row in task_rows:
        if row["task"] != "ast":
            raise ValueError(f"row {row['id']!r}: task {row['task']!r}; the local corpus is of translation rows")
        rows.append({**row, "reference": vary(row["reference"], rng), "source": "local"})
    return rows


def slot_outcomes(references: Sequence[str], predictions: Sequence[str]) -> list[list[tuple[str, bool]]]:
    """Per reference, [(kind, right)] for each of its slots: right when the prediction's words,
    aligned with the reference's (``difflib.SequenceMatcher``), match the reference's word there."""
    if len(references) != len(predictions):
        raise ValueError(f"predictions: expected {len(references)} (one per reference), got {len(predictions)}")
    out = []
    for reference, prediction in zip(references, predictions):
        ref = words(reference)
        matched = set()
        for a, _, size in SequenceMatcher(None, ref, words(prediction), autojunk=False).get_matching_blocks():
            matched.update(range(a, a + size))
        out.append([(slot.kind, slot.index in matched) for slot in slots(reference)])
    return out


def slot_report(references: Sequence[str], passes: Sequence[Sequence[str]]) -> dict[str, dict[str, float]]:
    """Per slot kind (and "all"): {"slots", "error" (mean over passes of the share of slots wrong),
    "pass@1" (1 - error), "pass@K" (share of slots right in at least one of the K passes)} for K =
    len(passes) prediction lists of ``references``."""
    if not passes:
        raise ValueError("passes: expected at least one list of predictions")
    outcomes = [slot_outcomes(references, predictions) for predictions in passes]  # [K][row][slot]
    table: dict[str, list[list[bool]]] = {}
    for r, row in enumerate(outcomes[0]):
        for s, (kind, _) in enumerate(row):
            rights = [outcomes[k][r][s][1] for k in range(len(passes))]
            table.setdefault(kind, []).append(rights)
            table.setdefault("all", []).append(rights)
    k = len(passes)
    report = {}
    for kind in (*KINDS, "all"):
        rights = table.get(kind, [])
        if not rights:
            continue
        pass1 = sum(sum(r) for r in rights) / (k * len(rights))
        report[kind] = {"slots": len(rights), "error": 1 - pass1, "pass@1": pass1,
                        f"pass@{k}": sum(any(r) for r in rights) / len(rights)}
    return report
