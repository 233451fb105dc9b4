"""Seconds per RL step: leafrl's trainer beside TRL's ``GRPOTrainer`` at the same schedule, in one run,
on the same tiny text-only model, the same prompts and the same settings; and TRL with LEAF's
advantages beside TRL's GRPO.

    python benchmarks/bench_trl.py [--steps 4] [--rounds 3] [--rows 200] [--max-new-tokens 32] [--threads N]

Needs ``pip install trl`` (written against trl 1.16.0); runs on CPU, downloads nothing. Three comparisons:

1. The authors' schedule: one generation of 6 prompts x K 8 = 48 completions, then 8 optimizer
   steps of 6 completions each. leafrl at its defaults (``optim.minibatch`` 6, the old policy's
   log-probs from one no-grad pass over the rows of minibatches 2..8); TRL with
   ``steps_per_generation=8`` and ``per_device_train_batch_size=6`` (it then computes its old-policy
   log-probs of all 48 in one no-grad pass). Prints ``ratio TRL / leafrl, same schedule``.
2. One optimizer step of all 48 completions per generation (leafrl ``optim.minibatch=48``, TRL
   ``steps_per_generation=1``: on-policy, neither runs an old-policy pass).
3. TRL's GRPO against TRL with LEAF (``leafrl.integrations.trl.LeafGRPOTrainer``, the paper's
   LeafConfig), one optimizer step per generation, in ``--rounds`` alternating rounds.

In 1 and 2 the two sides alternate RL steps in one process (leafrl's step i runs just before
TRL's generation i, outside TRL's clock), so load from other work on a shared CPU falls on both
alike. Each side's first step is a warm-up, not counted; medians are printed beside means (a
shared machine's outliers). Per-phase medians: leafrl's own (``time/...``); TRL's by wrapping
its methods: generate, its no-grad passes (old-policy and reference log-probs), reward, and the
rest (loss forward, backward, optimizer).

A tiny ``Qwen2ForCausalLM`` (random weights, hidden 192, 4 layers, 4 heads, 2 KV heads) and a
byte-level BPE tokenizer with a ChatML-style chat template are built and saved to a temporary
directory; every trainer loads that directory. The task is English -> German translation from
``leafrl.data.grammar`` (prompt "Translate into German: <English>", reference the German),
rewarded with sentence BLEU / 100 (sacrebleu) on both sides.

Settings shared by every side: GRPO, 6 prompts x K=8, sampling at temperature 1.0 and top-p 0.9
(no top-k), 32 new tokens at most by default, LoRA r 16 / alpha 32 / dropout 0.05 on
q/k/v/o/gate/up/down, AdamW lr 1e-4 betas (0.9, 0.95) no weight decay, grad clip 1.0, cosine
schedule over the optimizer steps with 5% warmup to 0.1 x lr, KL beta 0.02 against the base
model (LoRA disabled), clip eps 0.2, per-sequence token-mean loss, float32, seed 42. Both sides
see the same prompts in the same order: TRL's dataset is the sequence of prompts leafrl draws for
steps 0..N, unshuffled. leafrl runs all 48 rows of a pass in one forward (``optim.micro_batch``
48). TRL's gradient checkpointing (on by default) is turned off.

Left as each library does it: the sampled tokens differ (separate RNG streams; the mean response
length is printed for both); TRL samples with the model in train mode (LoRA dropout on) while
leafrl samples in eval mode; leafrl embeds each prompt once and runs its tokens once per pass
(its K samples share the prompt's key/value cache) and keeps the per-step sampling scores (its
surprisal, unused by GRPO); TRL computes the per-token entropy in its loss forward, weights the
KL by the ratio (use_bias_correction_kl), normalizes advantages by std + 1e-4 (leafrl: std
floored at 1/3) and shuffles the 48 rows.

Setup (model loading, LoRA, optimizer, trainer construction) is not timed on either side. On a
busy CPU torch's default thread count can make the many small decoding ops stall; ``--threads 1``
gives steadier numbers there.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from leafrl.config import TrainConfig, apply_overrides
from leafrl.data import load_split
from leafrl.models.tiny import train_tokenizer
from leafrl.trainer import prompts_for, setup, train_step

CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
SEED = 42
PROMPTS_PER_STEP, K = 6, 8
LR, BETA, CLIP_EPS, TEMPERATURE, TOP_P = 1e-4, 0.02, 0.2, 1.0, 0.9
LORA_RANK, LORA_ALPHA, LORA_DROPOUT = 16, 32, 0.05
MINIBATCHES = 8  # the authors' optimizer steps per generation: 48 completions in minibatches of 6
WARMUP_FRAC, MIN_LR_RATIO, BETA2, GRAD_CLIP = 0.05, 0.1, 0.95, 1.0


def write_task(root: Path, rows: int, seed: int = 0) -> list[str]:
    """train.jsonl / valid.jsonl of text-only translation rows; returns their texts (for the tokenizer)."""
    from leafrl.data.grammar import sample_ast

    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    texts = []
    for split, n in (("train", rows), ("valid", max(2, rows // 10))):
        lines = []
        for i in range(n):
            utterance = sample_ast(rng)
            row = {"id": f"{split}{i}", "audio": None, "prompt": f"Translate into German: {utterance.transcript}",
                   "reference": utterance.reference, "task": "ast"}
            texts += [row["prompt"], row["reference"]]
            lines.append(json.dumps(row) + "\n")
        (root / f"{split}.jsonl").write_text("".join(lines))
    return texts


def save_model(directory: Path, texts: list[str]) -> None:
    """A tiny random Qwen2 causal LM and its locally trained tokenizer with a chat template."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tok = train_tokenizer(texts, 1024)
    tok.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tok), hidden_size=192, intermediate_size=768,
                                         num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                                         max_position_embeddings=1024))
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(directory)
    tok.save_pretrained(directory)


