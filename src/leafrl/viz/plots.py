"""PNG plots of the reports (matplotlib, no screen needed): curves with seed bands, rates by
token position with their intervals, grouped bars with their intervals."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

Series = Mapping[str, tuple[Sequence[int], Sequence[Sequence[float]]]]  # name -> (steps, values [runs][steps])


def _figure(panels: int, width: float = 6.4):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, panels, figsize=(width * panels, 4.4), squeeze=False)
    return plt, fig, axes[0]


def _save(plt, fig, path: Path, caption: str | None) -> None:
    """Write the figure with ``caption`` under it, wrapped to the figure's width."""
    import textwrap

    bottom = 0.0
    if caption:
        text = textwrap.fill(caption, width=int(fig.get_figwidth() * 15))
        fig.text(0.5, 0.01, text, ha="center", va="bottom", fontsize=8, color="0.35")
        bottom = (0.03 + 0.035 * text.count("\n")) * 4.4 / fig.get_figheight()
    fig.tight_layout(rect=(0, bottom + 0.02 if caption else 0, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def band_plot(path: Path, panels: Sequence[tuple[str, Series]], title: str, ylabel: str, caption: str) -> None:
    """One panel per (subtitle, series): each series' mean over runs as a line, the band from
    its lowest to its highest run, against the step."""
    plt, fig, axes = _figure(len(panels))
    for ax, (subtitle, series) in zip(axes, panels):
        for i, (name, (steps, values)) in enumerate(series.items()):
            rows = list(zip(*values))  # [steps][runs]
            mean = [sum(r) / len(r) for r in rows]
            color = f"C{i}"
            ax.plot(steps, mean, color=color, label=f"{name} ({len(values)} runs)", marker="o" if len(steps) < 12
                    else None, linewidth=1.8)
            if len(values) > 1:
                ax.fill_between(steps, [min(r) for r in rows], [max(r) for r in rows], color=color, alpha=0.18)
        ax.set_title(subtitle)
        ax.set_xlabel("RL step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    _save(plt, fig, path, caption)


def rate_plot(path: Path, series: Mapping[str, Sequence[tuple[int, float, float, float]]], title: str,
              ylabel: str, caption: str) -> None:
    """Rates by token position: ``series[name]`` = [(position, rate, low, high)], drawn as
    points with their interval, one colour per name (runs overlaid)."""
    plt, fig, axes = _figure(1, width=8.0)
    ax = axes[0]
    offsets = [0.12 * (i - (len(series) - 1) / 2) for i in range(len(series))]
    for i, (name, points) in enumerate(series.items()):
        xs = [p + offsets[i] for p, *_ in points]
        rates = [r for _, r, _, _ in points]
        err = [[r - lo for _, r, lo, _ in points], [hi - r for _, r, _, hi in points]]
        ax.errorbar(xs, rates, yerr=err, fmt="o-", color=f"C{i}", capsize=2, markersize=4, linewidth=1, label=name)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("boundary position (completion token)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(plt, fig, path, caption)


def bar_plot(path: Path, groups: Sequence[str], panels: Sequence[tuple[str, Mapping[str, tuple[float, float, float]]]],
             title: str, caption: str, reference_lines: Mapping[str, float] | None = None) -> None:
    """One panel per (metric, {group: (value, low, high)}): a bar per group with its interval (no
    bar where a panel has no value for a group); ``reference_lines[metric]`` draws a dashed line
    (e.g. chance)."""
    plt, fig, axes = _figure(len(panels), width=4.6)
    for ax, (metric, values) in zip(axes, panels):
        xs = list(range(len(groups)))
        shown = [i for i, g in enumerate(groups) if g in values]
        heights = [values[groups[i]][0] for i in shown]
        err = [[values[groups[i]][0] - values[groups[i]][1] for i in shown],
               [values[groups[i]][2] - values[groups[i]][0] for i in shown]]
        ax.bar(shown, heights, yerr=err, capsize=3, color=[f"C{i % 10}" for i in shown], alpha=0.85)
        if reference_lines and metric in reference_lines:
            ax.axhline(reference_lines[metric], color="0.3", linestyle="--", linewidth=1)
        ax.set_xticks(xs, groups, rotation=35, ha="right", fontsize=8)
        ax.set_title(metric, fontsize=10)
        ax.set_ylim(0, 1)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title)
    _save(plt, fig, path, caption)
