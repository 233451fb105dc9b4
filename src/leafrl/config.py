"""Typed run configurations: one dataclass per command, one default per setting, each setting
documented once, by the string under it (its first line is what ``leafrl config show`` prints).

A run's settings are resolved in one order, whatever flags were given (``leafrl.settings``):

    the config class's defaults  <  a named recipe (``--recipe``, ``--builtin``)
        <  a YAML file (``--config``)  <  command options  <  ``--set section.field=value``

Recipes are YAML files in the config's shape shipped in ``leafrl/recipes/`` (``leafrl recipes``
lists them). The resolved config is saved with every run as ``config.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from leafrl.advantages import LeafConfig
from leafrl.errors import UserError
from leafrl.eval.metrics import BLEU_TOKENIZE
from leafrl.losses import AGGREGATIONS
from leafrl.models import MODEL_DTYPES
from leafrl.models.tiny import TinyConfig
from leafrl.rollout.hf import SURPRISAL_SOURCES
from leafrl.settings import (
    Setting,
    apply_overrides,
    field_docs,
    from_dict,
    load_config,
    resolve_paths,
    save_config,
    settings,
    to_dict,
)

__all__ = [  # the classes, and (from leafrl.settings) what reads, writes and describes them
    "AdamWConfig", "EvalConfig", "LoraConfig", "LossConfig", "OptimConfig", "RolloutConfig", "SFTConfig",
    "SFTEvalConfig", "SFTOptimConfig", "Setting", "TrainConfig", "apply_overrides", "field_docs", "from_dict",
    "load_config", "resolve_paths", "resumed", "save_config", "settings", "to_dict",
]


@dataclass
class LoraConfig:
    """The LoRA that is trained, on the language model's q/k/v/o/gate/up/down projections."""

    rank: int = 64
    """LoRA rank r (paper: 64)."""
    alpha: int = 128
    """LoRA scale: the update is multiplied by alpha / rank (paper: 128)."""
    dropout: float = 0.05
    """Dropout on the LoRA's input in training (paper: 0.05; on a CPU its masks cost time).

    In RL it acts in the update and in the old policy's pass alike; rollouts and the reference do not use it."""


@dataclass
class AdamWConfig:
    """AdamW with linear warmup and cosine decay to a floor (paper: the authors' values)."""

    lr: float = 5e-6
    """Peak learning rate (paper: 5e-6)."""
    warmup_frac: float = 0.05
    """Share of the optimizer steps spent warming up linearly from 0 (paper: 5%)."""
    min_lr_ratio: float = 0.1
    """The cosine decays to this fraction of lr (paper: 0.1)."""
    beta1: float = 0.9
    """Adam's beta1 (paper: 0.9)."""
    beta2: float = 0.95
    """Adam's beta2 (paper: 0.95)."""
    weight_decay: float = 0.0
    """Decoupled weight decay (paper: 0)."""
    grad_clip: float = 1.0
    """Clip the gradient's global norm to this before each optimizer step (paper: 1.0)."""


MINIBATCH_ORDERS = ("random", "prompts")


@dataclass
class OptimConfig(AdamWConfig):
    """The RL update: AdamW, and how one rollout step's N rows become optimizer steps."""

    minibatch: int = 6
    """Sequences per optimizer step, per process (paper: 6, so 48 rows make 8 optimizer steps).

    One rollout step's N rows make ceil(N / minibatch) optimizer steps per epoch, in a seeded order;
    the first is on-policy and later ones slightly off-policy, where the PPO clip binds."""
    epochs: int = 1
    """Passes over one rollout step's sequences (paper: 1)."""
    minibatch_order: str = "random"
    """How a step's rows form its minibatches: "random" or "prompts".

    "random": a permutation of all N rows, so a minibatch holds rows of up to ``minibatch``
    prompts, each read again. "prompts": the prompts in a random order, each prompt's rows in a
    random order within it, so a minibatch spans as few prompts as it can (two, at 6 of K 8)."""
    warm_restarts: bool = True
    """A fresh optimizer and learning-rate schedule at each pass over the training set, the LoRA kept.

    The authors' runs (``docs/method.md``); with False, one schedule spans every step."""
    micro_batch: int = 8
    """Rows per forward pass inside a minibatch: memory only, the update is the same at any value.

    Gradients accumulate over the micro-batches of a minibatch."""