def leafrl_run(model: Path, data: Path, out: Path, args: argparse.Namespace, overrides: list[str]) -> Any:
    """leafrl's run (model with LoRA, optimizer, data), built by ``leafrl.trainer.setup``, with
    ``overrides`` over the shared settings."""
    cfg = apply_overrides(TrainConfig(), [
        "algo=grpo", f"model={model}", f"data={data}", f"out={out}", f"steps={args.steps + 1}", "eval.examples=1",
        "reward=bleu", f"seed={SEED}", f"rollout.rollout_budget={K}", f"rollout.prompts_per_step={PROMPTS_PER_STEP}",
        f"rollout.temperature={TEMPERATURE}", f"rollout.top_p={TOP_P}", f"rollout.max_new_tokens={args.max_new_tokens}",
        f"lora.rank={LORA_RANK}", f"lora.alpha={LORA_ALPHA}", f"lora.dropout={LORA_DROPOUT}",
        f"optim.lr={LR}", f"optim.micro_batch={PROMPTS_PER_STEP * K}", f"optim.warmup_frac={WARMUP_FRAC}",
        f"optim.min_lr_ratio={MIN_LR_RATIO}", f"optim.beta2={BETA2}", "optim.weight_decay=0.0",
        f"optim.grad_clip={GRAD_CLIP}", f"loss.beta={BETA}", f"loss.clip_low={CLIP_EPS}", f"loss.clip_high={CLIP_EPS}",
        "loss.agg=seq_mean_token_mean", *overrides,
    ])
    return setup(cfg, Console(quiet=True), resume=False)


def trl_dataset(data: Path, steps: int) -> Any:
    """The prompts leafrl draws for steps 0..steps-1, in order, as a conversational dataset."""
    from datasets import Dataset

    train = list(load_split(data, "train"))
    rows = [ex for step in range(steps) for ex in prompts_for(step, train, PROMPTS_PER_STEP, SEED)]
    return Dataset.from_list([{"prompt": [{"role": "user", "content": ex.prompt}], "reference": ex.reference}
                              for ex in rows])


def bleu_reward(completions: list[list[dict]], reference: list[str], **kwargs: Any) -> list[float]:
    """Sentence BLEU / 100 of each completion against its row's reference (whitespace normalized, as leafrl)."""
    import sacrebleu

    return [sacrebleu.sentence_bleu(" ".join(c[0]["content"].split()), [ref]).score / 100
            for c, ref in zip(completions, reference, strict=True)]


