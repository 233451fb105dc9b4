"""LEAF's recovered tree, group by group, for a person to look at (``leafrl explain``,
``leafrl inspect``): the record a view shows (``TreeView``), built from the paper's worked example,
from a run's saved rollouts or from fresh samples; ``leafrl.viz`` renders it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console

from leafrl._files import write_text_atomic
from leafrl.advantages import LeafConfig, LeafStats, LeafTree, grpo_advantages, leaf_advantages
from leafrl.config import TrainConfig
from leafrl.rollout.record import GroupInfo, Rollout, SavedRollouts, group_infos

# The spec's worked example as German translations: responses 1-3 share "der rote Hund",
# 1-2 share the first 7 words, 4 shares nothing; the model was least sure at words 3 and 7.
EXAMPLE = [
    "der rote Hund läuft schnell über die Straße zum Park",
    "der rote Hund läuft schnell über die Brücke ins Haus",
    "der rote Hund schläft den ganzen Tag im warmen Haus",
    "ein roter Hund rennt auf der Straße zum großen Park",
]
EXAMPLE_REWARDS = [0.6, 0.4, 0.2, 0.0]
EXAMPLE_SURPRISAL = [5.0 if t == 3 else 4.0 if t == 7 else 0.1 * t for t in range(10)]


@dataclass(frozen=True)
class TreeView:
    """One group as a view shows it: a title, the prompt and its reference, each response's
    tokens (``pieces[k]``, joined by ``sep``: " " for words, "" for decoded subword pieces),
    rewards [K], GRPO's advantages [K], LEAF's tree and statistics of this group alone, and the
    surprisal each boundary was chosen by."""

    title: str
    prompt: str
    reference: str
    pieces: list[list[str]]
    sep: str
    rewards: torch.Tensor
    grpo: torch.Tensor
    tree: LeafTree
    stats: LeafStats
    boundary_surprisal: list[float]

    @property
    def boundaries(self) -> list[int]:
        """The group's boundary positions, ascending."""
        return [p for p in self.stats.boundaries[0].tolist() if p >= 0]


def tree_view(title: str, prompt: str, reference: str, pieces: list[list[str]], sep: str, rollout: Rollout,
              leaf: LeafConfig, grpo_std_floor: float) -> TreeView:
    """The view of a one-group scored ``rollout`` (its K rows): LEAF's tree and GRPO beside it."""
    rewards = rollout.rewards.float()
    zeros = torch.zeros(len(rollout.ids), dtype=torch.long)
    surprisal = rollout.surprisal if rollout.surprisal is not None else torch.zeros(rollout.ids.shape)
    _, stats, tree = leaf_advantages(rollout.ids, rollout.mask, surprisal, rewards, zeros, leaf, return_tree=True)
    score = torch.where(rollout.mask, surprisal, -torch.inf)
    bounds = [p for p in stats.boundaries[0].tolist() if p >= 0]
    return TreeView(title, prompt, reference, pieces, sep, rollout.rewards, grpo_advantages(rewards, zeros,
                                                                                           grpo_std_floor),
                    tree, stats, [float(score[:, p].max()) for p in bounds])


def worked_example(leaf: LeafConfig, grpo_std_floor: float) -> TreeView:
    """The spec's worked example (K = 4 German translations, rewards 0.6 .. 0), one word a token."""
    words = [s.split() for s in EXAMPLE]
    vocab = {w: i for i, w in enumerate(sorted({w for ws in words for w in ws}))}
    ids = torch.tensor([[vocab[w] for w in ws] for ws in words])
    rollout = Rollout(ids, torch.ones_like(ids, dtype=torch.bool), torch.tensor([EXAMPLE_SURPRISAL] * len(words)),
                      torch.zeros(len(words), dtype=torch.long), torch.tensor(EXAMPLE_REWARDS))
    return tree_view("the worked example", "(4 translations of one sentence)", EXAMPLE[0], words, " ", rollout,
                     leaf, grpo_std_floor)


def tree_views(groups: Sequence[GroupInfo], rollout: Rollout, leaf: LeafConfig, grpo_std_floor: float,
               ) -> list[TreeView]:
    """One view per group of a scored ``rollout`` (group g is ``groups[g]``), each tree recovered
    from that group alone."""
    views = []
    for g, info in enumerate(groups):
        rows = torch.nonzero(rollout.group_ids == g).flatten()
        one = Rollout(rollout.ids[rows], rollout.mask[rows], None if rollout.surprisal is None else
                      rollout.surprisal[rows], torch.zeros(len(rows), dtype=torch.long), rollout.rewards[rows])
        views.append(tree_view(f"{info.id} ({info.task})", info.prompt, info.reference, info.pieces, "", one, leaf,
                               grpo_std_floor))
    return views


def save_html(path: Path, views: Sequence[TreeView], title: str) -> Path:
    """Write the self-contained HTML page of ``views`` to ``path``."""
    from leafrl.viz.html import render_html

    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, render_html(list(views), title))
    return path


def saved_views(saved: SavedRollouts, items: int, leaf: LeafConfig, grpo_std_floor: float) -> list[TreeView]:
    """Views of the first ``items`` groups of a rollout file."""
    n = min(items, len(saved.groups))
    return tree_views(saved.groups[:n], saved.rollout.first_groups(n), leaf, grpo_std_floor)


def run_config_of(saved: SavedRollouts) -> Path | None:
    """The config.yaml of the run that saved ``saved`` (OUT/rollouts/step-N.json), if it is there."""
    path = saved.path.parent.parent / "config.yaml"
    return path if path.is_file() else None


def sampled_views(cfg: TrainConfig, adapter: Path | None, split: str, items: int, seed: int, console: Console,
                  quiet: bool) -> list[TreeView]:
    """Views of K fresh responses to each of the first ``items`` rows of ``split``."""
    from leafrl.eval.analysis import sampled

    examples, family, rollout = sampled(cfg, adapter, split, items, seed, console, quiet)
    return tree_views(group_infos(family, examples, rollout), rollout, cfg.leaf, cfg.grpo_std_floor)
