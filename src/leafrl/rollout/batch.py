"""Examples -> model inputs through a model family: read each clip at the model's rate and
build each prompt with the family's chat template and audio placeholder."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from leafrl.audio.io import load_audio
from leafrl.errors import UserError
from leafrl.models.base import ModelFamily, collate_rows, split_rows

WORD_JOINER = "\u2060"
"""An invisible character (U+2060) that ``as_text`` puts inside a spelled special token."""


def special_texts(tokenizer: Any) -> list[str]:
    """The strings ``tokenizer`` reads as special (control) tokens wherever they appear in a text,
    longest first."""
    added = {t.content for t in tokenizer.added_tokens_decoder.values() if t.special}
    return sorted({s for s in added | set(tokenizer.all_special_tokens) if len(s) > 1}, key=len, reverse=True)


def as_text(text: str, specials: Sequence[str]) -> str:
    """``text`` (a row's prompt, a system prompt) with every spelling of a special token in
    ``specials`` kept as text: a word joiner after its first character, so the tokenizer reads the
    characters instead of the control token (``<|im_end|>`` in a prompt would otherwise end the
    turn). Text that spells none is returned as it is."""
    for special in specials:
        if special in text:
            text = text.replace(special, special[0] + WORD_JOINER + special[1:])
    return text


def build_prompts(family: ModelFamily, examples: Sequence[Any], system: str | None = None) -> list[str]:
    """Each row's full prompt (``family.build_prompt``), the user's text in it kept as text
    (``as_text``): the only special tokens in a prompt are the template's and the audio placeholder."""
    specials = special_texts(family.tokenizer)
    system = None if system is None else as_text(system, specials)
    return [family.build_prompt(as_text(ex.prompt, specials), system) for ex in examples]


def encode_examples(family: ModelFamily, examples: Sequence[Any],
                    system: str | None = None) -> dict[str, torch.Tensor]:
    """Model inputs (prompt rows, left-padded) for ``examples`` (leafrl.data.Example)."""
    prompts = build_prompts(family, examples, system)
    ids = [ex.id for ex in examples]
    for ex in examples:
        if (problem := modality_problem(ex, family)) is not None:
            raise UserError(problem)
    audios = None
    if family.sampling_rate is not None:
        audios = [load_audio(ex.audio, sampling_rate=family.sampling_rate, example_id=ex.id)
                  for ex in examples]
    return family.encode(prompts, audios, ids)


def modality_problem(example: Any, family: ModelFamily) -> str | None:
    """Why ``example`` does not suit the family (a row without audio for a speech model, a row
    with audio for a text-only one), naming the row; None when it does."""
    wants_audio = family.sampling_rate is not None
    if (example.audio is not None) == wants_audio:
        return None
    return f"example {example.id!r}: " + (f"no audio, but {family.name} needs a clip per prompt" if wants_audio
                                          else f"has audio, but {family.name} is a text-only model")


class EncodedRows:
    """``encode_examples`` for a training loop that draws the same rows again and again: each
    row is read and encoded once, on first use, and kept ([1, ...] tensors; for the built-in
    model about 66 KB a row, mostly its audio features), then batched with ``collate_rows``.
    A batch equals ``encode_examples`` of the same rows. Needs ``family.rows_encode_alone``.
    """

    def __init__(self, family: ModelFamily, examples: Sequence[Any], system: str | None = None):
        if not family.rows_encode_alone:
            raise UserError(f"{family.name}: a row's inputs depend on the rest of its batch, so rows "
                             "cannot be encoded once and batched later (leafrl sft: set cache_inputs=false)")
        self.family, self.examples, self.system = family, examples, system
        self.rows: dict[int, dict[str, torch.Tensor]] = {}

    def __call__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """Model inputs of the rows ``indices`` (left-padded, in that order)."""
        new = sorted(set(indices) - set(self.rows))
        if new:
            encoded = encode_examples(self.family, [self.examples[i] for i in new], self.system)
            self.rows.update(zip(new, split_rows(encoded)))
        return collate_rows([self.rows[i] for i in indices], self.family.pad_token_id)


def encode_targets(tokenizer: Any, texts: Sequence[str], eos_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference texts -> (ids [N, T], mask [N, T]) right-padded, each ending with eos. A text
    that spells a special token is tokenized as the characters it holds (never as the token)."""
    rows = [tokenizer(t, add_special_tokens=False, split_special_tokens=True)["input_ids"] + [eos_token_id]
            for t in texts]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.bool)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = True
    return ids, mask
