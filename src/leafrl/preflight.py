"""Checks of a split against the model before the first step, so that a run never dies at hour
three on a row drawn late: every clip's header is read (not decoded) and the clip measured, and
every prompt's length counted with its audio tokens against the model's context. All the rows
that fail are named in one error.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Any

from leafrl.audio.io import AudioError, clip_seconds
from leafrl.data import DataError, split_source
from leafrl.models import ModelFamily, context_length, load_speech_lm
from leafrl.rollout.batch import build_prompts, modality_problem, special_texts
from leafrl.tracking import warn

SHOWN = 10  # rows named in the error; the rest are counted


def check_rows(examples: Sequence[Any], family: ModelFamily, context: int | None,
               new_tokens: int | Sequence[int], source: str, system: str | None = None) -> list[int]:
    """Raise one DataError naming every row of ``examples`` that the model cannot take: audio
    missing (or given to a text-only model), unreadable, too short for the audio encoder or longer
    than its feature window, or a prompt that with ``new_tokens`` (one count, or one per row)
    does not fit in ``context`` tokens (None: no limit known). ``source`` names the split; ``system``
    is the system prompt the rows are built with. Returns each row's prompt length in tokens."""
    new = [new_tokens] * len(examples) if isinstance(new_tokens, int) else list(new_tokens)
    problems, samples = [], []
    shortest = None if family.sampling_rate is None else shortest_clip(family)
    for ex in examples:
        problem, n = _audio_problem(ex, family, shortest)
        samples.append(n)
        if problem is not None:
            problems.append(problem)
    problems += _special_text(examples, family, source)
    lengths = [] if problems else prompt_tokens(family, examples, samples, system)
    if context is not None:
        for ex, length, extra in zip(examples, lengths, new):
            if length + extra > context:
                problems.append(f"example {ex.id!r}: its prompt is {length} tokens (audio included), and with "
                                f"{extra} new tokens that is over the model's context of {context}; shorten the "
                                "prompt, drop the row or allow fewer new tokens")
    if problems:
        more = f"\n  and {len(problems) - SHOWN} more" if len(problems) > SHOWN else ""
        raise DataError(f"{source}: {len(problems)} of {len(examples)} rows cannot be used; fix or drop them:\n  "
                        + "\n  ".join(problems[:SHOWN]) + more)
    return lengths


WARNED: set[str] = set()  # the sources whose special-token text was reported (once per process)


def _special_text(examples: Sequence[Any], family: ModelFamily, source: str) -> list[str]:
    """The rows whose text holds the model's audio placeholder, as problems (leafrl inserts it
    itself; a row's own one would be read as an audio slot); rows whose text spells other special
    tokens are reported once, as kept as text (``rollout.batch.as_text``)."""
    placeholders = family.tokenizer.convert_ids_to_tokens(family.suppress_token_ids)
    specials = special_texts(family.tokenizer)
    problems, spelled = [], {}
    for ex in examples:
        for field in ("prompt", "reference"):
            text = getattr(ex, field)
            if held := [p for p in placeholders if p in text]:
                problems.append(f"example {ex.id!r}: its {field} holds {held[0]}, the model's audio placeholder, "
                                "which leafrl inserts itself; remove it from the row")
            elif found := [s for s in specials if s in text]:
                spelled.setdefault(ex.id, found[0])
    if spelled and source not in WARNED:
        WARNED.add(source)
        shown = ", ".join(f"{row!r} ({token})" for row, token in list(spelled.items())[:SHOWN])
        warn(f"{source}: {len(spelled)} rows spell special tokens of the model's tokenizer in their text: {shown}"
             f"{' ...' if len(spelled) > SHOWN else ''}; kept as text, never read as control tokens")
    return problems


def load_checked(model_name: str, dtype: Any, data: str, splits: dict[str, Sequence[Any]], new_tokens: int,
                 system: str | None) -> tuple[Any, ModelFamily]:
    """(model, family) of ``model_name`` in ``dtype``, after checking every row of ``splits``
    ({split name of ``data``: rows}) against it (``check_rows``, ``new_tokens`` each)."""
    model, family = load_speech_lm(model_name, dtype=dtype)
    for split, rows in splits.items():
        check_rows(rows, family, context_length(model), new_tokens, split_source(data, split), system)
    return model, family


def longest_prompt(examples: Sequence[Any], family: ModelFamily, system: str | None = None) -> int:
    """The most tokens a prompt of ``examples`` takes, audio tokens included (clips measured from
    their headers; rows the model cannot take raise as in ``check_rows``)."""
    return max(check_rows(examples, family, None, 0, "the rows", system))


def _audio_problem(ex: Any, family: ModelFamily, shortest: int | None) -> tuple[str | None, int]:
    """(what is wrong with the row's audio or None, its samples at the model's rate); ``shortest``:
    the fewest samples the family's encoder takes (``shortest_clip``)."""
    rate = family.sampling_rate
    if (problem := modality_problem(ex, family)) is not None:
        return problem, 0
    if rate is None:
        return None, 0
    try:
        seconds = clip_seconds(ex.audio, example_id=ex.id)
    except AudioError as err:
        return str(err), 0
    where = f"example {ex.id!r}" + (f" ({ex.audio})" if isinstance(ex.audio, str) else "")
    samples = round(seconds * rate)
    if samples < shortest:
        return (f"{where}: {seconds:.4f} s of audio, shorter than the {shortest / rate:.4f} s the {family.name} "
                "audio encoder needs to give one frame"), samples
    if family.max_audio_seconds is not None and seconds > family.max_audio_seconds:
        return (f"{where}: {seconds:.2f} s of audio, over the {family.max_audio_seconds:g} s feature window of "
                f"{family.name}; cut it or drop the row"), samples
    return None, samples


def shortest_clip(family: ModelFamily) -> int:
    """The fewest samples whose clip gives at least one audio token (``family.audio_tokens``)."""
    window = family.sampling_rate * 60  # a clip of a minute gives tokens in any family
    return bisect.bisect_left(range(window), 1, key=family.audio_tokens)


def prompt_tokens(family: ModelFamily, examples: Sequence[Any], samples: Sequence[int],
                  system: str | None = None) -> list[int]:
    """Each row's prompt length in tokens as the model reads it: the built prompt's text tokens,
    with the one audio placeholder expanded to the clip's ``audio_tokens(samples)``."""
    prompts = build_prompts(family, examples, system)
    plain = family.sampling_rate is None and family.tokenizer.chat_template is None
    lengths = [len(ids) for ids in family.tokenizer(prompts, add_special_tokens=plain)["input_ids"]]
    if family.sampling_rate is None:
        return lengths
    return [length - 1 + family.audio_tokens(n) for length, n in zip(lengths, samples)]