def trl_config(cls: type, out: Path, steps: int, args: argparse.Namespace, per_generation: int, **more: Any) -> Any:
    """The TRL config every TRL run shares (``cls``: GRPOConfig, or LeafGRPOConfig with ``more``):
    ``steps`` generations of 6 prompts x 8 completions, each making ``per_generation`` optimizer
    steps of 48 / ``per_generation`` completions."""
    return cls(
        output_dir=str(out), use_cpu=True, bf16=False, fp16=False, report_to="none", save_strategy="no",
        logging_strategy="no", disable_tqdm=True, seed=SEED, max_steps=steps * per_generation,
        per_device_train_batch_size=PROMPTS_PER_STEP * K // per_generation, steps_per_generation=per_generation,
        gradient_accumulation_steps=1, num_generations=K, num_iterations=1, shuffle_dataset=False,
        max_completion_length=args.max_new_tokens, temperature=TEMPERATURE, top_p=TOP_P, top_k=0,
        learning_rate=LR, adam_beta1=0.9, adam_beta2=BETA2, weight_decay=0.0, max_grad_norm=GRAD_CLIP,
        lr_scheduler_type="cosine_with_min_lr", lr_scheduler_kwargs={"min_lr_rate": MIN_LR_RATIO},
        warmup_steps=WARMUP_FRAC,
        beta=BETA, epsilon=CLIP_EPS, loss_type="grpo",  # "grpo": token mean per sequence, then mean
        gradient_checkpointing=False,  # TRL defaults to True; leafrl does not checkpoint
        **more,
    )


class PhaseClock:
    """Seconds TRL spends in its phases, by wrapping the trainer's methods: "generate"
    (``_generate_single_turn``), "no-grad passes" (``_get_per_token_logps_and_entropies`` without
    grad: old-policy and reference log-probs, and LEAF's surprisal where it runs one) and
    "reward"; the rest of a step is its loss forward, backward and optimizer step."""

    def __init__(self, trainer: Any) -> None:
        self.seconds: dict[str, float] = {"generate": 0.0, "no-grad passes": 0.0, "reward": 0.0}
        for name, phase in (("_generate_single_turn", "generate"), ("_get_per_token_logps_and_entropies", None),
                            ("_calculate_rewards", "reward")):
            setattr(trainer, name, self._timed(getattr(trainer, name), phase))

    def _timed(self, method: Any, phase: str | None) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                if phase is not None or not torch.is_grad_enabled():
                    self.seconds[phase or "no-grad passes"] += time.perf_counter() - start
        return timed

    def take(self) -> dict[str, float]:
        """The seconds since the last take, per phase."""
        taken, self.seconds = self.seconds, dict.fromkeys(self.seconds, 0.0)
        return taken


def trl_trainer(cls: type, config_cls: type, model_dir: Path, data: Path, out: Path, args: argparse.Namespace,
                per_generation: int, callbacks: list[Any], **more: Any) -> Any:
    """A TRL trainer (``cls``: GRPOTrainer or LeafGRPOTrainer) at ``per_generation`` optimizer
    steps per generation of 6 prompts x 8 completions, for steps 0..N (N + 1 generations)."""
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback

    steps = args.steps + 1
    lora = LoraConfig(r=LORA_RANK, lora_alpha=LORA_ALPHA, lora_dropout=LORA_DROPOUT, target_modules=LORA_TARGETS,
                      task_type="CAUSAL_LM")
    torch.manual_seed(SEED)  # the LoRA initialization, as leafrl's setup
    trainer = cls(model=AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32), reward_funcs=bleu_reward,
                  args=trl_config(config_cls, out, steps, args, per_generation, **more),
                  train_dataset=trl_dataset(data, steps), processing_class=AutoTokenizer.from_pretrained(model_dir),
                  peft_config=lora, callbacks=callbacks)
    trainer.remove_callback(PrinterCallback)  # the end-of-training metrics dict
    return trainer


