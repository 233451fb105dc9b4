"""The rollout record: K sampled responses per prompt, from the generate call that made them to
the trainer, the analysis commands (forks, credit, inspect) and the saved rollout files.

Notation used for tensor shapes:
    N rows = G prompts x K responses, T completion tokens.

A file of saved rollouts (``OUT/rollouts/step-NNNNNN.json``, written by ``leafrl train`` at each
evaluation) is one JSON object: {"step", "algo", "groups": [{"id", "task", "prompt",
"reference", "responses": [{"text", "pieces", "ids", "surprisal", "reward"}]}]}; ``pieces`` are
the decoded tokens (special tokens included); ``ids`` / ``surprisal`` cover the real tokens only.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from leafrl._files import write_text_atomic
from leafrl.errors import UserError


@dataclass(frozen=True)
class Rollout:
    """K responses to each of G prompts; row g*K + k is response k to prompt g.

    ids [N, T] long: the sampled tokens, the pad token after each response's end.
    mask [N, T] bool: the real tokens, up to and including the first end-of-sequence token.
    surprisal [N, T] float32: -log p of each sampled token, read from the call that sampled it;
        0 on padding; None when not read (greedy decoding).
    group_ids [N] long: the prompt (group) of each row, 0 .. G-1.
    rewards [N] float32: each response's reward, once scored (None before).
    """

    ids: torch.Tensor
    mask: torch.Tensor
    surprisal: torch.Tensor | None
    group_ids: torch.Tensor
    rewards: torch.Tensor | None = None

    @property
    def n_groups(self) -> int:
        """G: the number of prompts."""
        return int(self.group_ids[-1]) + 1 if len(self.group_ids) else 0

    def truncated(self, eos_token_ids: Sequence[int], limit: int) -> torch.Tensor:
        """[N] bool: the responses cut at the length limit (``limit`` real tokens, the last no
        end-of-sequence token): a prefix of what the model would have said, worth counting. A stop
        string completed by exactly the last allowed token counts as cut too."""
        lengths = self.mask.sum(1)  # [N]
        last = self.ids.gather(1, (lengths - 1).clamp(min=0)[:, None]).squeeze(1)
        return (lengths >= limit) & ~torch.isin(last, torch.tensor(list(eos_token_ids), device=self.ids.device))

    def scored(self, rewards: Sequence[float] | torch.Tensor) -> Rollout:
        """This rollout with ``rewards`` [N]."""
        return replace(self, rewards=torch.as_tensor(rewards, dtype=torch.float32, device=self.ids.device))

    def first_groups(self, n: int) -> Rollout:
        """The rows of the first ``n`` groups."""
        rows = int((self.group_ids < n).sum())
        return Rollout(self.ids[:rows], self.mask[:rows], None if self.surprisal is None else self.surprisal[:rows],
                       self.group_ids[:rows], None if self.rewards is None else self.rewards[:rows])


def grouped(k: int, n_groups: int, device: Any = None) -> torch.Tensor:
    """group_ids [G * k] of ``n_groups`` prompts' k consecutive rows each."""
    return torch.arange(n_groups, device=device).repeat_interleave(k)


def concat(parts: Sequence[Rollout], pad_token_id: int) -> Rollout:
    """One rollout of ``parts`` in order (their groups renumbered after each other), padded to the
    longest."""
    width = max(p.ids.shape[1] for p in parts)

    def cat(tensors: list[torch.Tensor], fill: Any) -> torch.Tensor:
        return torch.cat([torch.nn.functional.pad(x, (0, width - x.shape[1]), value=fill) for x in tensors])

    offsets = torch.tensor([0] + [p.n_groups for p in parts[:-1]]).cumsum(0).tolist()
    scored = all(p.rewards is not None for p in parts)
    return Rollout(cat([p.ids for p in parts], pad_token_id), cat([p.mask for p in parts], False),
                   None if any(p.surprisal is None for p in parts) else cat([p.surprisal for p in parts], 0.0),
                   torch.cat([p.group_ids + o for p, o in zip(parts, offsets)]),
                   torch.cat([p.rewards for p in parts]) if scored else None)


# --------------------------------------------------------------------------------- on disk


@dataclass(frozen=True)
class GroupInfo:
    """What a saved group shows beside its tensors: its row's id, task, prompt and reference, and
    each response's text and decoded tokens (``pieces[k]``, one string per real token)."""

    id: str
    task: str
    prompt: str
    reference: str
    texts: list[str]
    pieces: list[list[str]]