@dataclass
class SFTOptimConfig(AdamWConfig):
    """SFT's AdamW and batches (defaults: the built-in tiny SALLM trained from scratch)."""

    lr: float = 2e-3
    """Peak learning rate (a model trained from scratch; use about 1e-5 for a pretrained one)."""
    weight_decay: float = 0.01
    """Decoupled weight decay."""
    batch_size: int = 32
    """Rows per optimizer step."""


@dataclass
class RolloutConfig:
    """Sampling of the K responses per prompt (paper: the authors' values)."""

    rollout_budget: int = 8
    """K: responses sampled per prompt (paper: 8)."""
    prompts_per_step: int = 6
    """Prompts per rollout step, per process (paper: 6)."""
    temperature: float = 1.0
    """Sampling temperature T; every log-prob pass uses logits / T too (paper: 1.0)."""
    top_p: float = 0.9
    """Nucleus sampling threshold (paper: 0.9)."""
    max_new_tokens: int = 200
    """The longest response, in tokens, in rollouts and evaluation (paper: 200)."""
    surprisal: str = "processed"
    """LEAF's surprisal: "processed" (paper: the sampled distribution) or "raw" (the model's logits).

    "processed" reads -log p after temperature and top-p, as the tokens were sampled."""
    saved_groups: int = 4
    """Rollout groups saved at each evaluation into OUT/rollouts/ for ``leafrl inspect`` (0: none).

    A group is one prompt with its K responses, their tokens, surprisal and rewards."""


@dataclass
class LossConfig:
    """The policy loss shared by LEAF and GRPO (paper: the authors' values)."""

    clip_low: float = 0.2
    """PPO clip below: the ratio is clipped at 1 - clip_low (paper: eps 0.2)."""
    clip_high: float = 0.2
    """PPO clip above: the ratio is clipped at 1 + clip_high (paper: eps 0.2)."""
    beta: float = 0.02
    """Weight of the k3 KL penalty to the base model, the LoRA disabled (paper: 0.02; 0: no reference pass)."""
    agg: str = "seq_mean_token_mean"
    """Token losses to one loss: seq_mean_token_mean (paper), token_mean (DAPO) or dr_grpo.

    "seq_mean_token_mean": the mean over each sequence's tokens, then over sequences; "dr_grpo":
    the sum over tokens / (N x max_new_tokens)."""


@dataclass
class EvalConfig:
    """Held-out evaluation: lowercased corpus BLEU of a greedy pass and of sampled passes (paper:
    5 passes at T 0.9, top-p 0.9)."""

    every: int = 50
    """Evaluate every this many steps (and before the first and after the last)."""
    examples: int = 300
    """The first this many rows of the valid split are decoded."""
    sampled_passes: int = 5
    """Sampled decoding passes whose BLEU is averaged, beside the greedy one (paper: 5)."""
    sampled_during: bool = False
    """Decode the sampled passes at the evaluations during training too, not only at the start and the end.

    The evaluations every ``every`` steps draw the learning curve from their greedy pass; without
    the sampled passes each costs a sixth as much at 5 passes."""
    temperature: float = 0.9
    """Temperature of the sampled passes (paper: 0.9)."""

    def passes(self, during: bool) -> int:
        """The sampled passes of an evaluation ``during`` training, or at its start or end."""
        return 0 if during and not self.sampled_during else self.sampled_passes
    top_p: float = 0.9
    """Top-p of the sampled passes (paper: 0.9)."""
    seed: int = 42
    """Seed of the sampled passes, drawn together in one seeded call; process i of several adds i.

    The paper seeded its 5 passes 42..46; one call seeded 42 draws from the same distribution."""
    batch_size: int = 32
    """Held-out rows per generate call (memory only)."""
    bleu_tokenize: str = "auto"
    """BLEU's tokenizer, in held-out BLEU and the bleu reward: "auto" (from the references) or sacrebleu's.

    "auto", or one of sacrebleu's: "13a", "zh", "ja-mecab", "ko-mecab", "char", "intl", "none".
    "auto" picks from the references' script: "zh" for Chinese, "ja-mecab" for Japanese and
    "ko-mecab" for Korean (both need MeCab: pip install 'sacrebleu[ja]' or 'sacrebleu[ko]'), else
    "13a", sacrebleu's default; 13a scores a language written without spaces 0 (one word a sentence)."""


