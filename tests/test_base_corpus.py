"""The built-in base model's corpus: the task's training clips answered in several sources'
conventions, at the stated shares, and a classifier that tells the conventions apart."""

import random
from collections import Counter

import pytest

from leafrl.data import grammar
from leafrl.data.base_corpus import ASR_FRACTION, CONVENTIONS, convention_of, corpus_rows, respond
from leafrl.data.demo import draw_rows

ROWS = draw_rows("train", 2000, seed=0, seen=set())


def test_every_clip_once_in_a_convention_plus_some_transcriptions():
    rows = corpus_rows(ROWS, seed=0)
    main = [r for r in rows if r["task"] != "asr"]
    assert [r["id"] for r in main] == [r["id"] for r in ROWS]  # each clip once, in order, same audio
    assert all(r["audio"] == t["audio"] and r["transcript"] == t["transcript"] for r, t in zip(main, ROWS))
    asr = [r for r in rows if r["task"] == "asr"]
    assert abs(len(asr) / len(ROWS) - ASR_FRACTION) < 0.03
    assert all(r["reference"] == r["transcript"] for r in asr)
    for task, shares in CONVENTIONS.items():
        counts = Counter(r["source"] for r in main if r["task"] == task)
        total = sum(counts.values())
        for name, share in shares.items():
            assert abs(counts[name] / total - share) < 0.05, (task, name, counts)
    assert rows == corpus_rows(ROWS, seed=0) and rows != corpus_rows(ROWS, seed=1)  # seeded


def test_the_prompt_does_not_tell_the_source():
    """Every convention comes with every prompt of its task's pool, the task's own among them."""
    rows = [r for r in corpus_rows(ROWS, seed=0) if r["task"] == "ast"]
    by_prompt = {}
    for r in rows:
        by_prompt.setdefault(r["prompt"], set()).add(r["source"])
    assert grammar.AST_PROMPT in by_prompt
    assert all(sources == set(CONVENTIONS["ast"]) for sources in by_prompt.values())


@pytest.mark.parametrize("task", ["ast", "sqa"])
def test_the_classifier_recovers_each_convention(task):
    rng = random.Random(0)
    rows = [r for r in ROWS if r["task"] == task][:300]
    for row in rows:
        for convention in CONVENTIONS[task]:
            text = respond(row, convention, rng)
            assert convention_of(text, task, row["reference"], row["transcript"]) == convention, (row, text)


def test_hand_written_answers():
    row = {"id": "x", "task": "sqa", "reference": "There are three apples.", "answer": "Three.",
           "transcript": "On the table there are three red apples and a blue car."}
    assert respond(row, "terse", random.Random(0)) == "Three."
    assert respond(row, "verbose", random.Random(1)).startswith(("Based on what the speaker describes, there are",
                                                               "The speaker says: On the table"))
    assert convention_of("Drei.", "sqa", row["reference"], row["transcript"]) == "terse"
    ast = {"reference": "ich sehe einen roten Hund.", "transcript": "I see a red dog."}
    assert convention_of("German: ich sehe einen roten Hund.", "ast", **ast) == "labelled"
    assert convention_of("I see a red dog.", "ast", **ast) == "transcript"
    assert convention_of("ich sehe einen blauen Hund.", "ast", **ast) == "task"
    with pytest.raises(ValueError, match="convention 'shout'"):
        respond(row, "shout", random.Random(0))
    with pytest.raises(ValueError, match="task 'asr'"):
        convention_of("x", "asr", "y", "z")


def test_short_answers_say_what_the_reference_says():
    scene = grammar.Scene("On the table", ((3, "red", "apple"), (1, "blue", "car")))
    cases = [("count", "apple", "", "Three."), ("count", "dog", "", "None."), ("color", "car", "", "Blue."),
             ("exists", "car", "", "Yes."), ("exists", "dog", "", "No."), ("exists_color", "car", "red", "No."),
             ("exists_color", "apple", "red", "Yes."), ("which", "car", "red", "The apples."),
             ("which", "car", "green", "Nothing.")]
    for kind, noun, color, short in cases:
        assert grammar.short_answer(scene, kind, noun, color) == short, (kind, noun, color)
    assert all(r["answer"] for r in ROWS if r["task"] == "sqa")
