"""Seconds per RL step: leafrl's GRPO trainer beside TRL's ``GRPOTrainer``, in one run, on the same
tiny text-only model, the same prompts and the same settings.

    python benchmarks/bench_trl.py [--steps 3] [--rows 200] [--max-new-tokens 32] [--threads N]

Needs ``pip install trl`` (written against trl 1.16.0); runs on CPU, downloads nothing. A third
row times TRL with LEAF's advantages (``leafrl.integrations.trl.LeafGRPOTrainer``, the paper's
LeafConfig) on the same settings, run after the other two.

A tiny ``Qwen2ForCausalLM`` (random weights, hidden 192, 4 layers, 4 heads, 2 KV heads) and a
byte-level BPE tokenizer with a ChatML-style chat template are built and saved to a temporary
directory; both trainers load that directory. The task is English -> German translation from
``leafrl.data.grammar`` (prompt "Translate into German: <English>", reference the German),
rewarded with sentence BLEU / 100 (sacrebleu) on both sides.

Settings shared by both sides: GRPO, 6 prompts x K=8 responses = 48 rows per step, sampling at
temperature 1.0 and top-p 0.9 (no top-k), 32 new tokens at most by default, LoRA r 16 / alpha 32 / dropout
0.05 on q/k/v/o/gate/up/down, AdamW lr 1e-4 betas (0.9, 0.95) no weight decay, grad clip 1.0,
cosine schedule with 5% warmup to 0.1 x lr, KL beta 0.02 against the base model (LoRA disabled),
clip eps 0.2, per-sequence token-mean loss, one optimizer step per generation batch (on-policy,
no reuse), all 48 rows in one forward pass, float32, seed 42. Both sides see the same prompts in
the same order: TRL's dataset is the sequence of prompts leafrl draws for steps 0..N, unshuffled.
TRL counts per_device_train_batch_size in completions: 48 completions with num_generations 8 and
gradient_accumulation_steps 1 make a generation batch of 6 prompts and one optimizer step per
generation (so TRL skips its old-policy forward, as leafrl does), and its reference and loss
forwards run 48 rows at a time. TRL's gradient checkpointing (on by default) is turned off.

Left as each library does it: the sampled tokens differ (separate RNG streams; the mean response
length is printed for both); TRL samples with the model in train mode (LoRA dropout on) while
leafrl samples in eval mode; leafrl embeds each prompt once and runs its tokens once per pass
(its K samples share the prompt's key/value cache) and keeps the per-step sampling scores (its
surprisal, unused by GRPO); TRL computes the
per-token entropy in its loss forward, weights the KL by the ratio (use_bias_correction_kl),
normalizes advantages by std + 1e-4 (leafrl: std floored at 1/3) and shuffles the 48 rows.

What is timed: step 0 is a warm-up on each side and is not counted; steps 1..N are.
  * leafrl: the wall time of ``leafrl.trainer.train_step(run, step)``: prompt selection,
    rollout, reward, advantages, reference log-probs, and the update (forward, backward, grad
    clip, optimizer step).
  * TRL: a ``TrainerCallback`` from ``on_step_begin`` to ``on_step_end`` of ``trainer.train()``:
    generation, reward, advantages, reference log-probs, the loss forward and backward, grad
    clip, optimizer and scheduler step. The dataloader fetch of the (tiny) prompt batch before
    ``on_step_begin`` and the logging after ``on_step_end`` are outside; logging and saving are
    off anyway.
Setup (model loading, LoRA, optimizer, trainer construction) is not timed on either side. leafrl
and TRL run in one process with the same torch thread count, their steps alternating (leafrl's
step i runs inside TRL's ``on_step_begin``, before TRL's clock starts), so that load from other
work on a shared CPU falls on both sides alike; the spread (min / max) is printed beside the mean.
On a busy CPU (other processes using the cores) torch's default thread count can make the many
small decoding ops stall, so steps take several times longer and vary wildly; ``--threads 1``
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


def leafrl_run(model: Path, data: Path, out: Path, args: argparse.Namespace) -> Any:
    """leafrl's run (model with LoRA, optimizer, data), built by ``leafrl.trainer.setup``."""
    cfg = apply_overrides(TrainConfig(), [
        "algo=grpo", f"model={model}", f"data={data}", f"out={out}", f"steps={args.steps + 1}", "eval.examples=1",
        "reward=bleu", f"seed={SEED}", f"rollout.rollout_budget={K}", f"rollout.prompts_per_step={PROMPTS_PER_STEP}",
        f"rollout.temperature={TEMPERATURE}", f"rollout.top_p={TOP_P}", f"rollout.max_new_tokens={args.max_new_tokens}",
        f"lora.rank={LORA_RANK}", f"lora.alpha={LORA_ALPHA}", f"lora.dropout={LORA_DROPOUT}",
        f"optim.lr={LR}", f"optim.micro_batch={PROMPTS_PER_STEP * K}", f"optim.warmup_frac={WARMUP_FRAC}",
        f"optim.min_lr_ratio={MIN_LR_RATIO}", f"optim.beta2={BETA2}", "optim.weight_decay=0.0",
        f"optim.grad_clip={GRAD_CLIP}", f"loss.beta={BETA}", f"loss.clip_low={CLIP_EPS}", f"loss.clip_high={CLIP_EPS}",
        "loss.agg=seq_mean_token_mean",
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


def trl_config(cls: type, out: Path, steps: int, args: argparse.Namespace, **more: Any) -> Any:
    """The TRL config both TRL runs share (``cls``: GRPOConfig, or LeafGRPOConfig with ``more``)."""
    return cls(
        output_dir=str(out), use_cpu=True, bf16=False, fp16=False, report_to="none", save_strategy="no",
        logging_strategy="no", disable_tqdm=True, seed=SEED, max_steps=steps,
        # 48 completions per device batch = 6 prompts x 8 generations; one generation batch per optimizer step
        per_device_train_batch_size=PROMPTS_PER_STEP * K, gradient_accumulation_steps=1, num_generations=K,
        num_iterations=1, shuffle_dataset=False,
        max_completion_length=args.max_new_tokens, temperature=TEMPERATURE, top_p=TOP_P, top_k=0,
        learning_rate=LR, adam_beta1=0.9, adam_beta2=BETA2, weight_decay=0.0, max_grad_norm=GRAD_CLIP,
        lr_scheduler_type="cosine_with_min_lr", lr_scheduler_kwargs={"min_lr_rate": MIN_LR_RATIO},
        warmup_steps=WARMUP_FRAC,
        beta=BETA, epsilon=CLIP_EPS, loss_type="grpo",  # "grpo": token mean per sequence, then mean
        gradient_checkpointing=False,  # TRL defaults to True; leafrl does not checkpoint
        **more,
    )


def time_trl_leaf(model_dir: Path, data: Path, out: Path, args: argparse.Namespace) -> dict[str, list[float]]:
    """TRL with LEAF's advantages (``LeafGRPOTrainer``, the paper's LeafConfig), on its own after the
    interleaved run: "seconds" and mean "tokens" of steps 1..N, timed as TRL's above."""
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback, TrainerCallback

    from leafrl.integrations.trl import LeafGRPOConfig, LeafGRPOTrainer

    timed: dict[str, list[float]] = {"seconds": [], "tokens": []}

    class Clock(TrainerCallback):
        def on_step_begin(self, *args: Any, **kwargs: Any) -> None:
            self.start = time.perf_counter()

        def on_step_end(self, *args: Any, **kwargs: Any) -> None:
            timed["seconds"].append(time.perf_counter() - self.start)
            timed["tokens"].append(trainer._metrics["train"]["completions/mean_length"][-1])

    steps = args.steps + 1
    lora = LoraConfig(r=LORA_RANK, lora_alpha=LORA_ALPHA, lora_dropout=LORA_DROPOUT, target_modules=LORA_TARGETS,
                      task_type="CAUSAL_LM")
    torch.manual_seed(SEED)
    trainer = LeafGRPOTrainer(model=AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32),
                              reward_funcs=bleu_reward, args=trl_config(LeafGRPOConfig, out / "trl-leaf", steps, args),
                              train_dataset=trl_dataset(data, steps), processing_class=AutoTokenizer.from_pretrained(
                                  model_dir), peft_config=lora, callbacks=[Clock()])
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    return {key: values[1:] for key, values in timed.items()}


def time_both(model_dir: Path, data: Path, out: Path, args: argparse.Namespace) -> dict[str, dict[str, list[float]]]:
    """Per side, "seconds" and mean "tokens" per response of the timed steps 1..N, and leafrl's
    per-phase seconds. Steps alternate: leafrl step i, then TRL step i."""
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    run = leafrl_run(model_dir, data, out / "leafrl", args)
    result: dict[str, dict[str, list[float]]] = {"leafrl": {"seconds": [], "tokens": []},
                                                 "TRL": {"seconds": [], "tokens": []}}

    class Interleave(TrainerCallback):
        """Runs (and times) leafrl's step i just before TRL's step i, then times TRL's step i."""

        def __init__(self) -> None:
            self.start = 0.0
            self.trainer: Any = None

        def on_step_begin(self, *args: Any, **kwargs: Any) -> None:
            step = len(result["leafrl"]["seconds"])
            start = time.perf_counter()
            row = train_step(run, step)
            result["leafrl"]["seconds"].append(time.perf_counter() - start)
            result["leafrl"]["tokens"].append(row["response_tokens"])
            for key, value in row.items():
                if key.startswith("time/"):
                    result["leafrl"].setdefault(key, []).append(value)
            self.start = time.perf_counter()  # TRL's clock starts here

        def on_step_end(self, *args: Any, **kwargs: Any) -> None:
            result["TRL"]["seconds"].append(time.perf_counter() - self.start)
            # read after the clock stops; TRL clears its metrics only when it logs (off here)
            result["TRL"]["tokens"].append(self.trainer._metrics["train"]["completions/mean_length"][-1])

    steps = args.steps + 1
    config = trl_config(GRPOConfig, out / "trl", steps, args)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    lora = LoraConfig(r=LORA_RANK, lora_alpha=LORA_ALPHA, lora_dropout=LORA_DROPOUT, target_modules=LORA_TARGETS,
                      task_type="CAUSAL_LM")
    interleave = Interleave()
    torch.manual_seed(SEED)  # the LoRA initialization, as leafrl's setup
    trainer = GRPOTrainer(model=model, reward_funcs=bleu_reward, args=config, train_dataset=trl_dataset(data, steps),
                          processing_class=tokenizer, peft_config=lora, callbacks=[interleave])
    trainer.remove_callback(PrinterCallback)  # the end-of-training metrics dict
    interleave.trainer = trainer
    trainer.train()
    if len(result["TRL"]["seconds"]) != steps or len(result["leafrl"]["seconds"]) != steps:
        raise RuntimeError(f"ran {len(result['TRL']['seconds'])} TRL steps, expected {steps}")
    return {side: {key: values[1:] for key, values in timed.items()} for side, timed in result.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per side (after one warm-up step)")
    parser.add_argument("--rows", type=int, default=200, help="training rows of the synthetic task")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="response length limit")
    parser.add_argument("--threads", type=int, help="torch threads for both sides (default: torch's own)")
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
        timed = time_both(root / "model", root / "data", root, args)
        timed["TRL+LEAF"] = time_trl_leaf(root / "model", root / "data", root, args)

    print(f"trl {trl.__version__}, transformers {transformers.__version__}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} torch threads, CPU")
    print(f"{PROMPTS_PER_STEP} prompts x {K} responses, <= {args.max_new_tokens} new tokens; "
          f"{args.steps} steps per side after 1 warm-up, alternating leafrl / TRL")
    print(f"{'':<8}{'mean s/step':>12}{'median s':>10}{'min s':>8}{'max s':>8}{'resp tokens':>13}")
    for side, t in timed.items():
        s = t["seconds"]
        print(f"{side:<8}{statistics.mean(s):>12.3f}{statistics.median(s):>10.3f}{min(s):>8.3f}{max(s):>8.3f}"
              f"{statistics.mean(t['tokens']):>13.1f}")
    ratio = statistics.mean(timed["TRL"]["seconds"]) / statistics.mean(timed["leafrl"]["seconds"])
    print(f"ratio TRL / leafrl (mean s/step): {ratio:.2f}")
    leaf = statistics.mean(timed["TRL+LEAF"]["seconds"]) / statistics.mean(timed["TRL"]["seconds"])
    print(f"ratio TRL+LEAF / TRL (mean s/step; TRL+LEAF ran after, not interleaved): {leaf:.2f}")
    phases = [f"{key.removeprefix('time/')} {statistics.mean(v):.2f}" for key, v in timed["leafrl"].items()
              if key.startswith("time/")]
    print("leafrl phases, mean s: " + ", ".join(phases))


if __name__ == "__main__":
    main()
