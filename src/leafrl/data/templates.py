"""The paper's prompt handling: 3 training templates per task family, one fixed AST eval prompt.

The spec says training prompts use one of 3 templates chosen by a hash of the question (spoken
QA) or of the source transcript (speech translation, AST), and that AST evaluation uses one
fixed prompt. The authors' exact wording is not public in our spec: the templates below are
ours, written to keep the same structure (question-bearing templates for spoken QA, translation
instructions for AST).

The choice uses SHA-256 of the UTF-8 text (stripped), never Python's salted ``hash()``, so a
row gets the same template in every process, on every machine, under any PYTHONHASHSEED.
Prompts are plain text: the model family adds its audio placeholder and chat template.
"""

from __future__ import annotations

import hashlib

TASK_SQA = "sqa"
"""Spoken question answering (LibriSQA, long-audio QA): the prompt carries the question."""
TASK_AST = "ast"
"""Speech translation (CoVoST2): the prompt is an instruction; the source text is not shown."""

SQA_TEMPLATES = (
    "Listen to the recording and answer the question.\nQuestion: {question}",
    "{question}\nAnswer using only what is said in the audio.",
    "Answer the following question about the speech you just heard: {question}",
)
AST_TEMPLATES = (
    "Translate the {source_lang} speech into {target_lang}.",
    "Listen to the {source_lang} audio and write its {target_lang} translation.",
    "What is the {target_lang} translation of this {source_lang} recording? "
    "Reply with the translation only.",
)
AST_EVAL_PROMPT = "Translate the {source_lang} speech into {target_lang}."
"""The one AST evaluation prompt (valid and test rows), whatever the source text."""


def template_index(text: str, n: int = 3) -> int:
    """Stable index in ``[0, n)`` from SHA-256 of ``text.strip()`` (first 8 bytes, big-endian)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    digest = hashlib.sha256(text.strip().encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % n


def sqa_prompt(question: str) -> str:
    """Training and evaluation prompt for spoken QA: a template chosen by the question's hash."""
    if not question.strip():
        raise ValueError("sqa_prompt: empty question")
    return SQA_TEMPLATES[template_index(question, len(SQA_TEMPLATES))].format(question=question.strip())


def ast_prompt(source_text: str, *, evaluation: bool = False, source_lang: str = "English",
               target_lang: str = "German") -> str:
    """AST prompt: a training template chosen by the hash of ``source_text`` (the transcript),
    or the fixed :data:`AST_EVAL_PROMPT` when ``evaluation`` is True."""
    if evaluation:
        return AST_EVAL_PROMPT.format(source_lang=source_lang, target_lang=target_lang)
    if not source_text.strip():
        raise ValueError("ast_prompt: empty source_text (the template is chosen by its hash)")
    template = AST_TEMPLATES[template_index(source_text, len(AST_TEMPLATES))]
    return template.format(source_lang=source_lang, target_lang=target_lang)
