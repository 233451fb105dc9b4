"""One self-contained HTML page (no scripts, no network) of recovered LEAF trees: per group, the
K responses cut into spans coloured by their advantage, the boundaries with their surprisal,
the nodes (shared prefixes) with their values and sizes, and GRPO's one advantage per response."""

from __future__ import annotations

import html

import torch

from leafrl.eval.inspect import TreeView

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1200px; }
h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.6em 0; }
td, th { border: 1px solid #ddd; padding: 4px 8px; vertical-align: top; }
th { background: #f4f4f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.span { padding: 1px 2px; border-radius: 3px; white-space: pre-wrap; }
.cut { color: #555; font-weight: bold; }
.adv { font-size: 0.75em; color: #333; vertical-align: super; }
.meta { color: #555; }
"""


def _colour(value: float, scale: float) -> str:
    """Green for credit, red for blame, stronger with magnitude."""
    level = min(abs(value) / scale, 1.0) if scale > 0 else 0.0
    alpha = 0.12 + 0.6 * level
    return f"rgba(0,160,60,{alpha:.2f})" if value > 0 else f"rgba(220,40,40,{alpha:.2f})" if value < 0 \
        else "rgba(0,0,0,0.05)"


def _section(view: TreeView) -> str:
    tree, e = view.tree, html.escape
    scale = float(tree.span_advantage[tree.span_valid].abs().max()) if tree.span_valid.any() else 1.0
    bounds = view.boundaries
    parts = [f"<h2>{e(view.title)}</h2>", f"<p><b>prompt</b> {e(view.prompt)}<br><b>reference</b> "
             f"{e(view.reference)}</p>",
             "<p class='meta'>boundaries: " + (", ".join(f"token {p} (surprisal {s:.2f})" for p, s in
                                                      zip(bounds, view.boundary_surprisal)) or "none")
             + f" · root value {float(view.tree.root_value[0]):.3f} · fork-fire {view.stats.fork_fire_rate:.2f}"
             f" · usable {view.stats.usable_fork_fire_rate:.2f}</p>",
             "<table><tr><th>#</th><th>reward</th><th>GRPO</th><th>response in LEAF spans (advantage after "
             "normalization); | marks a boundary</th></tr>"]
    gscale = float(view.grpo.abs().max()) or 1.0
    for k, pieces in enumerate(view.pieces):
        cells = []
        for s in torch.nonzero(tree.span_valid[k]).flatten().tolist():
            start, end = int(tree.span_start[k, s]), int(tree.span_end[k, s])
            value = float(tree.span_advantage[k, s])
            if start > 0:
                cells.append("<span class='cut'>|</span>")
            cells.append(f"<span class='span' style='background:{_colour(value, scale)}'>"
                         f"{e(''.join(pieces[start:end]))}<span class='adv'>{value:+.2f}</span></span>")
        grpo = float(view.grpo[k])
        parts.append(f"<tr><td class='num'>{k + 1}</td><td class='num'>{float(view.rewards[k]):.3f}</td>"
                     f"<td class='num' style='background:{_colour(grpo, gscale)}'>{grpo:+.2f}</td>"
                     f"<td>{''.join(cells)}</td></tr>")
    parts.append("</table><table><tr><th>boundary</th><th>members (responses sharing the prefix)</th>"
                 "<th>value V (mean reward)</th><th>n</th></tr>")
    for b, p in enumerate(bounds):
        for node in sorted(set(tree.node_id[:, b].tolist()) - {-1}):
            members = (tree.node_id[:, b] == node).nonzero().flatten().tolist()
            value = float(tree.node_value[members[0], b])
            parts.append(f"<tr><td class='num'>{p}</td><td>{', '.join(str(m + 1) for m in members)}</td>"
                         f"<td class='num'>{value:.3f}</td><td class='num'>{len(members)}</td></tr>")
    parts.append("</table>")
    return "\n".join(parts)


def render_html(views: list[TreeView], title: str) -> str:
    """The whole page."""
    body = "\n".join(_section(v) for v in views)
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
            "<p class='meta'>Green: credit, red: blame (stronger colour, larger magnitude). LEAF recovers the tree "
            "after sampling: responses that share their tokens up to a boundary form a node valued by its "
            "members' mean reward.</p>" + body + "</body></html>")
