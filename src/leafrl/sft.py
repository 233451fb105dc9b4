"""Supervised fine-tuning (``leafrl sft``): teacher-forced NLL of the references, read top to
bottom as one recipe: setup -> evaluate -> align -> train (with periodic evaluation) -> save.
Alignment serves a model trained from scratch (the built-in tiny SALLM): it shapes the audio
encoder's output like the transcript's tokens (CTC) before the language model learns the task
from the audio; set ``align_steps=0`` for a pretrained model. ``leafrl build-base`` uses this
recipe to make the built-in base model.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from leafrl.config import SFTConfig, resolve_paths, save_config
from leafrl.data import load_split, split_source
from leafrl.errors import UserError
from leafrl.eval.evaluate import evaluate
from leafrl.models import ModelFamily, attach_lora, completion_logprobs, context_length, load_speech_lm
from leafrl.preflight import check_rows
from leafrl.rollout.batch import EncodedRows, encode_examples, encode_targets
from leafrl.rundir import SFT_FILES, Claim, held
from leafrl.schedule import warmup_cosine
from leafrl.summary import SFTSummary
from leafrl.tracking import MetricsLogger, progress_bar


def task_texts(examples: list[Any]) -> list[str]:
    """The text a tokenizer for these rows should know: prompts, references and, where rows
    carry one, the transcript of their audio (``meta["transcript"]``)."""
    texts = [t for ex in examples for t in (ex.prompt, ex.reference)]
    return texts + [ex.meta["transcript"] for ex in examples if isinstance(ex.meta.get("transcript"), str)]


def setup_model(cfg: SFTConfig, train: list[Any]) -> tuple[Any, Any]:
    """(model, family): the given checkpoint, or a fresh built-in tiny SALLM whose tokenizer is
    trained on the training rows' text."""
    if cfg.model is not None:
        model, family = load_speech_lm(cfg.model)
    else:
        from leafrl.models.tiny import new_tiny_sallm

        model, family = new_tiny_sallm(task_texts(train), cfg.tiny, seed=cfg.seed)
    if cfg.finetune != "full":
        if cfg.finetune == "lora+projector" and family.projector is None:
            raise UserError(f"finetune=lora+projector: {cfg.model} is a {family.name} model, without an "
                            "audio projector")
        s = cfg.lora
        model = attach_lora(model, rank=s.rank, alpha=s.alpha, dropout=s.dropout,
                            full=(family.projector,) if cfg.finetune == "lora+projector" else ())
    return model, family


def batches(n: int, size: int, seed: int, lengths: Sequence[Any] | None = None, bucket: int = 1):
    """Endless shuffled index batches, a new permutation each epoch.

    With ``lengths`` (a sortable key per row) and ``bucket`` > 1, each run of ``bucket`` batches'
    worth of the permutation is sorted by length, cut into batches, and those batches go in
    shuffled order: every batch holds rows of similar length, so less of it is padding, and every
    row still comes once per epoch (see ``SFTConfig.length_buckets``).
    """
    if lengths is not None and len(lengths) != n:
        raise ValueError(f"lengths: {len(lengths)} given for {n} rows")
    if bucket < 1:
        raise ValueError(f"bucket must be >= 1, got {bucket}")
    gen = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(n, generator=gen).tolist()
        cut = [order[start:start + size] for start in range(0, n - size + 1 if n >= size else 1, size)]
        if lengths is None or bucket == 1:
            yield from cut
            continue
        for first in range(0, len(cut), bucket):
            pool = sorted((i for batch in cut[first:first + bucket] for i in batch), key=lambda i: lengths[i])
            grouped = [pool[start:start + size] for start in range(0, len(pool), size)]
            yield from (grouped[j] for j in torch.randperm(len(grouped), generator=gen).tolist())


def row_lengths(examples: Sequence[Any]) -> list[tuple[float, int]]:
    """A length key per row for ``batches``: (seconds of audio, characters of prompt and
    reference); the audio is measured from its file header."""
    from leafrl.audio.io import clip_seconds

    return [(0.0 if ex.audio is None else clip_seconds(ex.audio, example_id=ex.id),
             len(ex.prompt) + len(ex.reference)) for ex in examples]


