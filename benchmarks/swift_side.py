"""ms-swift's side of ``bench_swift.py``: run inside the ms-swift venv (no leafrl there).

    python benchmarks/swift_side.py SETTINGS.json RESULT.json

Trains with ms-swift's GRPO (``swift.rlhf_main``, its own trainer, template and reward plugin
mechanism) at the settings ``bench_swift.py`` wrote, and writes to RESULT.json the wall seconds
of each RL step (one generation and its optimizer steps), the mean completion length of each,
the first prompt's token ids (checked against leafrl's) and the changes made to ms-swift.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

CHANGES = [
    "LoRA targets given as target_regex: ms-swift's module path for Qwen2-Audio (model_arch qwen2_audio: "
    "language_model='language_model') is out of date under transformers 5 (model.language_model), so its "
    "default 'all-linear' finds no module ('Target modules ... not found in the base model')",
    "Qwen2AudioTemplate._encode patched to expand its single <|AUDIO|> token to one per audio frame, as "
    "Qwen2AudioProcessor (and so leafrl) does. Unpatched, transformers 5.19 falls back to its deprecated in-model "
    "merge ('Expanding inputs for audio tokens in Qwen2Audio should be done in processing'); ms-swift's own "
    "generate got through it here, but model.generate on such inputs fails in attention_mask[:, 0]",
    "Qwen2AudioTemplate.replace_tag patched to the model's own chat template ('<|audio_bos|><|AUDIO|>"
    "<|audio_eos|>\\n', not 'Audio 1: ...') and system='' (no default 'You are a helpful assistant.'), so "
    "both sides feed the model the same prompt tokens",
    "check_model=False: ms-swift otherwise asks the ModelScope hub whether a local model is the latest "
    "(retries against an unreachable network)",
    "the BLEU reward registered in swift.rewards.orms (its reward-plugin registry) from this script",
]
FIRST: dict[str, list] = {}


def patch_template() -> None:
    """The Qwen2-Audio template: the model's own audio tag, and ``<|AUDIO|>`` expanded per frame."""
    from swift.template.templates.qwen import Qwen2AudioTemplate
    from swift.template.utils import findall

    encode = Qwen2AudioTemplate._encode

    def replace_tag(self: Any, media_type: str, index: int, inputs: Any) -> list[str]:
        return ["<|audio_bos|><|AUDIO|><|audio_eos|>\n"]

    def expanded(self: Any, inputs: Any) -> dict:
        encoded = encode(self, inputs)
        if inputs.audios:
            token = self.processor.tokenizer.convert_tokens_to_ids(self.processor.audio_token)
            frames = encoded["feature_attention_mask"].sum(-1)
            counts = ((((frames - 1) // 2 + 1) - 2) // 2 + 1).tolist()  # the processor's count
            encoded["input_ids"], encoded["labels"], encoded["loss_scale"] = self._extend_tokens(
                encoded["input_ids"], encoded["labels"], encoded.get("loss_scale"),
                findall(encoded["input_ids"], token), lambda i: [token] * counts[i])
            if not FIRST:  # the first row's, for bench_swift.py's check against leafrl's
                FIRST.update(prompt_ids=list(encoded["input_ids"]),
                             features=encoded["input_features"][0].flatten().tolist())
        return encoded

    Qwen2AudioTemplate.replace_tag, Qwen2AudioTemplate._encode = replace_tag, expanded


def main() -> None:
    s = json.loads(Path(sys.argv[1]).read_text())
    if s["threads"]:
        torch.set_num_threads(s["threads"])
    from swift import RLHFArguments, rlhf_main
    from swift.callbacks import TrainerCallback, callbacks_map
    from swift.rewards import orms
    from swift.rewards.orm import ORM

    patch_template()
    result: dict[str, Any] = {"seconds": [], "tokens": [], "changes": CHANGES}
    per_generation = s["prompts"] * s["k"] // s["minibatch"]

    class Bleu(ORM):
        """Sentence BLEU / 100 against the row's reference, whitespace normalized (as leafrl's bleu)."""

        def __call__(self, completions: list[str], reference: list[str], **kwargs: Any) -> list[float]:
            import sacrebleu

            return [sacrebleu.sentence_bleu(" ".join(c.split()), [r]).score / 100
                    for c, r in zip(completions, reference, strict=True)]

    class Timer(TrainerCallback):
        """Wall seconds per generation: from the end of one generation's last optimizer step to
        the end of the next one's (the first from the start of training: the warm-up)."""

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.last = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step % per_generation == 0:
                now = time.perf_counter()
                result["seconds"].append(now - self.last)
                lengths = torch.cat([b["grpo_batch"].completion_mask.sum(1) for b in self.trainer._buffered_inputs])
                result["tokens"].append(lengths.float().mean().item())
                self.last = now

    orms["leafrl_bleu"], callbacks_map["bench_timer"] = Bleu, Timer
    lm = r"^model\.language_model\..*\.(" + "|".join(s["lora_targets"]) + r")$"
    rlhf_main(RLHFArguments(
        rlhf_type="grpo", model=s["model"], model_type="qwen2_audio", torch_dtype="float32", check_model=False,
        dataset=[s["dataset"]], dataset_shuffle=False, train_dataloader_shuffle=False, split_dataset_ratio=0.0,
        system="", tuner_type="lora", target_regex=lm, lora_rank=s["lora_rank"], lora_alpha=s["lora_alpha"],
        lora_dropout=s["lora_dropout"], reward_funcs=["leafrl_bleu"], callbacks=["bench_timer"],
        num_generations=s["k"], per_device_train_batch_size=s["minibatch"], steps_per_generation=per_generation,
        gradient_accumulation_steps=1, num_iterations=1, max_steps=s["steps"] * per_generation,
        max_completion_length=s["max_new_tokens"], temperature=s["temperature"], top_p=s["top_p"], top_k=-1,
        learning_rate=s["lr"], adam_beta1=s["beta1"], adam_beta2=s["beta2"], weight_decay=s["weight_decay"],
        max_grad_norm=s["grad_clip"], lr_scheduler_type="cosine_with_min_lr", warmup_steps=s["warmup_frac"],
        lr_scheduler_kwargs={"min_lr_rate": s["min_lr_ratio"]}, beta=s["kl_beta"], epsilon=s["clip_low"],
        epsilon_high=s["clip_high"], loss_type="grpo", gradient_checkpointing=False, seed=s["seed"],
        output_dir=s["out"], save_strategy="no", report_to=["none"], logging_steps=10**6, disable_tqdm=True,
        dataloader_num_workers=0,
    ))
    Path(sys.argv[2]).write_text(json.dumps({**result, **FIRST}))


if __name__ == "__main__":
    main()
