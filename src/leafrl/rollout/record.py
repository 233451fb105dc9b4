"""Rollout groups on disk: the K responses of a few prompts with their tokens, surprisal and
rewards, as ``leafrl train`` saves them at each evaluation (``OUT/rollouts/step-NNNNNN.json``)
and ``leafrl inspect`` reads them back to recover LEAF's tree.

A file is one JSON object: {"step", "algo", "groups": [{"id", "task", "prompt", "reference",
"responses": [{"text", "pieces", "ids", "surprisal", "reward"}]}]}; ``pieces`` are the decoded
tokens (special tokens included), ``ids`` / ``surprisal`` cover the real tokens only.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from leafrl._files import write_text_atomic
from leafrl.models.base import SpeechLMAdapter


def record_groups(adapter: SpeechLMAdapter, prompts: list[Any], ids: torch.Tensor, mask: torch.Tensor,
                  surprisal: torch.Tensor | None, rewards: torch.Tensor, k: int, n_groups: int) -> list[dict]:
    """The first ``n_groups`` prompts' K responses (rows i*k .. i*k+k-1 of ids / mask /
    surprisal [N, T] and rewards [N]) as plain lists."""
    rows = min(n_groups, len(prompts)) * k
    texts = adapter.decode(ids[:rows])
    lengths = mask[:rows].sum(1).tolist()
    flat = ids[:rows].reshape(-1, 1).tolist()
    pieces = adapter.tokenizer.batch_decode(flat, skip_special_tokens=False)
    width = ids.shape[1]
    groups = []
    for g in range(rows // k):
        ex = prompts[g]
        responses = []
        for i in range(g * k, (g + 1) * k):
            n = int(lengths[i])
            s = [] if surprisal is None else [float(x) for x in surprisal[i, :n].tolist()]
            responses.append({"text": texts[i], "pieces": pieces[i * width:i * width + n],
                              "ids": ids[i, :n].tolist(), "surprisal": s, "reward": float(rewards[i])})
        groups.append({"id": ex.id, "task": ex.task, "prompt": ex.prompt, "reference": ex.reference,
                       "responses": responses})
    return groups


def save_rollouts(path: Path, step: int, algo: str, groups: list[dict]) -> None:
    """Write one rollout file atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps({"step": step, "algo": algo, "groups": groups}))


def load_rollouts(path: Path) -> dict:
    """Read a rollout file (or the newest one of a run directory); ValueError naming the file."""
    path = Path(path)
    if path.is_dir():
        files = sorted((path / "rollouts").glob("step-*.json")) if (path / "rollouts").is_dir() else []
        if not files:
            raise ValueError(f"{path}: no saved rollouts (a run saves them at each evaluation into rollouts/)")
        path = files[-1]
    try:
        data = json.loads(path.read_text())
        groups = data["groups"]
        for g in groups:
            for r in g["responses"]:
                if len(r["ids"]) != len(r["pieces"]) or (r["surprisal"] and len(r["surprisal"]) != len(r["ids"])):
                    raise ValueError(f"group {g['id']!r}: ids, pieces and surprisal differ in length")
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a leafrl rollout file ({err})") from err
    return {**data, "path": str(path)}


def group_tensors(group: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One saved group as (ids [K, T], mask [K, T], surprisal [K, T] (0 where not saved), rewards [K])."""
    responses = group["responses"]
    t = max(max(len(r["ids"]) for r in responses), 1)
    ids = torch.zeros(len(responses), t, dtype=torch.long)
    mask = torch.zeros(len(responses), t, dtype=torch.bool)
    surprisal = torch.zeros(len(responses), t)
    for k, r in enumerate(responses):
        n = len(r["ids"])
        ids[k, :n] = torch.tensor(r["ids"], dtype=torch.long)
        mask[k, :n] = True
        if r["surprisal"]:
            surprisal[k, :n] = torch.tensor([x if math.isfinite(x) else 0.0 for x in r["surprisal"]])
    rewards = torch.tensor([r["reward"] for r in responses], dtype=torch.float64)
    return ids, mask, surprisal, rewards
