"""Terminal views of a finished run: held-out rows before and after training."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table


def examples_table(ids: Sequence[str], references: Sequence[str], before: Sequence[str], after: Sequence[str],
                   title: str = "held-out examples (greedy)") -> Table:
    """One row per held-out example: its reference and the model's answer before and after."""
    if not (len(ids) == len(references) == len(before) == len(after)):
        raise ValueError(f"ids ({len(ids)}), references ({len(references)}), before ({len(before)}) and after "
                         f"({len(after)}) must be equally long")
    table = Table(title=title, show_lines=True)
    for column in ("row", "reference", "before", "after"):
        table.add_column(column, overflow="fold")
    for row in zip(ids, references, before, after):
        table.add_row(*row)
    return table


def shares_table(before: dict[str, float], after: dict[str, float], title: str) -> Table:
    """Shares (0-1) of named categories before and after, as percentages."""
    table = Table(title=title)
    for column in ("", "before", "after"):
        table.add_column(column, justify="left" if not column else "right")
    for name in sorted(set(before) | set(after), key=lambda k: -after.get(k, 0.0)):
        table.add_row(name, f"{100 * before.get(name, 0.0):.0f}%", f"{100 * after.get(name, 0.0):.0f}%")
    return table


def metrics_table(entry: dict, title: str) -> Table:
    """One split's metrics (``leafrl.eval.evaluate.metrics_report``): greedy, and sampled mean +- std."""
    table = Table(title=title)
    sampled = entry.get("sampled", {})
    for column in ("metric", "greedy", *(["sampled (mean +- std)"] if sampled else [])):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for key, value in entry["greedy"].items():
        cells = [key, f"{value:.2f}"]
        if sampled:
            cells.append(f"{sampled[key]['mean']:.2f} +- {sampled[key]['std']:.2f}")
        table.add_row(*cells)
    return table
