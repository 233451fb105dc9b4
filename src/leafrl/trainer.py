"""``leafrl train``: LEAF and GRPO post-training with LoRA, one recipe read top to bottom.

    setup -> for each step: rollout -> score -> advantages -> reference log-probs -> update
          -> log (-> evaluate, checkpoint)

Notation used for tensor shapes:
    N rows = G prompts x K responses, T completion tokens, P prompt tokens.

The loop names no model family (it talks to one through ``models.ModelFamily``) and branches on
the algorithm once, in ``advantages``. Everything random in step s is seeded from (seed, s), so a resumed run
repeats exactly what an uninterrupted one would have done.
"""

from __future__ import annotations

import os
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from leafrl import identity
from leafrl.advantages import grpo_advantages, leaf_advantages
from leafrl.checkpoint import restore, save_checkpoint
from leafrl.config import TrainConfig, resolve_paths, save_config
from leafrl.data import load_split
from leafrl.errors import UserError
from leafrl.eval.evaluate import held_out_of, significance
from leafrl.losses import loss_normalizer, policy_loss
from leafrl.models import (
    EMBEDDED_KEYS,
    ModelFamily,
    attach_lora,
    checkpoint_activations,
    completion_logprobs,
    embed_prompts,
    resolve_dtype,
    slice_rows,
    to_model,
    trim_padding,
)
from leafrl.preflight import load_checked
from leafrl.rewards import group_rewards, resolve_reward
from leafrl.rollout.batch import encode_examples
from leafrl.rollout.hf import generate_completions, reshaping_settings
from leafrl.rollout.record import Rollout, group_infos, save_rollouts
from leafrl.rundir import Claim, held, rewind, state_kept, stop_on_interrupt
from leafrl.schedule import lr_position, minibatch_order, prompts_for, steps_per_epoch, warmup_cosine
from leafrl.summary import HeldOut, RunSummary
from leafrl.token_credit import leafrl_advantages
from leafrl.tracking import MetricsLogger, mean_over_processes, progress_bar, warn


@dataclass
class Run:
    """Everything ``setup`` builds; the loop reads it, ``update`` changes model and optimizer."""

    cfg: TrainConfig
    accelerator: Any
    model: Any  # as prepared by accelerate (DDP-wrapped on several processes): for training
    policy: Any  # the peft model itself (LoRA on the language model): generate, reference, save
    family: ModelFamily
    optimizer: torch.optim.Optimizer
    train: list[Any]
    valid: list[Any]
    reward: Any
    out: Path
    start_step: int
    made_from: dict  # the base model's identity, saved beside every adapter (``leafrl.identity``)


# ----------------------------------------------------------------------------------- setup


