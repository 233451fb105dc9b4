"""Run reporting: MetricsLogger writes metrics to JSONL (always) and TensorBoard; progress_bar
is the rich bar every long command shows; warn prints a warning; mean_over_processes averages a
step's metrics over the processes. Only the main process writes (``enabled=False``)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


def progress_bar(label: str, console: Console, disable: bool) -> Progress:
    """A bar with a free-text ``info`` field (``bar.add_task(label, total=n, info="")``) and ETA."""
    columns = [TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[info]}"), TimeRemainingColumn()]
    return Progress(*columns, console=console, disable=disable)


def warn(message: str) -> None:
    """``warning: message`` on stderr, unwrapped: shown even under --quiet."""
    Console(stderr=True, soft_wrap=True).print(f"[yellow]warning:[/yellow] {message}", highlight=False)


class MetricsLogger:
    def __init__(self, out_dir: str | Path, *, tensorboard: bool = True, enabled: bool = True,
                 append: bool = False, purge_step: int | None = None) -> None:
        """``append``: continue the existing metrics.jsonl; ``purge_step``: TensorBoard hides the
        events from this step on that an earlier, interrupted process wrote (a resumed run's)."""
        self.enabled = enabled
        self.path = Path(out_dir) / "metrics.jsonl"
        self._writer = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not append:
            self.path.write_text("")
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(Path(out_dir) / "tensorboard"), purge_step=purge_step)

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        """One JSON object per call: {"step": step, **metrics} (floats, ints, strings)."""
        if not self.enabled:
            return
        row = {"step": step, **{k: _plain(v) for k, v in metrics.items()}}
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self._writer is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, int | float) and math.isfinite(value):
                    self._writer.add_scalar(key, value, step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    return value


def mean_over_processes(accelerator: Any, row: dict) -> dict:
    """Each metric averaged over the processes (identity on one)."""
    if accelerator.num_processes == 1:
        return row
    import torch

    keys = sorted(row)
    values = torch.tensor([float(row[k]) for k in keys], device=accelerator.device)
    return dict(zip(keys, accelerator.reduce(values, reduction="mean").tolist()))