def reference_nll(model: Any, family: ModelFamily, inputs: dict[str, torch.Tensor], examples: list[Any],
                  device: Any) -> torch.Tensor:
    """Mean token NLL of the examples' references given prompt ``inputs``."""
    inputs = {k: v.to(device) for k, v in inputs.items()}
    target, mask = encode_targets(family.tokenizer, [ex.reference for ex in examples], family.eos_token_ids[0])
    logp = completion_logprobs(model, inputs, target.to(device), mask.to(device), family.keeps_logits)
    return -logp.sum() / mask.sum()


def transcripts_of(examples: list[Any], setting: str) -> list[str]:
    """Each row's spoken text (``meta["transcript"]``), or an error naming the row and ``setting``."""
    texts = []
    for ex in examples:
        text = ex.meta.get("transcript")
        if not isinstance(text, str) or not text.strip():
            raise UserError(f"example {ex.id!r}: {setting} > 0 needs a 'transcript' (the spoken text) in "
                             f"every training row; add it or set {setting}=0")
        texts.append(text.strip())
    return texts


def transcript_ids(tokenizer: Any, transcripts: list[str]) -> list[list[int]]:
    """Each transcript as token ids (as a word after a space)."""
    return [tokenizer(" " + text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
            for text in transcripts]


def alignment_loss(model: Any, family: ModelFamily, inputs: dict[str, torch.Tensor], targets: list[list[int]],
                   device: Any = "cpu") -> torch.Tensor:
    """CTC loss of the transcripts on the projected audio frames, read through the model's own
    output layer with the pad token as blank. Runs the audio encoder and projector only.

    Shapes: frames [N, S, D] -> log-probs [S, N, V]; targets concatenated, lengths [N].
    """
    if not hasattr(family, "audio_frames"):
        raise UserError(f"align_steps > 0: the {family.name} family cannot give its projected audio "
                         "frames; set align_steps=0")
    inputs = {k: v.to(device) for k, v in inputs.items()}
    frames, lengths = family.audio_frames(model, inputs)
    logp = model.get_output_embeddings()(frames).float().log_softmax(-1).transpose(0, 1)
    flat = torch.tensor([t for row in targets for t in row], device=device)
    return torch.nn.functional.ctc_loss(logp, flat, lengths.to(device),
                                        torch.tensor([len(row) for row in targets], device=device),
                                        blank=family.pad_token_id, zero_infinity=True)


def train_stage(label: str, key: str, steps: int, loss_of: Callable[[list[int]], torch.Tensor], seed: int, *,
                n_rows: int, batch_size: int, optimizer: torch.optim.Optimizer, cfg: SFTConfig, logger: MetricsLogger,
                console: Console, quiet: bool, started: float, lengths: Sequence[Any] | None = None,
                evaluate_at: Callable[[int], dict] | None = None) -> None:
    """``steps`` optimizer steps of ``loss_of(row indices)`` (shuffled batches of ``batch_size``
    of the ``n_rows``) with a progress bar and the warmup-cosine schedule, each logged as
    ``{key: loss, "lr", "grad_norm", "seconds"}`` (seconds since ``started``) plus what
    ``evaluate_at(step)`` returns. With ``lengths``, batches are length-bucketed (``cfg.length_buckets``)."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    with progress_bar(label, console, quiet) as bar:
        task = bar.add_task(label, total=steps, info="")
        for step, idx in zip(range(steps), batches(n_rows, batch_size, seed, lengths, cfg.length_buckets)):
            for group in optimizer.param_groups:
                group["lr"] = warmup_cosine(step, steps, cfg.optim.lr, cfg.optim.warmup_frac, cfg.optim.min_lr_ratio)
            loss = loss_of(idx)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip)
            optimizer.step()
            row = {key: loss.item(), "lr": optimizer.param_groups[0]["lr"], "grad_norm": grad_norm.item(),
                   "seconds": time.time() - started}
            if evaluate_at is not None:
                row |= evaluate_at(step + 1)
            logger.log(step + 1, row)
            bar.update(task, advance=1, info=f"{key} {row[key]:.3f}"
                       + (f"  valid BLEU {row['valid_bleu']:.1f}" if "valid_bleu" in row else ""))


def run_sft(cfg: SFTConfig, console: Console | None = None, quiet: bool = False, overwrite: bool = False,
            ) -> SFTSummary:
    """Train into ``cfg.out``, which must hold no run unless ``overwrite``, and is held by this
    process till the end (see ``leafrl.rundir``)."""
    if cfg.data is None:
        raise UserError("SFTConfig.data is not set: give --data (or a recipe that sets it: `leafrl recipes`)")
    cfg = resolve_paths(cfg)
    with held(Path(cfg.out), overwrite=overwrite, names=SFT_FILES) as claimed:
        return _sft(cfg, claimed, console or Console(quiet=quiet), quiet)


def _sft(cfg: SFTConfig, claimed: Claim, console: Console, quiet: bool) -> SFTSummary:
    started = time.time()
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    out, data = Path(cfg.out), cfg.data
    train = list(load_split(data, "train"))
    valid = list(load_split(data, "valid"))[: cfg.eval.examples]
    model, family = setup_model(cfg, train)
    targets = [len(ids) + 1 for ids in family.tokenizer([ex.reference for ex in train], add_special_tokens=False,
                                                         split_special_tokens=True)["input_ids"]]
    for split, rows, new in (("train", train, targets), ("valid", valid, cfg.eval.max_new_tokens)):
        check_rows(rows, family, context_length(model), new, split_source(data, split), cfg.system)
    claimed.start()  # --overwrite: only now that the new run is ready to start
    save_config(cfg, out / "config.yaml")
    from accelerate import Accelerator

    device = Accelerator().device  # one process: the GPU when there is one
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    console.print(f"SFT of {cfg.model or 'the built-in tiny SALLM'} ({sum(p.numel() for p in params):,} "
                  f"trainable parameters) on {len(train)} examples from {data}")
    logger = MetricsLogger(out)

    def valid_bleu(during: bool = False) -> dict[str, float]:
        e = cfg.eval
        result = evaluate(model, family, valid, max_new_tokens=e.max_new_tokens, sampled_passes=e.passes(during),
                          temperature=e.temperature, top_p=e.top_p, seed=e.seed, batch_size=e.batch_size,
                          bleu_tokenize=e.bleu_tokenize)
        return {"valid_bleu": result.greedy.bleu, **({"valid_bleu_sampled": result.sampled_bleu}
                                                    if result.sampled else {})}

    before = valid_bleu()
    logger.log(0, before)
    model.train()

    def fresh_optimizer() -> torch.optim.Optimizer:
        # one per stage: Adam's moments of the CTC gradients, carried into SFT, slowed it down
        o = cfg.optim
        return torch.optim.AdamW(params, lr=o.lr, betas=(o.beta1, o.beta2), weight_decay=o.weight_decay)

    stage = partial(train_stage, n_rows=len(train), cfg=cfg, logger=logger, console=console, quiet=quiet,
                    started=started)
    # both stages visit every row several times: with cache_inputs, each is read and encoded once
    inputs_of = EncodedRows(family, train, cfg.system) if cfg.cache_inputs else (
        lambda idx: encode_examples(family, [train[i] for i in idx], cfg.system))
    if cfg.align_steps:
        targets = transcript_ids(family.tokenizer, transcripts_of(train, "align_steps"))
        stage("align", "align_ctc", cfg.align_steps, lambda idx: alignment_loss(
            model, family, inputs_of(idx), [targets[i] for i in idx], device), cfg.seed + 1,
              batch_size=cfg.align_batch_size, optimizer=fresh_optimizer())

    def periodic_bleu(step: int) -> dict:
        return valid_bleu(during=True) if step % cfg.eval.every == 0 and step < cfg.steps else {}

    stage("sft", "loss", cfg.steps, lambda idx: reference_nll(model, family, inputs_of(idx),
                                                              [train[i] for i in idx], device),
          cfg.seed, batch_size=cfg.optim.batch_size, optimizer=fresh_optimizer(), evaluate_at=periodic_bleu,
          lengths=row_lengths(train) if cfg.length_buckets > 1 else None)
    after = valid_bleu()
    logger.log(cfg.steps, after)
    logger.close()
    if cfg.finetune != "full":
        model = model.merge_and_unload()
    family.save(model, str(out / "model"))
    summary = SFTSummary(model=cfg.model or "built-in tiny SALLM", data=str(data), steps=cfg.steps,
                         train_examples=len(train), valid_examples=len(valid), valid_bleu_before=before["valid_bleu"],
                         valid_bleu_after=after["valid_bleu"], wall_seconds=time.time() - started,
                         model_dir=str(out / "model"))
    summary.save(out / "summary.json")
    console.print(f"held-out BLEU {summary.valid_bleu_before:.1f} -> {summary.valid_bleu_after:.1f} in "
                  f"{summary.wall_seconds:.0f} s; model saved to {out / 'model'}")
    return summary