@dataclass
class SFTEvalConfig(EvalConfig):
    """SFT's held-out evaluation (greedy by default)."""

    every: int = 200
    """Evaluate every this many steps (and before the first and after the last)."""
    sampled_passes: int = 0
    """Sampled decoding passes whose BLEU is averaged, beside the greedy one."""
    max_new_tokens: int = 64
    """The longest decoded answer, in tokens."""


@dataclass
class SFTConfig:
    """Supervised fine-tuning on the references (``leafrl sft``). The defaults train the built-in
    tiny SALLM from scratch; for a pretrained model set finetune, align_steps=0 and a small lr."""

    data: str | None = None
    """A manifest directory (train/valid.jsonl), a save_to_disk dataset or builtin:NAME (required)."""
    model: str | None = None
    """A hub name, a local HF directory, a GGUF file or builtin:NAME; unset: a fresh tiny SALLM (``tiny``)."""
    tiny: TinyConfig = field(default_factory=TinyConfig)
    """Dimensions of the fresh tiny SALLM (used when model is unset)."""
    out: str = "runs/sft"
    """Output directory: the trained model (HF format), config.yaml, metrics.jsonl, summary.json."""
    finetune: str = "full"
    """"full": every weight; "lora": a LoRA (``lora``), merged on save; "lora+projector": and the projector.

    "lora+projector" trains the family's audio projector in full beside the LoRA (a composed
    model's projector is new: ``leafrl compose``).
    """
    lora: LoraConfig = field(default_factory=LoraConfig)
    """The LoRA, when finetune is "lora"."""
    align_steps: int = 3600
    """Steps of audio alignment, the first stage (0: none; set 0 for a pretrained model).

    CTC of each row's transcript (``meta["transcript"]``) on the model's projected audio frames,
    read through its own output layer, blank = pad token. Only the audio encoder, projector and
    (tied) embeddings learn, without running the language model. Afterwards the audio reaches the
    language model already shaped like text, which it then learns to read much sooner. Needs a
    family with ``audio_frames`` (the built-in model's)."""
    align_batch_size: int = 4
    """Clips per alignment step (small: the encoder learns from the number of updates).

    The encoder learns to hear from the number of updates more than from the clips in each
    (docs/results.md)."""
    steps: int = 800
    """Optimizer steps of SFT (after alignment)."""
    length_buckets: int = 1
    """SFT batches drawn together and regrouped by length, so each pads less (1: plain shuffled).

    Batches are regrouped by audio seconds, then text length. Faster steps, but batches of alike rows teach less
    per step (docs/results.md). Alignment pads every clip to the feature window and is not bucketed."""
    cache_inputs: bool = True
    """Keep each training row's encoded inputs after its first use (a batch is the same either way).

    Saves reading and encoding its audio again every epoch. Costs memory: about 66 KB a row
    for the tiny SALLM's 8 s window, about 1.5 MB with a 30 s Whisper window, so turn it off for
    large datasets. Needs a family whose rows encode alone (``rows_encode_alone``)."""
    optim: SFTOptimConfig = field(default_factory=SFTOptimConfig)
    """AdamW, its schedule and the batch size of both stages' optimizer steps."""
    eval: SFTEvalConfig = field(default_factory=SFTEvalConfig)
    """Held-out evaluation before, during and after SFT."""
    seed: int = 0
    """Seeds the fresh model, the LoRA and the batch order."""
    system: str | None = None
    """An optional system prompt for every row."""

    def __post_init__(self) -> None:
        check_choice("SFTConfig.finetune", self.finetune, FINETUNE)
        at_least_one = ("steps", "align_batch_size", "length_buckets")
        require("SFTConfig", [
            *[(name, getattr(self, name), getattr(self, name) >= 1, ">= 1") for name in at_least_one],
            ("align_steps", self.align_steps, self.align_steps >= 0, ">= 0"),
            ("optim.batch_size", self.optim.batch_size, self.optim.batch_size >= 1, ">= 1"),
            ("eval.max_new_tokens", self.eval.max_new_tokens, self.eval.max_new_tokens >= 1, ">= 1"),
            *optimizer_checks(self.optim), *eval_checks(self.eval), *lora_checks(self.lora)])


