"""Render one group's LeafTree in the terminal: each response cut into its spans, coloured by
the credit LEAF gives them, beside the single number GRPO gives the whole response."""

from __future__ import annotations

import torch
from rich.console import Group
from rich.table import Table
from rich.text import Text

from leafrl.advantages import LeafStats, LeafTree


def _style(value: float, scale: float) -> str:
    """Green for credit, red for blame, brighter with magnitude (relative to ``scale``)."""
    level = min(abs(value) / scale, 1.0) if scale > 0 else 0.0
    shade = int(90 + 165 * level)
    return f"bold rgb(0,{shade},0)" if value > 0 else f"bold rgb({shade},0,0)" if value < 0 else "dim"


def render_group(tokens: list[list[str]], rewards: torch.Tensor, grpo: torch.Tensor,
                 tree: LeafTree, stats: LeafStats, sep: str = " ",
                 boundary_surprisal: list[float] | None = None) -> Group:
    """One group's responses (``tokens[k]`` the tokens of row k, joined by ``sep``: " " for
    words, "" for decoded subword pieces) with LEAF span credit; ``boundary_surprisal``: the
    score each boundary was chosen by."""
    scale = float(tree.span_advantage[tree.span_valid].abs().max()) if tree.span_valid.any() else 1.0
    table = Table(title="LEAF span advantages vs GRPO (one advantage per response)", expand=True)
    table.add_column("#", justify="right")
    table.add_column("reward", justify="right")
    table.add_column("GRPO", justify="right")
    table.add_column("response, cut into LEAF spans (value after normalization)", ratio=1)
    for k, words in enumerate(tokens):
        line = Text()
        for s in torch.nonzero(tree.span_valid[k]).flatten().tolist():
            start, end = int(tree.span_start[k, s]), int(tree.span_end[k, s])
            value = float(tree.span_advantage[k, s])
            line.append(sep.join(words[start:end]), style=_style(value, scale))
            line.append(f" [{value:+.2f}]  ", style="italic")
        table.add_row(str(k + 1), f"{float(rewards[k]):.2f}", Text(f"{float(grpo[k]):+.2f}",
                      style=_style(float(grpo[k]), float(grpo.abs().max()))), line)
    nodes = Table(title="nodes (responses sharing a prefix up to a boundary)")
    for name in ("boundary", "members", "value V", "n"):
        nodes.add_column(name, justify="right")
    bounds = [p for p in stats.boundaries[0].tolist() if p >= 0]
    for b, p in enumerate(bounds):
        for node in sorted(set(tree.node_id[:, b].tolist()) - {-1}):
            members = (tree.node_id[:, b] == node).nonzero().flatten().tolist()
            value = float(rewards[members].double().mean())
            nodes.add_row(str(p), ", ".join(str(k + 1) for k in members), f"{value:.3f}",
                          str(len(members)))
    shown = str(bounds) if boundary_surprisal is None else \
        "[" + ", ".join(f"{p} (surprisal {s:.2f})" for p, s in zip(bounds, boundary_surprisal)) + "]"
    summary = Text(
        f"boundaries {shown}   root value {float(rewards.mean()):.3f}   "
        f"fork-fire {stats.fork_fire_rate:.2f}   usable {stats.usable_fork_fire_rate:.2f}   "
        f"spans/response {stats.spans_per_response:.2f}   shared tokens {stats.shared_token_frac:.0%}"
    )
    return Group(table, nodes, summary)