class Generations:
    """A TrainerCallback that times a TRL run per generation (the sum of its ``per_generation``
    optimizer steps, each from ``on_step_begin`` to ``on_step_end``) and, with ``before``, calls
    ``before(i)`` at the start of generation i, outside TRL's clock."""

    def __init__(self, per_generation: int, before: Any = None) -> None:
        from transformers import TrainerCallback

        outer = self
        self.per_generation, self.before = per_generation, before
        self.seconds: list[float] = []
        self.tokens: list[float] = []
        self.phases: list[dict[str, float]] = []
        self.trainer: Any = None
        self.clock: PhaseClock | None = None

        class Callback(TrainerCallback):
            def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                if state.global_step % outer.per_generation == 0:
                    if outer.before is not None:
                        outer.before(len(outer.seconds))
                    outer.seconds.append(0.0)
                    outer.clock.take()
                outer.start = time.perf_counter()

            def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                outer.seconds[-1] += time.perf_counter() - outer.start
                if state.global_step % outer.per_generation == 0:  # the generation's last optimizer step
                    outer.tokens.append(outer.trainer._metrics["train"]["completions/mean_length"][-1])
                    phases = outer.clock.take()
                    outer.phases.append({**phases, "loss, backward, optimizer": outer.seconds[-1] - sum(
                        phases.values())})

        self.callback = Callback()

    def attach(self, trainer: Any) -> None:
        self.trainer, self.clock = trainer, PhaseClock(trainer)


def interleaved(model_dir: Path, data: Path, out: Path, args: argparse.Namespace, per_generation: int,
                leafrl_overrides: list[str]) -> dict[str, dict[str, list[float]]]:
    """leafrl (``leafrl_overrides``) and TRL's GRPOTrainer at ``per_generation`` optimizer steps per
    generation, their RL steps alternating (leafrl's step i just before TRL's generation i, outside
    TRL's clock): per side "seconds" and "tokens" of steps 1..N, leafrl's phases and TRL's."""
    from trl import GRPOConfig, GRPOTrainer

    run = leafrl_run(model_dir, data, out / f"leafrl-{per_generation}", args, leafrl_overrides)
    mine: dict[str, list[float]] = {"seconds": [], "tokens": []}

    def leafrl_step(step: int) -> None:
        start = time.perf_counter()
        row = train_step(run, step)
        mine["seconds"].append(time.perf_counter() - start)
        mine["tokens"].append(row["response_tokens"])
        for key, value in row.items():
            if key.startswith("time/"):
                mine.setdefault(key, []).append(value)

    timer = Generations(per_generation, leafrl_step)
    trainer = trl_trainer(GRPOTrainer, GRPOConfig, model_dir, data, out / f"trl-{per_generation}", args,
                          per_generation, [timer.callback])
    timer.attach(trainer)
    trainer.train()
    if len(timer.seconds) != args.steps + 1 or len(mine["seconds"]) != args.steps + 1:
        raise RuntimeError(f"ran {len(timer.seconds)} TRL generations, expected {args.steps + 1}")
    trl_side = {"seconds": timer.seconds, "tokens": timer.tokens,
                **{f"time/{k}": [p[k] for p in timer.phases] for k in timer.phases[0]}}
    return {side: {key: values[1:] for key, values in timed.items()} for side, timed in
            (("leafrl", mine), ("TRL", trl_side))}


def trl_rounds(model_dir: Path, data: Path, out: Path, args: argparse.Namespace) -> dict[str, dict[str, list[float]]]:
    """TRL's GRPO and TRL with LEAF (``LeafGRPOTrainer``, the paper's LeafConfig), one optimizer step
    per generation, in ``args.rounds`` alternating rounds of N + 1 steps each (the first of each
    round a warm-up): "seconds" and "tokens" of the timed steps, over all rounds."""
    from trl import GRPOConfig, GRPOTrainer

    from leafrl.integrations.trl import LeafGRPOConfig, LeafGRPOTrainer

    sides = {"TRL": (GRPOTrainer, GRPOConfig), "TRL+LEAF": (LeafGRPOTrainer, LeafGRPOConfig)}
    result = {side: {"seconds": [], "tokens": []} for side in sides}
    for round_ in range(args.rounds):
        for side, (cls, config_cls) in sides.items():
            timer = Generations(1)
            trainer = trl_trainer(cls, config_cls, model_dir, data, out / f"round-{round_}-{side}", args, 1,
                                  [timer.callback])
            timer.attach(trainer)
            trainer.train()
            result[side]["seconds"] += timer.seconds[1:]
            result[side]["tokens"] += timer.tokens[1:]
    return result