FINETUNE = ("full", "lora", "lora+projector")
ALGOS = ("leaf", "grpo", "leafrl")


@dataclass
class TrainConfig:
    """RL post-training with LoRA (``leafrl train``). Defaults are the paper's (the authors'
    released configuration); the built-in recipes change a few for the built-in model."""

    algo: str = "leaf"
    """"leaf" (the paper's), "grpo" or "leafrl": same rollouts, same loss; only the advantages differ.

    "leafrl" is leafrl's own credit (``leafrl.token_credit.leafrl_advantages``): GRPO's response
    advantage plus each token's contrast with the group's other responses holding it (docs/method.md)."""
    leaf: LeafConfig = field(default_factory=LeafConfig)
    """LEAF's options (the paper's defaults)."""
    grpo_std_floor: float = 1 / 3
    """GRPO's advantage is (r - mean) / (max(std, this) + 1e-6) (the authors' baseline: 1/3)."""
    model: str | None = None
    """A hub name, a local HF directory, a GGUF file or builtin:NAME (required)."""
    data: str | None = None
    """A manifest directory (train/valid.jsonl), a save_to_disk dataset or builtin:NAME (required)."""
    system: str | None = None
    """An optional system prompt for every row."""
    reward: str = "bleu"
    """The training reward: bleu (paper), chrf, wer, exact, f1, or 'module:function' of your own.

    bleu is cased sentence BLEU / 100 (sacrebleu)."""
    model_dtype: str = "auto"
    """The dtype the model is loaded in: auto (bfloat16 on a GPU that has it, else float32), bfloat16, ...

    "auto", "bfloat16", "float16" or "float32". The LoRA weights and their optimizer stay float32 (peft),
    accelerate's mixed precision matches on a GPU, and every log-prob the loss, KL and surprisal
    use is computed in float32 from the logits whatever this is."""
    gradient_checkpointing: bool = False
    """Recompute each decoder layer's activations in the backward: less memory, more update time.

    Activation checkpointing costs about a third more update time. The update then reads
    each row's prompt and completion whole instead of sharing its prompt's cache, since a
    checkpointed layer does not keep a cache."""
    out: str = "runs/train"
    """The run directory: config.yaml, metrics, checkpoints, held-out predictions, summary.json."""
    steps: int = 200
    """RL steps (rollout steps), each followed by the update's optimizer steps."""
    seed: int = 42
    """Seeds the LoRA's initialization, the prompt order, the sampling and the minibatch order."""
    save_every: int = 50
    """Save a checkpoint every this many steps (and at the last); the newest two are kept."""
    lora: LoraConfig = field(default_factory=LoraConfig)
    """The RL LoRA (paper: r 64, alpha 128, dropout 0.05)."""
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    """Sampling of the K responses per prompt."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """AdamW, its schedule, and the minibatches of the update."""
    loss: LossConfig = field(default_factory=LossConfig)
    """The clipped policy loss and its KL penalty."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Held-out evaluation before, during and after training."""

    def __post_init__(self) -> None:
        check_choice("TrainConfig.algo", self.algo, ALGOS)
        check_choice("TrainConfig.rollout.surprisal", self.rollout.surprisal, SURPRISAL_SOURCES)
        check_choice("TrainConfig.loss.agg", self.loss.agg, AGGREGATIONS)
        check_choice("TrainConfig.model_dtype", self.model_dtype, MODEL_DTYPES)
        r, o, s = self.rollout, self.optim, self.loss
        require("TrainConfig", [
            *[(name, getattr(self, name), getattr(self, name) >= 1, ">= 1") for name in ("steps", "save_every")],
            ("grpo_std_floor", self.grpo_std_floor, self.grpo_std_floor >= 0, ">= 0"),
            ("rollout.rollout_budget", r.rollout_budget, r.rollout_budget >= 2,
             ">= 2 (the advantages compare a prompt's K responses: with one, every advantage is 0)"),
            *[(f"rollout.{name}", getattr(r, name), getattr(r, name) >= 1, ">= 1")
              for name in ("prompts_per_step", "max_new_tokens")],
            ("rollout.temperature", r.temperature, r.temperature > 0, "> 0"),
            ("rollout.top_p", r.top_p, 0 < r.top_p <= 1, "in (0, 1]"),
            ("rollout.saved_groups", r.saved_groups, r.saved_groups >= 0, ">= 0"),
            *[(f"optim.{name}", getattr(o, name), getattr(o, name) >= 1, ">= 1")
              for name in ("minibatch", "epochs", "micro_batch")],
            ("optim.minibatch_order", o.minibatch_order, o.minibatch_order in MINIBATCH_ORDERS,
             f"one of {', '.join(MINIBATCH_ORDERS)}"),
            *optimizer_checks(o),
            *[(f"loss.{name}", getattr(s, name), getattr(s, name) >= 0, ">= 0")
              for name in ("clip_low", "clip_high", "beta")],
            *eval_checks(self.eval), *lora_checks(self.lora),
        ])


