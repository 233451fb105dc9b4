"""The records a finished run leaves behind, each written in one place and read back typed.

    HeldOut      before.json / after.json of ``leafrl train``: one held-out evaluation's BLEU and
                 its predictions
    RunSummary   summary.json of ``leafrl train``, written last: it marks the run finished
    SFTSummary   summary.json of ``leafrl sft``

BLEU is sacrebleu's lowercased corpus BLEU (the paper's evaluation); "sampled" is the mean over
the sampled passes. The fields are documented below and in docs/runs.md.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from leafrl._files import write_text_atomic
from leafrl.errors import UserError

R = TypeVar("R")


@dataclass(frozen=True)
class HeldOut:
    """One held-out evaluation: greedy BLEU, the sampled passes' mean BLEU and its std over
    passes (None without sampled passes), and the predictions in row order."""

    bleu: float
    bleu_sampled: float | None
    bleu_sampled_std: float | None
    greedy: list[str]
    sampled: list[list[str]]
    """One list of predictions per sampled pass."""

    def metrics(self) -> dict[str, float]:
        """The logged keys: valid_bleu, and valid_bleu_sampled and valid_bleu_sampled_std with passes."""
        row = {"valid_bleu": self.bleu}
        if self.bleu_sampled is not None:
            row |= {"valid_bleu_sampled": self.bleu_sampled, "valid_bleu_sampled_std": self.bleu_sampled_std}
        return row

    def save(self, path: Path) -> None:
        write_text_atomic(path, json.dumps({"metrics": self.metrics(),
                                            "predictions": {"greedy": self.greedy, "sampled": self.sampled}}))

    @classmethod
    def load(cls, path: Path) -> HeldOut:
        data = _read(path)
        try:
            m, p = data["metrics"], data["predictions"]
            return cls(m["valid_bleu"], m.get("valid_bleu_sampled"), m.get("valid_bleu_sampled_std"), p["greedy"],
                       p["sampled"])
        except (KeyError, TypeError) as err:
            raise UserError(f"{path}: not a leafrl held-out evaluation (no {err})") from err


@dataclass(frozen=True)
class RunSummary:
    """summary.json of a finished ``leafrl train`` run."""

    algo: str
    """"leaf", "grpo" or "leafrl"."""
    steps: int
    """RL steps trained."""
    processes: int
    """Processes the run was trained on."""
    valid_examples: int
    """Held-out rows evaluated."""
    wall_seconds: float
    """Wall time of the command that finished the run (a resumed run: since it resumed)."""
    valid_bleu_before: float
    """Greedy held-out BLEU before training."""
    valid_bleu_after: float
    """Greedy held-out BLEU after training."""
    valid_bleu_p_value: float
    """Paired bootstrap p (rows resampled 1000 times) of the greedy change."""
    valid_bleu_sampled_before: float | None = None
    """Mean held-out BLEU of the sampled passes before training (None without sampled passes)."""
    valid_bleu_sampled_after: float | None = None
    """Mean held-out BLEU of the sampled passes after training."""
    valid_bleu_sampled_std_before: float | None = None
    """Std over the sampled passes' BLEU before training."""
    valid_bleu_sampled_std_after: float | None = None
    """Std over the sampled passes' BLEU after training."""
    valid_bleu_sampled_p_value: float | None = None
    """Paired bootstrap p of the change of the sampled passes' mean."""

    def bleu(self, decoding: str, when: str) -> float | None:
        """Held-out BLEU of ``decoding`` ("greedy" or "sampled") ``when`` ("before" or "after")."""
        return getattr(self, f"valid_bleu{'' if decoding == 'greedy' else '_sampled'}_{when}")

    def p_value(self, decoding: str) -> float | None:
        return getattr(self, f"valid_bleu{'' if decoding == 'greedy' else '_sampled'}_p_value")

    @property
    def decodings(self) -> list[str]:
        """"greedy", and "sampled" when the run had sampled passes."""
        return ["greedy"] + (["sampled"] if self.valid_bleu_sampled_after is not None else [])

    def save(self, path: Path) -> None:
        write_text_atomic(path, json.dumps(dataclasses.asdict(self), indent=2))

    @classmethod
    def load(cls, path: Path) -> RunSummary:
        return _record(cls, _read(path), path)


@dataclass(frozen=True)
class SFTSummary:
    """summary.json of a finished ``leafrl sft`` run."""

    model: str
    """The model trained ("built-in tiny SALLM" for a fresh one)."""
    data: str
    steps: int
    train_examples: int
    valid_examples: int
    valid_bleu_before: float
    """Greedy held-out BLEU before SFT."""
    valid_bleu_after: float
    """Greedy held-out BLEU after SFT."""
    wall_seconds: float
    model_dir: str
    """The trained model, in the Hugging Face layout."""

    def save(self, path: Path) -> None:
        write_text_atomic(path, json.dumps(dataclasses.asdict(self), indent=2))

    @classmethod
    def load(cls, path: Path) -> SFTSummary:
        return _record(cls, _read(path), path)


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{path}: cannot read it ({type(err).__name__}: {err})") from err


def _record(cls: type[R], data: dict, path: Path) -> R:
    try:
        return cls(**data)
    except TypeError as err:
        raise UserError(f"{path}: not a leafrl {cls.__name__} ({err})") from err