def table(title: str, timed: dict[str, dict[str, list[float]]]) -> None:
    """Mean, median, min and max seconds per RL step and response tokens, per side."""
    print(f"\n{title}")
    print(f"{'':<10}{'mean s/step':>12}{'median s':>10}{'min s':>8}{'max s':>8}{'resp tokens':>13}")
    for side, t in timed.items():
        s = t["seconds"]
        print(f"{side:<10}{statistics.mean(s):>12.3f}{statistics.median(s):>10.3f}{min(s):>8.3f}{max(s):>8.3f}"
              f"{statistics.mean(t['tokens']):>13.1f}")
    for side, t in timed.items():
        phases = [f"{key.removeprefix('time/')} {statistics.median(v):.3f}" for key, v in t.items()
                  if key.startswith("time/")]
        if phases:
            print(f"  {side} phases, median s: " + ", ".join(phases))


def ratio(timed: dict[str, dict[str, list[float]]], top: str, bottom: str) -> tuple[float, float]:
    """(median, mean) of ``top``'s seconds per step over ``bottom``'s."""
    return (statistics.median(timed[top]["seconds"]) / statistics.median(timed[bottom]["seconds"]),
            statistics.mean(timed[top]["seconds"]) / statistics.mean(timed[bottom]["seconds"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="timed steps per side (after one warm-up step)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of TRL and TRL+LEAF")
    parser.add_argument("--rows", type=int, default=200, help="training rows of the synthetic task")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="response length limit")
    parser.add_argument("--threads", type=int, help="torch threads for every side (default: torch's own)")
    args = parser.parse_args()
    if args.steps < 1 or (args.steps + 1) * PROMPTS_PER_STEP > args.rows:
        parser.error("need 1 <= steps and (steps + 1) x 6 prompts <= rows (one epoch of distinct prompts)")

    import transformers
    import trl

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    warnings.filterwarnings("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        texts = write_task(root / "data", args.rows)
        save_model(root / "model", texts)
        same = interleaved(root / "model", root / "data", root, args, MINIBATCHES, [])
        one = interleaved(root / "model", root / "data", root, args, 1, [f"optim.minibatch={PROMPTS_PER_STEP * K}"])
        rounds = trl_rounds(root / "model", root / "data", root, args)

    print(f"trl {trl.__version__}, transformers {transformers.__version__}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} torch threads, CPU; {PROMPTS_PER_STEP} prompts x {K} responses, "
          f"<= {args.max_new_tokens} new tokens; {args.steps} timed steps per side after 1 warm-up")
    table(f"the authors' schedule: {MINIBATCHES} optimizer steps of {PROMPTS_PER_STEP} completions per generation "
          "(leafrl's default; TRL steps_per_generation 8), alternating", same)
    table("one optimizer step of all 48 completions per generation (leafrl optim.minibatch=48; TRL "
          "steps_per_generation 1), alternating", one)
    table(f"TRL's GRPO and TRL with LEAF, one optimizer step per generation, {args.rounds} alternating rounds", rounds)
    print()
    median, mean = ratio(same, "TRL", "leafrl")
    print(f"ratio TRL / leafrl, same schedule (median s/step): {median:.2f} (mean {mean:.2f})")
    median, mean = ratio(one, "TRL", "leafrl")
    print(f"ratio TRL / leafrl, one optimizer step per generation (median s/step): {median:.2f} (mean {mean:.2f})")
    median, mean = ratio(rounds, "TRL+LEAF", "TRL")
    print(f"ratio TRL+LEAF / TRL (median s/step): {median:.2f} (mean {mean:.2f})")


if __name__ == "__main__":
    main()
