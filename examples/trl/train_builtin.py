"""Speech RL inside TRL: the built-in base speech LLM learns the built-in spoken task with TRL's
``GRPOTrainer`` carrying LEAF's credit (``leafrl.integrations.trl.LeafGRPOTrainer``), at the settings
of ``leafrl train``'s built-in recipe, and is scored on the held-out rows before and after with the
evaluation ``leafrl train`` writes in before.json / after.json (``leafrl.eval.evaluate.held_out_of``).

    pip install -e ".[trl]"
    python examples/trl/train_builtin.py                   # LEAF, the recipe's 120 steps
    python examples/trl/train_builtin.py --fork-budget 0   # TRL's own GRPO on the speech model

On 2 CPU cores: about 5 minutes (the task is synthesized first, 40 s, if $LEAFRL_CACHE lacks it). Writes
OUT/result.json (BLEU before/after, seconds per RL step) and the LoRA adapter in OUT/adapter, which
``leafrl eval --adapter OUT/adapter`` scores with every metric.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from leafrl.config import TrainConfig
from leafrl.data import load_split
from leafrl.eval.evaluate import held_out_of
from leafrl.integrations.trl import LeafGRPOConfig, LeafGRPOTrainer, trl_dataset, trl_reward
from leafrl.models import load_speech_lm, lora_config
from leafrl.recipes import DEFAULT
from leafrl.settings import load_config


def trl_args(cfg: TrainConfig, out: Path, fork_budget: int) -> LeafGRPOConfig:
    """TRL's settings for leafrl's ``cfg``: per RL step, ``prompts_per_step`` prompts x K completions
    sampled at the same temperature and top-p, then one optimizer step per minibatch of
    ``optim.minibatch`` completions (TRL's steps_per_generation); the same LEAF settings, AdamW,
    warmup-cosine schedule, clipping, KL and loss aggregation; float32, as leafrl on a CPU."""
    r, o, loss, leaf = cfg.rollout, cfg.optim, cfg.loss, cfg.leaf
    rows = r.prompts_per_step * r.rollout_budget
    return LeafGRPOConfig(
        output_dir=str(out), use_cpu=not torch.cuda.is_available(), bf16=False, report_to="none", save_strategy="no",
        logging_steps=rows // o.minibatch, disable_tqdm=False, seed=cfg.seed,
        max_steps=cfg.steps * rows // o.minibatch, per_device_train_batch_size=o.minibatch,
        steps_per_generation=rows // o.minibatch, num_generations=r.rollout_budget,
        max_completion_length=r.max_new_tokens, temperature=r.temperature, top_p=r.top_p, top_k=0,
        learning_rate=o.lr, adam_beta1=o.beta1, adam_beta2=o.beta2, weight_decay=o.weight_decay,
        max_grad_norm=o.grad_clip, lr_scheduler_type="cosine_with_min_lr",
        lr_scheduler_kwargs={"min_lr_rate": o.min_lr_ratio}, warmup_steps=o.warmup_frac,
        beta=loss.beta, epsilon=loss.clip_low, epsilon_high=loss.clip_high, loss_type="grpo",  # per-sequence mean
        gradient_checkpointing=cfg.gradient_checkpointing, fork_budget=fork_budget,
        min_prefix_tokens=leaf.min_prefix_tokens, terms=leaf.terms, normalize=leaf.normalize,
        boundaries=leaf.boundaries)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, help="RL steps (default: the recipe's)")
    parser.add_argument("--fork-budget", type=int, default=TrainConfig().leaf.fork_budget,
                        help="LEAF's boundaries per group B; 0 is TRL's GRPO")
    parser.add_argument("--out", type=Path, default=Path("runs/trl-builtin"))
    parser.add_argument("--data", help="another leafrl dataset for the same model (default: the built-in task)")
    parser.add_argument("--examples", type=int, help="held-out rows scored (default: the recipe's eval.examples)")
    args = parser.parse_args()
    cfg = load_config(TrainConfig, recipe=DEFAULT, steps=args.steps, data=args.data,
                      overrides=[] if args.examples is None else [f"eval.examples={args.examples}"])
    valid = list(load_split(cfg.data, "valid"))[: cfg.eval.examples]

    model, family = load_speech_lm(cfg.model)
    before = held_out_of(model.eval(), family, valid, cfg, cfg.eval.sampled_passes)
    trainer = LeafGRPOTrainer(
        model=model, family=family, args=trl_args(cfg, args.out, args.fork_budget),
        train_dataset=trl_dataset(cfg.data, "train", cfg.system),
        reward_funcs=trl_reward(cfg.reward, cfg.eval.bleu_tokenize),
        peft_config=lora_config(model, rank=cfg.lora.rank, alpha=cfg.lora.alpha, dropout=cfg.lora.dropout))
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    trainer.save_model(str(args.out / "adapter"))  # with leafrl_base.json, for leafrl eval --adapter
    after = held_out_of(trainer.model.eval(), family, valid, cfg, cfg.eval.sampled_passes)

    result = {"model": cfg.model, "data": cfg.data, "steps": cfg.steps, "fork_budget": args.fork_budget,
              "seconds_per_step": seconds / cfg.steps, "train_seconds": seconds, "valid_examples": len(valid),
              **{f"{when}_{key}": value for when, held in (("before", before), ("after", after))
                 for key, value in dataclasses.asdict(held).items() if key.startswith("bleu")}}
    (args.out / "result.json").write_text(json.dumps(result, indent=2))
    print(f"held-out BLEU greedy {before.bleu:.2f} -> {after.bleu:.2f}, sampled {before.bleu_sampled:.2f} -> "
          f"{after.bleu_sampled:.2f} ({len(valid)} rows); {seconds / cfg.steps:.2f} s per RL step; "
          f"{args.out / 'result.json'}")


if __name__ == "__main__":
    main()