Check = tuple[str, Any, bool, str]


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UserError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


def require(where: str, checks: list[Check]) -> None:
    """Raise UserError naming the first setting ``(name, value, ok, what it must be)`` not ok."""
    for name, value, ok, need in checks:
        if not ok:
            raise UserError(f"{where}.{name} must be {need}, got {value!r}")


def optimizer_checks(o: AdamWConfig) -> list[Check]:
    """The learning-rate schedule, Adam and clipping settings of ``optim``."""
    return [("optim.lr", o.lr, o.lr > 0, "> 0"),
            ("optim.warmup_frac", o.warmup_frac, 0 <= o.warmup_frac < 1, "in [0, 1)"),
            ("optim.min_lr_ratio", o.min_lr_ratio, 0 <= o.min_lr_ratio <= 1, "in [0, 1]"),
            *[(f"optim.{name}", getattr(o, name), 0 <= getattr(o, name) < 1, "in [0, 1)")
              for name in ("beta1", "beta2")],
            ("optim.weight_decay", o.weight_decay, o.weight_decay >= 0, ">= 0"),
            ("optim.grad_clip", o.grad_clip, o.grad_clip > 0, "> 0")]


def eval_checks(e: EvalConfig) -> list[Check]:
    return [*[(f"eval.{name}", getattr(e, name), getattr(e, name) >= 1, ">= 1")
              for name in ("every", "examples", "batch_size")],
            ("eval.sampled_passes", e.sampled_passes, e.sampled_passes >= 0, ">= 0"),
            ("eval.temperature", e.temperature, e.temperature > 0, "> 0"),
            ("eval.top_p", e.top_p, 0 < e.top_p <= 1, "in (0, 1]"),
            ("eval.bleu_tokenize", e.bleu_tokenize, e.bleu_tokenize in BLEU_TOKENIZE,
             f"one of {', '.join(BLEU_TOKENIZE)}")]


def lora_checks(lora: LoraConfig) -> list[Check]:
    return [("lora.rank", lora.rank, lora.rank >= 1, ">= 1"),
            ("lora.alpha", lora.alpha, lora.alpha > 0, "> 0"),
            ("lora.dropout", lora.dropout, 0 <= lora.dropout < 1, "in [0, 1)")]


def resumed(run_dir: Path, overrides: list[str], given: list[str], steps: int | None) -> TrainConfig:
    """The settings of the run in ``run_dir`` (its config.yaml) with ``overrides`` (``--set``) and
    ``steps`` applied and ``out`` set to ``run_dir`` itself, so a copied or moved run directory
    resumes in place. ``given``: the options that would name another run, refused."""
    if given:
        raise UserError(f"--resume {run_dir} continues the run as saved there: {', '.join(given)} cannot be given "
                        "with it (change a setting with --set section.field=value)")
    if any(item.partition("=")[0].strip() == "out" for item in overrides):
        raise UserError(f"--set out=...: --resume {run_dir} writes into {run_dir} itself")
    saved = Path(run_dir) / "config.yaml"
    if not saved.is_file():
        raise UserError(f"--resume {run_dir}: no run there (no config.yaml)")
    return load_config(TrainConfig, path=saved, overrides=overrides, steps=steps, out=str(Path(run_dir).resolve()))