@dataclass(frozen=True)
class SavedRollouts:
    """A rollout file read back: its path, step and algorithm, each group's info and one scored
    ``Rollout`` of all its groups (group g is ``groups[g]``)."""

    path: Path
    step: int
    algo: str
    groups: list[GroupInfo]
    rollout: Rollout


def group_infos(family: Any, examples: Sequence[Any], rollout: Rollout) -> list[GroupInfo]:
    """The info of every group of ``rollout`` (group g answers ``examples[g]``): texts and pieces
    decoded by the model family's tokenizer."""
    texts = family.decode(rollout.ids)
    lengths = rollout.mask.sum(1).tolist()
    width = rollout.ids.shape[1]
    pieces = family.tokenizer.batch_decode(rollout.ids.reshape(-1, 1).tolist(), skip_special_tokens=False)
    rows = [torch.nonzero(rollout.group_ids == g).flatten().tolist() for g in range(rollout.n_groups)]
    return [GroupInfo(ex.id, ex.task, ex.prompt, ex.reference, [texts[i] for i in members],
                      [pieces[i * width:i * width + int(lengths[i])] for i in members])
            for ex, members in zip(examples, rows)]


def save_rollouts(path: Path, step: int, algo: str, groups: Sequence[GroupInfo], rollout: Rollout) -> None:
    """Write the scored ``rollout`` of ``groups`` (group g is ``groups[g]``) atomically."""
    lengths = rollout.mask.sum(1).tolist()
    out = []
    for g, info in enumerate(groups):
        members = torch.nonzero(rollout.group_ids == g).flatten().tolist()
        responses = []
        for text, pieces, i in zip(info.texts, info.pieces, members):
            n = int(lengths[i])
            s = [] if rollout.surprisal is None else [float(x) for x in rollout.surprisal[i, :n].tolist()]
            responses.append({"text": text, "pieces": pieces, "ids": rollout.ids[i, :n].tolist(), "surprisal": s,
                              "reward": float(rollout.rewards[i])})
        out.append({"id": info.id, "task": info.task, "prompt": info.prompt, "reference": info.reference,
                    "responses": responses})
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps({"step": step, "algo": algo, "groups": out}))


def load_rollouts(path: Path) -> SavedRollouts:
    """Read a rollout file (or the newest one of a run directory); UserError naming the file."""
    path = Path(path)
    if path.is_dir():
        files = sorted((path / "rollouts").glob("step-*.json")) if (path / "rollouts").is_dir() else []
        if not files:
            raise UserError(f"{path}: no saved rollouts (a run saves them at each evaluation into rollouts/)")
        path = files[-1]
    try:
        data = json.loads(path.read_text())
        groups = [_group(g) for g in data["groups"]]
        step, algo = int(data["step"]), str(data["algo"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise UserError(f"{path}: not a leafrl rollout file ({err})") from err
    if not groups:
        raise UserError(f"{path}: a rollout file without groups")
    responses = [r for g in data["groups"] for r in g["responses"]]
    t = max(max(len(r["ids"]) for r in responses), 1)
    ids = torch.zeros(len(responses), t, dtype=torch.long)
    mask = torch.zeros(len(responses), t, dtype=torch.bool)
    surprisal = torch.zeros(len(responses), t)
    for i, r in enumerate(responses):
        n = len(r["ids"])
        ids[i, :n] = torch.tensor(r["ids"], dtype=torch.long)
        mask[i, :n] = True
        if r["surprisal"]:
            surprisal[i, :n] = torch.tensor([x if math.isfinite(x) else 0.0 for x in r["surprisal"]])
    group_ids = torch.tensor([g for g, info in enumerate(groups) for _ in info.texts])
    rewards = torch.tensor([r["reward"] for r in responses], dtype=torch.float32)
    return SavedRollouts(path, step, algo, groups, Rollout(ids, mask, surprisal, group_ids, rewards))


def _group(g: dict) -> GroupInfo:
    for r in g["responses"]:
        if len(r["ids"]) != len(r["pieces"]) or (r["surprisal"] and len(r["surprisal"]) != len(r["ids"])):
            raise ValueError(f"group {g['id']!r}: ids, pieces and surprisal differ in length")
    if not g["responses"]:
        raise ValueError(f"group {g['id']!r}: no responses")
    return GroupInfo(g["id"], g["task"], g["prompt"], g["reference"], [r["text"] for r in g["responses"]],
                     [r["pieces"] for r in g["responses"]])
