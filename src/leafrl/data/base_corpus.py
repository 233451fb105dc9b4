"""The corpus the built-in base speech LLM learns from: the built-in task's training clips, each
answered as one of several *sources* would answer it.

A general speech LLM learns from many sources whose conventions disagree, so it does the target
task in the target data's style only some of the time (the paper's situation: its base models had
never seen LibriSQA, and other prompts than the one the authors chose made them transcribe
CoVoST2's English instead of translating it). The base corpus reproduces that on the built-in
clips. A row's source picks the response:

  - translation ("ast"): the German reference as the task writes it ("task"); the same German
    behind a label such as "German:" ("labelled"); or the English transcript ("transcript": a
    source whose translation requests were answered with what was said);
  - spoken QA ("sqa"): the task's short sentence ("task"); the bare answer, "Three." ("terse");
    or a long-winded answer that restates the scene or hedges ("verbose");
  - transcription ("asr"): extra rows asking for the transcript, as general corpora have.

The instruction does not tell the source: every row's prompt is drawn from one pool of
paraphrases per task, the task's own prompt among them. Held-out rows (valid, test) are not in
the corpus. ``convention_of`` tells which convention a model's answer follows, so a run can say
how often the model follows the task's before and after RL.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from typing import Any

from leafrl.data import grammar

AST_PROMPTS = (grammar.AST_PROMPT, "Translate this audio into German.", "What does the speaker say, in German?",
               "Please translate the speech to German.")
SQA_PROMPTS = (grammar.SQA_PROMPT, "Listen to the audio and answer the question.",
               "Answer the question about what you hear.")
ASR_PROMPTS = ("Transcribe the audio.", "Write down what the speaker says.", "What is said in this recording?")
LABELS = ("German:", "Translation:", "In German:")
VERBOSE = ("Based on what the speaker describes, {answer}", "The speaker says: {transcript} So: {reference}")
CONVENTIONS = {  # per task: convention -> share of the clips answered that way
    "ast": {"task": 0.3, "labelled": 0.35, "transcript": 0.35},
    "sqa": {"task": 0.3, "terse": 0.35, "verbose": 0.35},
}
ASR_FRACTION = 0.2  # of the clips also appear as a transcription row


def respond(row: dict, convention: str, rng: random.Random) -> str:
    """``row``'s response in ``convention`` (a key of ``CONVENTIONS[row["task"]]``)."""
    reference, transcript = row["reference"], row["transcript"]
    if convention == "task":
        return reference
    if convention == "labelled":
        return f"{rng.choice(LABELS)} {reference}"
    if convention == "transcript":
        return transcript
    if convention == "terse":
        return row["answer"]
    if convention == "verbose":
        answer = reference[0].lower() + reference[1:]
        return rng.choice(VERBOSE).format(answer=answer, transcript=transcript, reference=reference)
    raise ValueError(f"row {row['id']!r}: unknown convention {convention!r} for task {row['task']!r}")


def _prompt(row: dict, pool: Sequence[str], rng: random.Random) -> str:
    head = rng.choice(pool)
    return f"{head} Question: {row['question']}" if row["task"] == "sqa" else head


def corpus_rows(task_rows: Sequence[dict], seed: int = 0) -> list[dict]:
    """The base corpus of ``task_rows`` (built-in task manifest rows, audio paths as they are):
    one row per clip in a source's convention, plus a transcription row for ``ASR_FRACTION`` of
    the clips. Each row keeps the clip's ``transcript`` and records its ``source``."""
    rng = random.Random(f"leafrl-base-corpus/{seed}")
    rows = []
    for row in task_rows:
        if row["task"] not in CONVENTIONS:
            raise ValueError(f"row {row['id']!r}: task {row['task']!r} is not a built-in task "
                             f"({sorted(CONVENTIONS)})")
        shares = CONVENTIONS[row["task"]]
        convention = rng.choices(list(shares), weights=list(shares.values()))[0]
        pool = AST_PROMPTS if row["task"] == "ast" else SQA_PROMPTS
        rows.append({"id": row["id"], "audio": row["audio"], "prompt": _prompt(row, pool, rng),
                     "reference": respond(row, convention, rng), "task": row["task"],
                     "transcript": row["transcript"], "source": convention})
        if rng.random() < ASR_FRACTION:
            rows.append({"id": f"{row['id']}-asr", "audio": row["audio"], "prompt": rng.choice(ASR_PROMPTS),
                         "reference": row["transcript"], "task": "asr", "transcript": row["transcript"],
                         "source": "transcript"})
    return rows


def convention_of(prediction: str, task: str, reference: str, transcript: str) -> str:
    """Which convention ``prediction`` (a model's answer to a built-in task row) follows: "task"
    when it is in the task's style, else the name of the source convention it resembles."""
    text = prediction.strip()
    if task == "ast":
        if text.startswith(LABELS):
            return "labelled"
        from sacrebleu.metrics import CHRF

        chrf = CHRF()
        closer_to_english = chrf.sentence_score(text, [transcript]).score > chrf.sentence_score(text, [reference]).score
        return "transcript" if closer_to_english else "task"
    if task == "sqa":
        if text.startswith(tuple(v.split("{")[0].strip() for v in VERBOSE)):
            return "verbose"
        return "terse" if len(text.split()) <= 2 else "task"
    raise ValueError(f"task {task!r} is not a built-in task ({sorted(CONVENTIONS)})")


def convention_shares(rows: Sequence[Any], predictions: Sequence[str]) -> dict[str, float] | None:
    """{"TASK: CONVENTION": share of TASK's rows} of ``predictions`` to the built-in task's
    ``rows`` (Examples), or None when the rows are not the built-in task's."""
    if not all(ex.task in CONVENTIONS and "transcript" in ex.meta for ex in rows):
        return None
    kinds = [(ex.task, convention_of(text, ex.task, ex.reference, ex.meta["transcript"]))
             for ex, text in zip(rows, predictions)]
    per_task = Counter(task for task, _ in kinds)
    return {f"{task}: {kind}": n / per_task[task] for (task, kind), n in Counter(kinds).items()}
