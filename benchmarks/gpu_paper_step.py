"""Three RL steps of the paper's setting on a randomly initialised model of a released size:
seconds per phase, generation tokens/s and peak memory, beside ``leafrl plan``'s estimate.

    python benchmarks/gpu_paper_step.py [--size granite-2b | text-8b | reduced] [--steps 3] [--set key=value ...]

Nothing is downloaded: the model is built from a config with the released dimensions and random
weights, the tokenizer is trained locally (the model's vocabulary is larger; ids past the
tokenizer's decode to nothing, so rewards mean nothing here: only time and memory do), and the
audio is synthetic (10 s clips). Sizes:

- granite-2b: Granite Speech 3.3 2B, GraniteSpeechConfig's default encoder and projector (the
  projector reading the encoder's width) with a Granite text model of hidden 2048, 40 layers,
  FFN 8192, 32 heads / 8 KV heads, vocab 49,160;
- text-8b: a Llama-3-8B-class text model (hidden 4096, 32 layers, FFN 14336, 32/8 heads, vocab
  128,256) on text prompts;
- reduced: the granite-2b layout at hidden 256, 4 layers, FFN 1024 and a 2-layer encoder, for CPUs.

The paper's setting: 6 prompts x K 8, 200 new tokens, LoRA r64 (alpha 128), the authors' 8
minibatch optimizer steps, model_dtype auto (bfloat16 on a GPU). The first step is a warm-up.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from leafrl.audio.io import write_audio
from leafrl.config import TrainConfig, apply_overrides
from leafrl.models.tiny import train_tokenizer
from leafrl.trainer import setup, train_step

SPECIALS = ["<|end_of_text|>", "<|start_of_role|>", "<|end_of_role|>", "<|audio|>", "<|pad|>"]
TEMPLATE = ("{% for m in messages %}<|start_of_role|>{{ m['role'] }}<|end_of_role|>{{ m['content'] }}"
            "<|end_of_text|>\n{% endfor %}{% if add_generation_prompt %}<|start_of_role|>assistant<|end_of_role|>"
            "{% endif %}")
WORDS = "der die das ein eine rote blaue Hund Katze Auto Haus läuft schnell über Straße Park zum im".split()
TEXT = {"granite-2b": dict(hidden_size=2048, num_hidden_layers=40, intermediate_size=8192, num_attention_heads=32,
                           num_key_value_heads=8, vocab_size=49160),
        "text-8b": dict(hidden_size=4096, num_hidden_layers=32, intermediate_size=14336, num_attention_heads=32,
                        num_key_value_heads=8, vocab_size=128256),
        "reduced": dict(hidden_size=256, num_hidden_layers=4, intermediate_size=1024, num_attention_heads=8,
                        num_key_value_heads=2, vocab_size=49160)}
PAPER = ["rollout.rollout_budget=8", "rollout.prompts_per_step=6", "rollout.max_new_tokens=200",
         "lora.rank=64", "lora.alpha=128", "optim.minibatch=6", "eval.examples=1",
         "reward=chrf", "rollout.saved_groups=0"]


def build_model(size: str, path: Path) -> None:
    """A random model of ``size`` with a local tokenizer, saved in the HF layout at ``path``."""
    import transformers

    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(WORDS, 12)) for _ in range(2000)]
    tok = train_tokenizer(texts, 1000, SPECIALS, pad="<|pad|>", eos="<|end_of_text|>")
    tok.chat_template = TEMPLATE
    text = {**TEXT[size], "max_position_embeddings": 16384}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    with torch.device(device):  # random initialisation of billions of weights: on the GPU when there is one
        if size == "text-8b":
            model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**text))
        else:
            encoder = transformers.GraniteSpeechEncoderConfig(**({} if size == "granite-2b" else {"num_layers": 2}))
            # the projector's default reads 1408-wide encoder states (BLIP-2's); the encoder gives hidden_dim
            projector = {"model_type": "blip_2_qformer", "encoder_hidden_size": encoder.hidden_dim}
            model = transformers.GraniteSpeechForConditionalGeneration(transformers.GraniteSpeechConfig(
                encoder_config=encoder.to_dict(), projector_config=projector,
                text_config={"model_type": "granite", **text},
                audio_token_index=tok.convert_tokens_to_ids("<|audio|>"), has_lora_adapter=False))
    model.generation_config.eos_token_id = tok.eos_token_id
    model.to(torch.bfloat16).save_pretrained(path)
    tok.save_pretrained(path)
    if size != "text-8b":
        (path / "preprocessor_config.json").write_text(json.dumps({
            "feature_extractor_type": "GraniteSpeechFeatureExtractor", "sampling_rate": 16000,
            "melspec_kwargs": {"sample_rate": 16000, "n_fft": 512, "win_length": 400, "hop_length": 160,
                               "n_mels": 80}, "projector_window_size": 15, "projector_downsample_rate": 5}))


def build_data(path: Path, audio: bool, rows: int = 24) -> None:
    """``rows`` training rows and 2 held-out ones: 10 s synthetic clips (or none), German references."""
    rng = np.random.default_rng(1)
    for split, n in (("train", rows), ("valid", 2)):
        lines = []
        for i in range(n):
            row = {"id": f"{split}{i}", "prompt": "Translate the English speech into German.",
                   "reference": " ".join(rng.choice(WORDS, 10)), "task": "ast", "audio": None}
            if audio:
                write_audio(path / "clips" / f"{split}{i}.wav", (0.1 * rng.standard_normal(160000)).astype(np.float32),
                            16000)
                row["audio"] = f"clips/{split}{i}.wav"
            lines.append(json.dumps(row) + "\n")
        (path / f"{split}.jsonl").write_text("".join(lines))


def peak_bytes() -> int:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # the process's RSS high-water mark


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(TEXT), default="granite-2b")
    parser.add_argument("--steps", type=int, default=3, help="RL steps; the first is a warm-up")
    parser.add_argument("--set", action="append", default=[], help="TrainConfig override, repeatable")
    args = parser.parse_args()
    from leafrl.models import resolve_dtype
    from leafrl.plan import GIB, dimensions, plan
    from leafrl.preflight import longest_prompt

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        build_model(args.size, root / "model")
        build_data(root / "data", audio=args.size != "text-8b")
        built = time.perf_counter() - started
        cfg = apply_overrides(TrainConfig(), [*PAPER, f"model={root / 'model'}", f"data={root / 'data'}",
                                              f"out={root / 'run'}", f"steps={args.steps}", *args.set])
        run = setup(cfg, Console(quiet=True), resume=False)
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        rows = [train_step(run, step) for step in range(args.steps)]
        peak = peak_bytes()
        dtype = resolve_dtype(cfg.model_dtype)
        prompt = longest_prompt(run.train, run.family)
        estimate = plan(dimensions(cfg.model, cfg.lora.rank, cfg.lora.alpha), cfg, dtype.itemsize,
                        prompt)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    n = cfg.rollout.prompts_per_step * cfg.rollout.rollout_budget
    print(f"{args.size} on {device}, {str(dtype).removeprefix('torch.')}, {n} rows x up to "
          f"{cfg.rollout.max_new_tokens} new tokens, prompts of {prompt} tokens (model built in {built:.0f} s)")
    phases = [key for key in rows[0] if key.startswith("time/")]
    header = "".join(f"{p.removeprefix('time/'):>12}" for p in phases)
    print(f"{'step':<6}{header}{'total':>10}{'gen tok/s':>11}")
    for i, row in enumerate(rows):
        tokens = row["response_tokens"] * n
        print(f"{i + 1:<6}" + "".join(f"{row[p]:>12.2f}" for p in phases)
              + f"{sum(row[p] for p in phases):>10.2f}{tokens / row['time/rollout']:>11.0f}"
              + ("  (warm-up)" if i == 0 else ""))
    how = "torch.cuda.max_memory_allocated" if torch.cuda.is_available() else "RSS high-water mark"
    print(f"peak memory {peak / GIB:.2f} GiB ({how})"
          f"; leafrl plan estimates {estimate.peak / GIB:.2f} GiB (weights {estimate.weights / GIB:.2f}, rollout "
          f"{estimate.rollout / GIB:.2f}, update {estimate.update / GIB:.2f})")


if __name__ == "__main__":
    main()