def setup(cfg: TrainConfig, console: Console, resume: bool, claimed: Claim | None = None) -> Run:
    """The model with its LoRA, the optimizer (and a checkpoint to resume) and the data, placed by
    accelerate, in the run directory ``claimed`` (``rundir.held``; None: ``cfg.out`` as it is, for
    benchmarks and tests that build a Run without a run of their own). The data are checked
    (``preflight``) and, on resume, that the model and data are the ones the run began with
    (``identity``) before anything is written, so a mistake costs seconds, not a run."""
    from accelerate import Accelerator

    for name in ("model", "data"):
        if getattr(cfg, name) is None:
            raise UserError(f"TrainConfig.{name} is not set: give --{name} (or a recipe that sets it: "
                            "`leafrl recipes`)")
    dtype = resolve_dtype(cfg.model_dtype)
    gpu = torch.accelerator.is_available()  # without one, cpu=True lets processes (torchrun) meet over gloo
    accelerator = Accelerator(cpu=not gpu, mixed_precision={torch.bfloat16: "bf16", torch.float16: "fp16"}.get(
        dtype, "no") if gpu else "no")
    distributed = accelerator.distributed_type.value
    if distributed in ("FSDP", "DEEPSPEED"):
        # checkpoints and evaluation read the whole LoRA on the main process, which sharded
        # parameters (or optimizer states) would turn into a hang; data parallel (DDP) is what is tested
        raise UserError(f"accelerate config: distributed_type {distributed} is refused: leafrl saves and evaluates "
                        "the whole LoRA on the main process, and no sharded run has been tested; use data parallel "
                        "(distributed_type: MULTI_GPU, or MULTI_CPU), which keeps the whole model on every process "
                        "(examples/accelerate/)")
    cfg = resolve_paths(cfg)
    out, main = Path(cfg.out), accelerator.is_main_process
    accelerator.wait_for_everyone()  # every process has checked before the main one writes
    train = list(load_split(cfg.data, "train"))
    valid = list(load_split(cfg.data, "valid"))[: cfg.eval.examples]
    if len(valid) < accelerator.num_processes:
        raise UserError(f"{len(valid)} held-out rows for {accelerator.num_processes} processes: each process "
                        "evaluates a share, so give at least one row per process (eval.examples, valid split)")
    model, family, made_from = load_policy(cfg, dtype, {"train": train, "valid": valid}, main)
    data = identity.of_data(cfg.data)
    recorded = resume and identity.check_resume(out, made_from, data)
    o = cfg.optim
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=o.lr,
                                  betas=(o.beta1, o.beta2), weight_decay=o.weight_decay)
    start, checkpoint, skipped = restore(out, model, optimizer) if resume else (0, None, [])
    for problem in skipped if main else []:
        warn(f"skipping checkpoint {problem}")
    if resume:
        console.print(f"resuming from {checkpoint} (step {start})" if checkpoint else
                      f"no checkpoint in {out} yet: starting its run from step 0")
    if main:
        if claimed is not None:
            claimed.start()  # --overwrite: only now that the new run is ready to start
        if resume:
            rewind(out, start)
        if not recorded:
            identity.save_run(out, made_from, data)
        save_config(cfg, out / "config.yaml")
    prepared, optimizer = accelerator.prepare(model, optimizer)
    return Run(cfg, accelerator, prepared, accelerator.unwrap_model(prepared), family, optimizer, train, valid,
               resolve_reward(cfg.reward, cfg.eval.bleu_tokenize), out, start, made_from)


def load_policy(cfg: TrainConfig, dtype: torch.dtype, splits: dict[str, list], main: bool,
                ) -> tuple[Any, ModelFamily, dict]:
    """The model in ``dtype`` with its LoRA (seeded), checked against every row of ``splits``
    (``preflight``), and the base model's identity; checkpoint sampling settings that rollouts
    turn off are named."""
    model, family = load_checked(cfg.model, dtype, cfg.data, splits, cfg.rollout.max_new_tokens, cfg.system)
    made_from = identity.of_model(cfg.model, model, family.tokenizer)
    if (reshaping := reshaping_settings(model)) and main:
        warn(f"the generation_config of {cfg.model} sets {reshaping}: rollouts and evaluation sample without "
             "them, so the loss scores the distribution the responses were sampled from")
    if cfg.gradient_checkpointing:
        checkpoint_activations(model)
    s = cfg.lora
    torch.manual_seed(cfg.seed)  # the LoRA initialization
    return attach_lora(model, rank=s.rank, alpha=s.alpha, dropout=s.dropout), family, made_from


# ---------------------------------------------------------------------------- the phases


def rollout_of(run: Run, prompts: list[Any]) -> tuple[dict[str, torch.Tensor], Rollout]:
    """K responses per prompt from one batched generate call. Each prompt is embedded once (the
    audio encoder runs once per prompt, not per sample) and its tokens run once per pass (the K
    samples share its cache); the embedded prompts {"inputs_embeds" [G, P, D], "attention_mask"}
    serve the rollout, the reference and the update."""
    r = run.cfg.rollout
    embedded = embed_prompts(run.policy, to_model(encode_examples(run.family, prompts, run.cfg.system), run.policy))
    out = generate_completions(run.policy, run.family, embedded, num_samples=r.rollout_budget,
                               max_new_tokens=r.max_new_tokens, temperature=r.temperature, top_p=r.top_p,
                               surprisal=r.surprisal)
    return embedded, out


