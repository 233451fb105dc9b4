"""Typed run configurations: one dataclass per command, one default per setting, YAML in and
out, ``--set section.field=value`` overrides parsed into the dataclass and type-checked.

Every default lives here (or, for LEAF's own options, in ``LeafConfig``); the CLI restates none.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from leafrl._files import write_text_atomic
from leafrl.advantages import LeafConfig
from leafrl.losses import AGGREGATIONS
from leafrl.models import MODEL_DTYPES
from leafrl.models.tiny import TinySize
from leafrl.rollout.hf import SURPRISAL_SOURCES

C = TypeVar("C")


@dataclass
class LoraSettings:
    """LoRA of the paper (authors' released configuration)."""

    rank: int = 64  # paper: r 64
    alpha: int = 128  # paper: alpha 128
    dropout: float = 0.05  # paper: dropout 0.05 on q/k/v/o/gate/up/down


@dataclass
class SFTConfig:
    """Supervised warm start (``leafrl sft``). Defaults suit the built-in tiny SALLM trained
    from scratch on the built-in task; for a pretrained model use ``lora=true`` and a small lr."""

    data: str | None = None
    """A manifest directory (train/valid.jsonl) or save_to_disk dataset (required; ``leafrl sft``
    without --data uses the built-in task)."""
    model: str | None = None
    """A hub name or local HF directory; None: a fresh tiny SALLM (``tiny``), trained from scratch."""
    tiny: TinySize = field(default_factory=TinySize)
    """Dimensions of the built-in tiny SALLM (used when model is None)."""
    out: str = "runs/sft"
    """Output directory: the trained model (HF format), config.yaml, metrics.jsonl, summary.json."""
    align_steps: int = 3600
    """Audio alignment, the first stage (0: none): CTC of each row's transcript
    (``meta["transcript"]``) on the model's projected audio frames read through its own output
    layer, blank = pad token. Only the audio encoder, projector and (tied) embeddings learn,
    without running the language model. Afterwards the audio reaches the language model already
    shaped like text, which it then learns to read much sooner. Needs an adapter with
    ``audio_frames`` (the built-in model's family); set 0 for a pretrained model."""
    align_batch_size: int = 4
    """Clips per alignment step: the encoder learns to hear from the number of updates more than
    from the clips in each, so small batches (see docs/results.md)."""
    steps: int = 800
    """Optimizer steps of SFT (after alignment)."""
    batch_size: int = 32
    length_buckets: int = 1
    """SFT batches drawn together and regrouped by length (audio seconds, then text), so each
    batch pads less; 1: plain shuffled batches. Faster steps, but batches of alike rows teach less
    per step (docs/results.md). Alignment pads every clip to the feature window and is not bucketed."""
    cache_inputs: bool = True
    """Keep each training row's encoded inputs after its first use instead of reading and encoding
    its audio again every epoch (a batch is the same either way). Costs memory: about 66 KB a row
    for the tiny SALLM's 8 s window, about 1.5 MB with a 30 s Whisper window, so turn it off for
    large datasets. Needs a family whose rows encode alone (its adapter's ``rows_encode_alone``)."""
    lr: float = 2e-3
    warmup_frac: float = 0.05
    min_lr_ratio: float = 0.1
    """Cosine decay floor as a fraction of lr."""
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    lora: bool = False
    """Train a LoRA (merged into the saved model) instead of all weights."""
    lora_settings: LoraSettings = field(default_factory=LoraSettings)
    eval_every: int = 200
    eval_examples: int = 300
    """Held-out examples decoded (greedy) for BLEU."""
    max_new_tokens: int = 64
    seed: int = 0
    system: str | None = None
    """An optional system prompt."""

    def __post_init__(self) -> None:
        at_least_one = ("steps", "batch_size", "align_batch_size", "length_buckets", "eval_every", "eval_examples",
                        "max_new_tokens")
        require("SFTConfig", [(name, getattr(self, name), getattr(self, name) >= 1, ">= 1") for name in at_least_one]
                + [("align_steps", self.align_steps, self.align_steps >= 0, ">= 0")]
                + optimizer_checks(self, "") + lora_checks(self.lora_settings))


@dataclass
class RolloutSettings:
    """Sampling of the K responses per prompt (paper: authors' released configuration)."""

    rollout_budget: int = 8  # paper: K = 8 responses per prompt
    prompts_per_step: int = 6  # paper: 6 prompts per rollout step
    temperature: float = 1.0  # paper: T = 1.0
    top_p: float = 0.9  # paper: top-p 0.9
    max_new_tokens: int = 200  # paper: 200 new tokens
    surprisal: str = "processed"
    """LEAF's surprisal: "processed" (the sampled distribution, after temperature and top-p: the
    authors' choice) or "raw" (the model's logits)."""


@dataclass
class OptimSettings:
    lr: float = 5e-6  # paper: lr 5e-6
    warmup_frac: float = 0.05  # paper: cosine with 5% warmup
    min_lr_ratio: float = 0.1  # paper: floor 0.1 x lr
    beta1: float = 0.9  # paper: Adam betas (0.9, 0.95)
    beta2: float = 0.95
    weight_decay: float = 0.0  # paper: 0
    grad_clip: float = 1.0  # paper: 1.0
    minibatch: int = 6  # paper: minibatch 6 sequences
    """Sequences per optimizer step (per process): one rollout step's N rows make
    ceil(N / minibatch) optimizer steps per epoch (paper: 48 / 6 = 8), in a seeded order; the first
    is on-policy and later ones slightly off-policy, where the PPO clip binds."""
    epochs: int = 1  # paper: 1 pass over a rollout step's sequences
    """Passes over one rollout step's sequences."""
    micro_batch: int = 8
    """Rows per forward pass inside a minibatch (memory only: gradients accumulate over them, so
    the update is the same at any value)."""


@dataclass
class LossSettings:
    clip_low: float = 0.2  # paper: eps 0.2
    clip_high: float = 0.2
    beta: float = 0.02  # paper: KL weight 0.02 (k3 estimator)
    agg: str = "seq_mean_token_mean"  # paper: token mean per sequence, then mean over sequences


@dataclass
class TrainConfig:
    """RL post-training (``leafrl train``). Defaults are the paper's; see the comments."""

    algo: str = "leaf"
    """"leaf" or "grpo" (same rollouts, same loss; only the advantages differ)."""
    leaf: LeafConfig = field(default_factory=LeafConfig)
    grpo_std_floor: float = 1 / 3  # the authors' GRPO baseline
    model: str | None = None
    """A hub name or local HF directory (required by the trainer; ``leafrl train`` without
    --model fills in the built-in base model, see ``leafrl.builtin``)."""
    data: str | None = None
    """A manifest directory or save_to_disk dataset (required by the trainer; ``leafrl train``
    without --data fills in the built-in task)."""
    model_dtype: str = "auto"
    """The dtype the model is loaded in: "auto" (bfloat16 on a GPU that supports it, else float32),
    "bfloat16", "float16" or "float32". The LoRA weights and their optimizer stay float32 (peft),
    accelerate's mixed precision matches on a GPU, and every log-prob the loss, KL and surprisal
    use is computed in float32 from the logits whatever this is."""
    gradient_checkpointing: bool = False
    """Recompute each decoder layer's activations in the update's backward instead of storing them
    (activation checkpointing): less memory, about a third more update time. The update then reads
    each row's prompt and completion whole instead of sharing its prompt's cache, since a
    checkpointed layer does not keep a cache."""
    out: str = "runs/train"
    steps: int = 200
    reward: str = "bleu"  # paper: cased sentence BLEU / 100
    lora_settings: LoraSettings = field(default_factory=LoraSettings)
    rollout: RolloutSettings = field(default_factory=RolloutSettings)
    optim: OptimSettings = field(default_factory=OptimSettings)
    loss: LossSettings = field(default_factory=LossSettings)
    eval_every: int = 50
    eval_examples: int = 300
    eval_sampled_passes: int = 5
    """Held-out sampled decoding passes (T 0.9, top-p 0.9) whose BLEU is averaged, beside one
    greedy pass (paper: 5 passes, seeds 42..46; here drawn together, one call seeded 42)."""
    record_groups: int = 4
    """Rollout groups (prompts with their K responses) saved at each evaluation into
    OUT/rollouts/, for ``leafrl inspect``; 0 saves none."""
    save_every: int = 50
    seed: int = 42
    system: str | None = None

    def __post_init__(self) -> None:
        if self.algo not in ("leaf", "grpo"):
            raise ValueError(f"TrainConfig.algo must be 'leaf' or 'grpo', got {self.algo!r}")
        if self.rollout.surprisal not in SURPRISAL_SOURCES:
            raise ValueError(f"TrainConfig.rollout.surprisal must be one of {SURPRISAL_SOURCES}")
        if self.loss.agg not in AGGREGATIONS:
            raise ValueError(f"TrainConfig.loss.agg must be one of {AGGREGATIONS}, got {self.loss.agg!r}")
        if self.model_dtype not in MODEL_DTYPES:
            raise ValueError(f"TrainConfig.model_dtype must be one of {MODEL_DTYPES}, got {self.model_dtype!r}")
        r, o, s = self.rollout, self.optim, self.loss
        require("TrainConfig", [
            *[(name, getattr(self, name), getattr(self, name) >= 1, ">= 1")
              for name in ("steps", "eval_every", "eval_examples", "save_every")],
            *[(name, getattr(self, name), getattr(self, name) >= 0, ">= 0")
              for name in ("eval_sampled_passes", "record_groups")],
            ("grpo_std_floor", self.grpo_std_floor, self.grpo_std_floor >= 0, ">= 0"),
            ("rollout.rollout_budget", r.rollout_budget, r.rollout_budget >= 2,
             ">= 2 (the advantages compare a prompt's K responses: with one, every advantage is 0)"),
            *[(f"rollout.{name}", getattr(r, name), getattr(r, name) >= 1, ">= 1")
              for name in ("prompts_per_step", "max_new_tokens")],
            ("rollout.temperature", r.temperature, r.temperature > 0, "> 0"),
            ("rollout.top_p", r.top_p, 0 < r.top_p <= 1, "in (0, 1]"),
            *[(f"optim.{name}", getattr(o, name), getattr(o, name) >= 1, ">= 1")
              for name in ("minibatch", "epochs", "micro_batch")],
            *optimizer_checks(o, "optim."),
            *[(f"optim.{name}", getattr(o, name), 0 <= getattr(o, name) < 1, "in [0, 1)")
              for name in ("beta1", "beta2")],
            *[(f"loss.{name}", getattr(s, name), getattr(s, name) >= 0, ">= 0")
              for name in ("clip_low", "clip_high", "beta")],
            *lora_checks(self.lora_settings),
        ])


def require(where: str, checks: list[tuple[str, Any, bool, str]]) -> None:
    """Raise ValueError naming the first setting ``(name, value, ok, what it must be)`` not ok."""
    for name, value, ok, need in checks:
        if not ok:
            raise ValueError(f"{where}.{name} must be {need}, got {value!r}")


def optimizer_checks(settings: Any, prefix: str) -> list[tuple[str, Any, bool, str]]:
    """The learning-rate schedule and clipping settings shared by SFTConfig and TrainConfig.optim."""
    s = settings
    return [(f"{prefix}lr", s.lr, s.lr > 0, "> 0"),
            (f"{prefix}warmup_frac", s.warmup_frac, 0 <= s.warmup_frac < 1, "in [0, 1)"),
            (f"{prefix}min_lr_ratio", s.min_lr_ratio, 0 <= s.min_lr_ratio <= 1, "in [0, 1]"),
            (f"{prefix}weight_decay", s.weight_decay, s.weight_decay >= 0, ">= 0"),
            (f"{prefix}grad_clip", s.grad_clip, s.grad_clip > 0, "> 0")]


def lora_checks(lora: LoraSettings) -> list[tuple[str, Any, bool, str]]:
    return [("lora_settings.rank", lora.rank, lora.rank >= 1, ">= 1"),
            ("lora_settings.alpha", lora.alpha, lora.alpha > 0, "> 0"),
            ("lora_settings.dropout", lora.dropout, 0 <= lora.dropout < 1, "in [0, 1)")]


def resolve_paths(cfg: C) -> C:
    """``cfg`` (a TrainConfig or SFTConfig) with ``out`` absolute, and ``model`` and ``data`` absolute
    when they name local paths (a hub name stays as it is): the config saved in a run directory
    then means the same from any working directory."""
    def local(value: str | None) -> str | None:
        path = None if value is None else Path(value).expanduser()
        return str(path.resolve()) if path is not None and path.exists() else value

    return dataclasses.replace(cfg, out=str(Path(cfg.out).expanduser().resolve()), model=local(cfg.model),
                               data=local(cfg.data))


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(cls: type[C], data: dict, where: str = "") -> C:
    """Build dataclass ``cls`` from a nested dict; unknown keys raise naming them."""
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ValueError(f"{where or cls.__name__}: unknown setting(s) {unknown}; known: {sorted(names)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        kind = hints[key]
        if dataclasses.is_dataclass(kind) and isinstance(value, dict):
            value = from_dict(kind, value, f"{where or cls.__name__}.{key}")
        kwargs[key] = _coerce(value, kind, f"{where or cls.__name__}.{key}")
    return cls(**kwargs)


def _coerce(value: Any, kind: Any, name: str) -> Any:
    """Check ``value`` against a field type (ints are accepted for floats)."""
    union = isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union
    options = typing.get_args(kind) if union else (kind,)
    for option in options:
        if option is type(None) and value is None:
            return None
        if option is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if option is float and isinstance(value, str):  # YAML 1.1 reads "3e-4" as a string
            try:
                return float(value)
            except ValueError:
                pass
        is_bool_for_int = option is int and isinstance(value, bool)
        if isinstance(option, type) and isinstance(value, option) and not is_bool_for_int:
            return value
    raise ValueError(f"{name}: expected {kind}, got {value!r}")


def apply_overrides(cfg: C, overrides: list[str]) -> C:
    """``["lr=1e-4", "lora_settings.rank=16"]`` -> a new config; values are parsed as YAML."""
    data = to_dict(cfg)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set {item!r}: expected section.field=value")
        node = data
        *parents, leaf = key.strip().split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                raise ValueError(f"--set {item!r}: {part!r} is not a section of {type(cfg).__name__}")
            node = node[part]
        if leaf not in node:
            raise ValueError(f"--set {item!r}: unknown setting {key!r}")
        node[leaf] = yaml.safe_load(raw)
    return from_dict(type(cfg), data)


def load_config(cls: type[C], path: str | Path | None = None, overrides: list[str] | None = None, *,
                presets: list[str] | None = None, **given: Any) -> C:
    """Defaults, then ``presets`` (``--set``-style settings such as ``leafrl.builtin.BUILTIN_TRAIN``),
    then a YAML file, then ``given`` keyword values (CLI options), then ``overrides`` (``--set``)."""
    data = to_dict(apply_overrides(cls(), presets or []))
    if path is not None:
        loaded = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: expected a mapping of settings")
        data = _merge(data, loaded)
    data.update({k: v for k, v in given.items() if v is not None})
    return apply_overrides(from_dict(cls, data), overrides or [])


def _merge(base: dict, new: dict) -> dict:
    out = dict(base)
    for key, value in new.items():
        nested = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = _merge(out[key], value) if nested else value
    return out


def save_config(cfg: Any, path: str | Path) -> None:
    """Write the resolved config as YAML, atomically."""
    write_text_atomic(Path(path), yaml.safe_dump(to_dict(cfg), sort_keys=False))
