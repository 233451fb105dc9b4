"""Render one group's LeafTree in the terminal: each response cut into its spans, coloured by
the credit LEAF gives them, beside the single number GRPO gives the whole response."""

from __future__ import annotations

import torch
from rich.console import Group
from rich.table import Table
from rich.text import Text

from leafrl.eval.inspect import TreeView


def _style(value: float, scale: float) -> str:
    """Green for credit, red for blame, brighter with magnitude (relative to ``scale``)."""
    level = min(abs(value) / scale, 1.0) if scale > 0 else 0.0
    shade = int(90 + 165 * level)
    return f"bold rgb(0,{shade},0)" if value > 0 else f"bold rgb({shade},0,0)" if value < 0 else "dim"


def render_group(view: TreeView) -> Group:
    """One group's responses with LEAF's span credit beside GRPO's one number per response, its
    nodes and its boundaries."""
    tree, stats = view.tree, view.stats
    scale = float(tree.span_advantage[tree.span_valid].abs().max()) if tree.span_valid.any() else 1.0
    table = Table(title="LEAF span advantages vs GRPO (one advantage per response)", expand=True)
    table.add_column("#", justify="right")
    table.add_column("reward", justify="right")
    table.add_column("GRPO", justify="right")
    table.add_column("response, cut into LEAF spans (value after normalization)", ratio=1)
    for k, words in enumerate(view.pieces):
        line = Text()
        for s in torch.nonzero(tree.span_valid[k]).flatten().tolist():
            start, end = int(tree.span_start[k, s]), int(tree.span_end[k, s])
            value = float(tree.span_advantage[k, s])
            line.append(view.sep.join(words[start:end]), style=_style(value, scale))
            line.append(f" [{value:+.2f}]  ", style="italic")
        grpo = float(view.grpo[k])
        table.add_row(str(k + 1), f"{float(view.rewards[k]):.2f}", Text(f"{grpo:+.2f}",
                      style=_style(grpo, float(view.grpo.abs().max()))), line)
    nodes = Table(title="nodes (responses sharing a prefix up to a boundary)")
    for name in ("boundary", "members", "value V", "n"):
        nodes.add_column(name, justify="right")
    for b, p in enumerate(view.boundaries):
        for node in sorted(set(tree.node_id[:, b].tolist()) - {-1}):
            members = (tree.node_id[:, b] == node).nonzero().flatten().tolist()
            value = float(tree.node_value[members[0], b])
            nodes.add_row(str(p), ", ".join(str(k + 1) for k in members), f"{value:.3f}", str(len(members)))
    shown = "[" + ", ".join(f"{p} (surprisal {s:.2f})" for p, s in zip(view.boundaries, view.boundary_surprisal)) + "]"
    summary = Text(
        f"boundaries {shown}   root value {float(tree.root_value[0]):.3f}   "
        f"fork-fire {stats.fork_fire_rate:.2f}   usable {stats.usable_fork_fire_rate:.2f}   "
        f"spans/response {stats.spans_per_response:.2f}   shared tokens {stats.shared_token_frac:.0%}"
    )
    return Group(table, nodes, summary)
