"""The built-in local regime's task rows and base corpus (leafrl.data.local_corpus, demo MIXES["local"])."""

import random
from collections import Counter

import pytest

from leafrl.data import grammar
from leafrl.data import local_corpus as lc
from leafrl.data.demo import draw_all, draw_rows

SENTENCE = "Ich brauche einen weißen Hut und viele Bälle und hier ist ein Haus."


def test_slots_of_a_sentence_by_hand():
    got = [(lc.words(SENTENCE)[s.index], s.kind) for s in lc.slots(SENTENCE)]
    assert got == [("einen", "article"), ("weißen", "ending"), ("viele", "article"), ("Bälle", "plural"),
                   ("ein", "article")]
    einen = lc.slots(SENTENCE)[0]
    assert set(einen.alternatives) == {"ein", "eine", "einem", "einer"}
    assert set(lc.slots(SENTENCE)[1].alternatives) == {"weiße", "weißer", "weißes"}
    assert lc.slots(SENTENCE)[3].alternatives == ("Bällen",)
    # a determiner before "ist"/"sind" is a pronoun subject; a plural equal to its singular is no slot
    assert [s.kind for s in lc.slots("Ich sehe zwei Schlüssel, aber das ist der Hund.")] == ["article"]
    assert lc.join(lc.words(SENTENCE)) == SENTENCE


def test_vary_replaces_each_slot_by_its_fixed_confusion():
    assert lc.vary(SENTENCE, random.Random(0), p_wrong=0.0) == SENTENCE
    everything = lc.vary(SENTENCE, random.Random(0), p_wrong=1.0)
    tokens, original = lc.words(everything), lc.words(SENTENCE)
    slots = lc.slots(SENTENCE)
    for slot in slots:
        assert tokens[slot.index] == lc.confusion(original[slot.index], slot.alternatives)
        assert tokens[slot.index] in slot.alternatives
    others = set(range(len(original))) - {s.index for s in slots}
    assert all(tokens[i] == original[i] for i in others)
    assert lc.vary(SENTENCE, random.Random(1), p_wrong=1.0) == everything  # the confusion does not depend on the rng


def test_local_task_rows_are_two_clause_translations():
    rows = draw_all(0, {"train": 200, "valid": 50, "test": 50}, mix="local")
    assert all(r["task"] == "ast" for split in rows.values() for r in split)
    for row in rows["train"]:
        conjunctions = sum(f" {c} " in f" {row['transcript']} " or f"{c} " in row["transcript"]
                           for c in ("and", "or", "but", "because"))
        assert conjunctions >= 1 and len(row["reference"].split()) <= grammar.MAX_DE_TOKENS
    assert rows["train"] != draw_rows("train", 200, 0, set())  # another draw than the conventions task
    assert draw_all(0, {"train": 20, "valid": 5, "test": 5}, mix="local") == \
        draw_all(0, {"train": 20, "valid": 5, "test": 5}, mix="local")


def test_corpus_slots_are_wrong_at_the_rate_and_independently():
    task = draw_all(0, {"train": 3000, "valid": 1, "test": 1}, mix="local")["train"]
    corpus = lc.corpus_rows(task, seed=0)
    assert [r["id"] for r in corpus] == [r["id"] for r in task] and {r["source"] for r in corpus} == {"local"}
    pairs, wrong = Counter(), []
    for row, varied in zip(task, corpus):
        outcome = [right for _, right in lc.slot_outcomes([row["reference"]], [varied["reference"]])[0]]
        wrong += [not right for right in outcome]
        pairs.update(zip([not r for r in outcome], [not r for r in outcome[1:]]))  # neighbouring slots
    rate = sum(wrong) / len(wrong)
    assert abs(rate - lc.P_WRONG) < 0.02
    n = sum(pairs.values())
    both = pairs[(True, True)] / n
    assert abs(both - rate**2) < 0.03  # neighbouring slots are wrong together as often as by chance
    assert lc.corpus_rows(task[:50], seed=0) == corpus[:50] and lc.corpus_rows(task[:50], seed=1) != corpus[:50]
    with pytest.raises(ValueError, match="translation"):
        lc.corpus_rows([{**task[0], "task": "sqa"}])


def test_slot_outcomes_and_report_by_hand():
    reference = "Ich sehe einen roten Hund."  # slots: einen (article), roten (ending)
    wrong_article = "Ich sehe einem roten Hund."
    both_wrong = "Ich sehe einem rote Hund."
    assert lc.slot_outcomes([reference], [reference]) == [[("article", True), ("ending", True)]]
    assert lc.slot_outcomes([reference], [wrong_article]) == [[("article", False), ("ending", True)]]
    report = lc.slot_report([reference, reference], [[wrong_article, both_wrong], [reference, both_wrong]])
    # article: wrong in 3 of 4 (pass@1 0.25), right in some pass for row 0 only; ending: wrong in 2 of 4
    assert report["article"] == {"slots": 2, "error": 0.75, "pass@1": 0.25, "pass@2": 0.5}
    assert report["ending"] == {"slots": 2, "error": 0.5, "pass@1": 0.5, "pass@2": 0.5}
    assert report["all"]["slots"] == 4 and report["all"]["error"] == pytest.approx(0.625)
    assert "plural" not in report
    with pytest.raises(ValueError, match="predictions"):
        lc.slot_outcomes([reference], [])
    with pytest.raises(ValueError, match="passes"):
        lc.slot_report([reference], [])