def score(run: Run, prompts: list[Any], rollout: Rollout) -> Rollout:
    """The rollout with each response's reward [N] against its prompt's reference."""
    return rollout.scored(group_rewards(run.reward, run.family.decode(rollout.ids), prompts,
                                        run.cfg.rollout.rollout_budget))


def advantages(cfg: TrainConfig, rollout: Rollout) -> tuple[torch.Tensor, dict]:
    """The algorithm's one branch: LEAF span advantages [N, T], GRPO's [N] or leafrl's [N, T]."""
    if cfg.algo == "grpo":
        return grpo_advantages(rollout.rewards, rollout.group_ids, cfg.grpo_std_floor), {}
    if cfg.algo == "leafrl":
        return leafrl_advantages(rollout.ids, rollout.mask, rollout.rewards, rollout.group_ids, cfg.grpo_std_floor), {}
    adv, stats = leaf_advantages(rollout.ids, rollout.mask, rollout.surprisal, rollout.rewards, rollout.group_ids,
                                 cfg.leaf)
    return adv, stats.as_dict()


def micro_batch(prompts: dict, rollout: Rollout, rows: torch.Tensor,
                ) -> tuple[dict, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The prompts that ``rows`` (indices [n]) continue, each once and cut to the columns they use;
    the prompt of each row; the rows' ids and mask, cut to the columns they use."""
    prompt_ids, of_row = torch.unique(rollout.group_ids[rows], return_inverse=True)
    mine = slice_rows(prompts, prompt_ids, EMBEDDED_KEYS)
    mine, ids, mask = trim_padding(mine, rollout.ids[rows], rollout.mask[rows])
    return mine, of_row, ids, mask


@torch.no_grad()
def logprobs_of(run: Run, inputs: dict, rollout: Rollout, rows: torch.Tensor | None = None) -> torch.Tensor:
    """Log-probs [N, T] of the sampled responses under ``run.policy`` as it is now (no grad, its
    train or eval mode as set), at the sampling temperature; only of ``rows`` [n] when given (the
    others 0)."""
    out = torch.zeros(rollout.ids.shape, device=rollout.ids.device)
    every = torch.arange(len(rollout.ids), device=rollout.ids.device) if rows is None else rows
    for rows in every.split(run.cfg.optim.micro_batch):  # one forward pass each
        prompt, of_row, ids, mask = micro_batch(inputs, rollout, rows)
        out[rows, : ids.shape[1]] = completion_logprobs(run.policy, prompt, ids, mask, run.family.keeps_logits,
                                                        of_row, run.cfg.rollout.temperature)
    return out


def reference_logprobs(run: Run, inputs: dict, rollout: Rollout) -> torch.Tensor | None:
    """Log-probs [N, T] under the frozen base policy: the same model, LoRA disabled."""
    if run.cfg.loss.beta == 0:
        return None
    with run.policy.disable_adapter():
        return logprobs_of(run, inputs, rollout)


def minibatch_step(run: Run, inputs: dict, rollout: Rollout, adv: torch.Tensor, ref: torch.Tensor | None,
                   old: torch.Tensor | None, rows: torch.Tensor) -> dict:
    """Loss and gradient of one minibatch ``rows`` [n], accumulated over micro-batches (no
    optimizer step); its metrics, token-weighted over the micro-batches. ``old`` [N, T]: the old
    policy's log-probs, or None when the update is on-policy (the forward's own, detached)."""
    cfg = run.cfg
    mask = rollout.mask[rows]
    normalizer = loss_normalizer(mask, cfg.loss.agg, cfg.rollout.max_new_tokens)
    tokens = max(float(mask.sum()), 1.0)
    totals: dict[str, float] = {"ratio_min": float("inf"), "ratio_max": float("-inf")}
    parts = rows.split(cfg.optim.micro_batch)  # one forward pass each
    for i, part_rows in enumerate(parts):
        # gradients are all-reduced across processes once, on the minibatch's last micro-batch
        sync = nullcontext() if i == len(parts) - 1 else run.accelerator.no_sync(run.model)
        with sync:
            prompt, of_row, ids, part = micro_batch(inputs, rollout, part_rows)
            width = ids.shape[1]
            logp = completion_logprobs(run.model, prompt, ids, part, run.family.keeps_logits, of_row,
                                       cfg.rollout.temperature)
            loss, metrics = policy_loss(
                logp, logp.detach() if old is None else old[part_rows, :width],
                adv[part_rows] if adv.dim() == 1 else adv[part_rows, :width], part,
                None if ref is None else ref[part_rows, :width], clip_low=cfg.loss.clip_low,
                clip_high=cfg.loss.clip_high, beta=cfg.loss.beta, agg=cfg.loss.agg,
                max_tokens=cfg.rollout.max_new_tokens, normalizer=normalizer)
            run.accelerator.backward(loss)
        weight = float(part.sum()) / tokens
        totals["loss"] = totals.get("loss", 0.0) + loss.item()
        for key in ("kl", "approx_kl", "clip_frac", "ratio_mean"):
            totals[key] = totals.get(key, 0.0) + weight * metrics[key].item()
        totals["ratio_min"] = min(totals["ratio_min"], metrics["ratio_min"].item())
        totals["ratio_max"] = max(totals["ratio_max"], metrics["ratio_max"].item())
    return totals


def update(run: Run, inputs: dict, rollout: Rollout, adv: torch.Tensor,
           ref: torch.Tensor | None, step: int) -> dict:
    """The authors' schedule: ``optim.epochs`` passes over the step's N rows in minibatches of
    ``optim.minibatch`` (in ``optim.minibatch_order``), one optimizer step each. The first minibatch
    is exactly on-policy: its own detached log-probs serve as the old policy's. The rows of the
    later ones get the old policy's log-probs from one no-grad pass before the first step, in the
    update's (train) mode, so LoRA dropout acts alike in both. A new pass over the training set
    starts a fresh optimizer and schedule (``optim.warm_restarts``). Metrics are means over the
    optimizer steps, but ratio_min and ratio_max are the extremes over all of them."""
    cfg, o = run.cfg, run.cfg.optim
    order = minibatch_order(len(rollout.ids), o.minibatch, o.epochs, cfg.seed * 1_000_003 + step,
                            cfg.rollout.rollout_budget if o.minibatch_order == "prompts" else 1)
    per_epoch = steps_per_epoch(len(run.train), cfg.rollout.prompts_per_step, run.accelerator.num_processes)
    if o.warm_restarts and step > 0 and step % per_epoch == 0:
        run.optimizer.state.clear()  # a new pass over the training set: Adam starts afresh, the LoRA stays
    params = [p for p in run.model.parameters() if p.requires_grad]
    run.model.train()
    later = torch.cat(order[1:]).unique().to(rollout.ids.device) if len(order) > 1 else None
    old = None if later is None else logprobs_of(run, inputs, rollout, later)
    steps = []
    for j, rows in enumerate(order):
        position, horizon = lr_position(step, j, len(order), cfg.steps, per_epoch, o.warm_restarts)
        for group in run.optimizer.param_groups:  # the schedule counts optimizer steps
            group["lr"] = warmup_cosine(position, horizon, o.lr, o.warmup_frac, o.min_lr_ratio)
        metrics = minibatch_step(run, inputs, rollout, adv, ref, old if j else None, rows.to(rollout.ids.device))
        metrics["grad_norm"] = float(run.accelerator.clip_grad_norm_(params, o.grad_clip))
        run.optimizer.step()
        run.optimizer.zero_grad(set_to_none=True)
        steps.append(metrics)
    run.model.eval()
    return {**{key: sum(m[key] for m in steps) / len(steps) for key in steps[0]},
            "ratio_min": min(m["ratio_min"] for m in steps), "ratio_max": max(m["ratio_max"] for m in steps),
            "lr": run.optimizer.param_groups[0]["lr"], "optimizer_steps": len(steps)}


def train_step(run: Run, step: int, record: Path | None = None) -> dict:
    """rollout -> score -> advantages -> reference -> update, timed per phase; with ``record``,
    the first ``rollout.saved_groups`` rollout groups are saved there (for ``leafrl inspect``)."""
    acc = run.accelerator
    # sampling and dropout depend on (seed, step, process) only
    torch.manual_seed(run.cfg.seed * 1_000_003 + step * 1_009 + acc.process_index)
    prompts = prompts_for(step, run.train, run.cfg.rollout.prompts_per_step, run.cfg.seed, acc.process_index,
                          acc.num_processes)
    times, clock = {}, time.perf_counter()

    def tick(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        times[f"time/{name}"] = now - clock
        clock = now

    inputs, rollout = rollout_of(run, prompts)
    tick("rollout")
    rollout = score(run, prompts, rollout)
    tick("reward")
    if record is not None:
        saved = rollout.first_groups(run.cfg.rollout.saved_groups)
        save_rollouts(record, step + 1, run.cfg.algo, group_infos(run.family, prompts, saved), saved)
    adv, engine = advantages(run.cfg, rollout)
    tick("advantages")
    ref = reference_logprobs(run, inputs, rollout)
    tick("reference")
    metrics = update(run, inputs, rollout, adv, ref, step)
    tick("update")
    by_group = rollout.rewards.view(-1, run.cfg.rollout.rollout_budget)
    cut = rollout.truncated(run.family.eos_token_ids, run.cfg.rollout.max_new_tokens)  # [N]
    row = {"reward_mean": rollout.rewards.mean().item(), "reward_std": rollout.rewards.std().item(),
           "response_tokens": rollout.mask.sum(1).float().mean().item(), "truncated": cut.float().mean().item(),
           "equal_reward_groups": (by_group.amax(1) == by_group.amin(1)).sum().item(), **metrics, **engine, **times}
    return mean_over_processes(acc, row)


# ------------------------------------------------------------------------------ the loop


def held_out(run: Run, during: bool = False) -> HeldOut:
    """Lowercased corpus BLEU of a greedy pass and the mean (and spread) of ``eval.sampled_passes``
    sampled ones (none ``during`` training unless ``eval.sampled_during``), predictions in row order.
    Each process decodes its share of the rows (rank, rank + processes, ...), scored whole."""
    acc = run.accelerator
    return held_out_of(run.policy, run.family, run.valid, run.cfg, run.cfg.eval.passes(during), acc.process_index,
                       acc.num_processes)


def start_evaluation(cfg: TrainConfig) -> HeldOut:
    """What a new run of ``cfg`` records as its start (before.json), on this one process and
    without a run: the model without a LoRA (a fresh LoRA changes no output), ``held_out``'s
    decoding of the same rows. ``leafrl compare`` evaluates the start its runs share once."""
    cfg = resolve_paths(cfg)
    valid = list(load_split(cfg.data, "valid"))[: cfg.eval.examples]
    model, family = load_checked(cfg.model, resolve_dtype(cfg.model_dtype), cfg.data, {"valid": valid},
                                 cfg.rollout.max_new_tokens, cfg.system)
    return held_out_of(model.eval(), family, valid, cfg, cfg.eval.sampled_passes)


def memory_hint(cfg: TrainConfig, step: int) -> str:
    """What to change after running out of accelerator memory in ``step``."""
    r = cfg.rollout
    return (f"out of memory in step {step} ({r.prompts_per_step} prompts x {r.rollout_budget} responses, "
            f"micro_batch {cfg.optim.micro_batch}, max_new_tokens {r.max_new_tokens}). Lower, in this order: "
            f"--set optim.micro_batch=... (rows per forward pass; the update stays the same), "
            f"--set rollout.max_new_tokens=..., --set rollout.prompts_per_step=...; or run on more "
            f"processes (accelerate launch)")


def train(cfg: TrainConfig, *, resume: bool = False, overwrite: bool = False, quiet: bool = False,
          start: HeldOut | None = None) -> RunSummary | None:
    """Run training into ``cfg.out``, or with ``resume`` continue the run there, or with
    ``overwrite`` replace the run there (see ``leafrl.rundir``). Returns the run's summary on the
    main process of a finished run, None on other processes and when stopped by Ctrl-C. ``start``:
    the start's evaluation when the caller has it (``start_evaluation`` of the same model, data
    and evaluation settings), recorded instead of evaluating the start again."""
    cfg = resolve_paths(cfg)  # the run directory, held by this run's main process from here to the end
    with held(Path(cfg.out), resume=resume, overwrite=overwrite, main=os.environ.get("RANK", "0") == "0") as claimed:
        return _train(setup(cfg, Console(quiet=quiet), resume, claimed), resume, quiet, start)


def _train(run: Run, resume: bool, quiet: bool, start: HeldOut | None) -> RunSummary | None:
    started = time.time()
    cfg, main = run.cfg, run.accelerator.is_main_process
    console = Console(quiet=quiet or not main)
    run.model.eval()
    logger = MetricsLogger(run.out, append=resume, enabled=main, purge_step=run.start_step + 1 if resume else None)
    if run.start_step == 0:  # every process evaluates its share of the held-out rows
        before = held_out(run) if start is None else start
        if main:
            before.save(run.out / "before.json")
    step = run.start_step
    with stop_on_interrupt() as interrupt, progress_bar(cfg.algo, console, quiet or not main) as bar, \
            state_kept(run.out, lambda: step, main):
        task = bar.add_task(cfg.algo, total=cfg.steps, completed=step, info="")
        while step < cfg.steps and not interrupt["stop"]:
            evaluating = (step + 1) % cfg.eval.every == 0 or step + 1 == cfg.steps
            record = run.out / "rollouts" / f"step-{step + 1:06d}.json"
            try:
                row = train_step(run, step, record if evaluating and main and cfg.rollout.saved_groups else None)
            except torch.OutOfMemoryError as err:
                raise UserError(memory_hint(cfg, step)) from err
            step += 1
            if step % cfg.eval.every == 0 and step < cfg.steps:
                evaluated = time.perf_counter()
                row.update(held_out(run, during=True).metrics(), eval_seconds=time.perf_counter() - evaluated)
            logger.log(step, row)
            if step % cfg.save_every == 0 or step == cfg.steps or interrupt["stop"]:
                if main:
                    save_checkpoint(run.out, step, run.policy, run.optimizer, {"algo": cfg.algo}, run.made_from)
                run.accelerator.wait_for_everyone()
            info = f"reward {row['reward_mean']:.3f}  kl {row['kl']:.4f}  clip {row['clip_frac']:.3f}"
            bar.update(task, completed=step, info=info + (f"  fork-fire {row['fork_fire_rate']:.2f}"
                                                          if "fork_fire_rate" in row else ""))
    logger.close()
    if interrupt["stop"]:
        run.accelerator.end_training()
        console.print(f"stopped at step {step}: checkpoint saved; continue with --resume {run.out}")
        return None
    evaluated = time.perf_counter()
    after, eval_seconds = held_out(run), time.perf_counter() - evaluated
    # the processes' last collective: a process leaving with its process group alive aborts (gloo)
    run.accelerator.end_training()
    if not main:
        return None
    after.save(run.out / "after.json")
    before = HeldOut.load(run.out / "before.json")
    MetricsLogger(run.out, append=True, tensorboard=False).log(step, {**after.metrics(), "eval_seconds": eval_seconds})
    p_greedy, p_sampled = significance(before, after, [ex.reference for ex in run.valid], cfg.eval.bleu_tokenize)
    summary = RunSummary(
        algo=cfg.algo, steps=step, processes=run.accelerator.num_processes, valid_examples=len(run.valid),
        wall_seconds=time.time() - started, valid_bleu_before=before.bleu, valid_bleu_after=after.bleu,
        valid_bleu_p_value=p_greedy, valid_bleu_sampled_before=before.bleu_sampled,
        valid_bleu_sampled_after=after.bleu_sampled, valid_bleu_sampled_std_before=before.bleu_sampled_std,
        valid_bleu_sampled_std_after=after.bleu_sampled_std, valid_bleu_sampled_p_value=p_sampled)
    summary.save(run.out / "summary.json")
    return summary
