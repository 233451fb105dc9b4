"""Prompt templates: stable choice across processes, spread over the 3 templates, fixed AST eval."""

import os
import subprocess
import sys
from collections import Counter

import pytest

from leafrl.data.templates import (
    AST_EVAL_PROMPT,
    AST_TEMPLATES,
    SQA_TEMPLATES,
    ast_prompt,
    sqa_prompt,
    template_index,
)

TEXTS = ["What is the man doing?", "Wo ist der Bahnhof?", "the cat sat on the mat", "Ünïcødé ✓", "a"]


def test_three_templates_per_family():
    assert len(SQA_TEMPLATES) == 3 and len(AST_TEMPLATES) == 3
    assert all("{question}" in t for t in SQA_TEMPLATES)


def test_choice_is_pinned():
    # SHA-256 based: these indices must never change, or old runs' prompts would change too.
    # sha256(b"What is the man doing?")[:8] as a big-endian int, mod 3.
    import hashlib

    for text in TEXTS:
        expected = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") % 3
        assert template_index(text) == expected
    assert template_index("  What is the man doing?\n") == template_index("What is the man doing?")


@pytest.mark.parametrize("seed", ["0", "12345"])
def test_choice_is_stable_across_processes(seed):
    code = ("from leafrl.data.templates import template_index, sqa_prompt, ast_prompt; "
            f"t = {TEXTS!r}; print([template_index(x) for x in t]); "
            "print([sqa_prompt(x) for x in t] == [sqa_prompt(x) for x in t])")
    env = {**os.environ, "PYTHONHASHSEED": seed}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    indices, _ = out.stdout.strip().splitlines()
    assert indices == str([template_index(x) for x in TEXTS])


def test_spread_over_the_three_templates():
    counts = Counter(template_index(f"question number {i}?") for i in range(3000))
    assert set(counts) == {0, 1, 2}
    assert all(850 <= c <= 1150 for c in counts.values()), counts  # 1000 +- ~6 sd


def test_sqa_prompt_carries_the_question_and_no_model_tokens():
    for text in TEXTS:
        prompt = sqa_prompt(text)
        assert text.strip() in prompt
        assert prompt == SQA_TEMPLATES[template_index(text)].format(question=text.strip())
        assert "<" not in prompt and "{" not in prompt


def test_ast_training_prompt_is_an_instruction_chosen_by_the_source():
    prompts = {ast_prompt(f"sentence {i}") for i in range(60)}
    expected = {t.format(source_lang="English", target_lang="German") for t in AST_TEMPLATES}
    assert prompts == expected
    assert ast_prompt("Hello there") == ast_prompt("Hello there")
    assert "Hello" not in ast_prompt("Hello there")  # the transcript is never shown to the model


def test_ast_eval_prompt_is_fixed():
    fixed = {ast_prompt(f"sentence {i}", evaluation=True) for i in range(60)}
    assert fixed == {AST_EVAL_PROMPT.format(source_lang="English", target_lang="German")}
    assert ast_prompt("", evaluation=True) in fixed
    french = ast_prompt("x", evaluation=True, target_lang="French")
    assert french == "Translate the English speech into French."


@pytest.mark.parametrize("call", [lambda: sqa_prompt("  "), lambda: ast_prompt(""),
                                  lambda: template_index("x", 0)])
def test_bad_inputs_raise(call):
    with pytest.raises(ValueError):
        call()
