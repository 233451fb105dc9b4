"""LeafGRPOTrainer on speech models (tiny Qwen2-Audio and Granite Speech, on CPU): the audio goes
into generation and into every forward TRL makes, whose log-probs equal leafrl's own
``completion_logprobs`` of the same rows; at fork_budget 0 it is TRL's GRPO; two processes
train with a group split between them; bad input is one line naming the column, row or model."""

import numpy as np
import pytest
import torch

pytest.importorskip("trl")

from conftest import assert_trls_grpo, noise, save_granite, save_tiny_sallm, torchrun_two  # noqa: E402
from leafrl.audio.io import load_audio  # noqa: E402
from leafrl.errors import UserError  # noqa: E402
from leafrl.integrations.trl import LeafGRPOConfig, LeafGRPOTrainer  # noqa: E402
from leafrl.integrations.trl_inputs import distinct_prompts  # noqa: E402
from leafrl.models import completion_logprobs, load_speech_lm, lora_config, to_model  # noqa: E402

SAVERS = {"qwen2_audio": save_tiny_sallm, "granite_speech": save_granite}
PROMPTS = ["Translate the English speech into German.", "How many cars are there?",
           "What do you hear?", "Repeat what was said."]


@pytest.fixture(scope="module", params=sorted(SAVERS))
def speech_model(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param)
    SAVERS[request.param](path)
    return request.param, str(path)


def speech_rows(groups, k, start=0):
    """``groups`` distinct rows (prompt text, clip length and content differ), each ``k`` times in a
    row as TRL's sampler yields them; the audio as an array with its rate."""
    rows = []
    for i in range(start, start + groups):
        audio = {"array": noise(0.6 + 0.35 * i, seed=i), "sampling_rate": 16000}
        rows += [{"id": f"row{i}", "prompt": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
                  "audio": audio}] * k
    return rows


def length_reward(completions, **kwargs):
    """Longer is better, up to 20 characters (completions of string prompts are strings)."""
    return [min(len(c if isinstance(c, str) else c[0]["content"]), 20) / 20 for c in completions]


def make_speech_trainer(path, out, rows=None, batch=4, per_generation=2, **leaf):
    from datasets import Dataset

    model, family = load_speech_lm(path)
    args = LeafGRPOConfig(output_dir=str(out), use_cpu=True, bf16=False, report_to="none", save_strategy="no",
                          logging_steps=1,
                          disable_tqdm=True, seed=0, max_steps=2, per_device_train_batch_size=batch,
                          steps_per_generation=per_generation, num_generations=4, max_completion_length=8,
                          learning_rate=1e-2, shuffle_dataset=False,
                          **{"beta": 0.02, "temperature": 0.9, "gradient_checkpointing": False, **leaf})
    dataset = Dataset.from_list(rows if rows is not None else speech_rows(4, 1))
    return LeafGRPOTrainer(model=model, family=family, reward_funcs=length_reward, args=args, train_dataset=dataset,
                           peft_config=lora_config(model, rank=4, alpha=8, dropout=0.0))


def leafrls_own(trainer, rows, ids, mask):
    """leafrl's log-probs of the completions ``ids`` of ``rows``, its family encoding the rows at once
    as its own rollouts do and its audio encoder in eval mode: (policy, reference) [N, T] each."""
    family, model = trainer.family, trainer.model.eval()
    prompts = [family.build_prompt(row["prompt"][0]["content"]) for row in rows]
    audios = [load_audio(row["audio"], sampling_rate=family.sampling_rate) for row in rows]
    inputs = to_model(family.encode(prompts, audios, [row["id"] for row in rows]), model)
    with torch.no_grad():
        policy = completion_logprobs(model, inputs, ids, mask, family.keeps_logits, temperature=trainer.temperature)
        with model.disable_adapter():
            reference = completion_logprobs(model, inputs, ids, mask, family.keeps_logits,
                                            temperature=trainer.temperature)
    model.train()
    return policy, reference


def sampled_logprobs(trainer, out):
    """Log-probs [N, T] of the completions in ``out`` under the distribution ``generate`` drew them
    from: the model's logits at the trainer's temperature with the family's suppressed tokens
    (audio placeholders) removed, from one plain forward of prompt and completion (eval mode)."""
    from leafrl.models import generation_positions

    model, ids, mask = trainer.model.eval(), out["completion_ids"], out["completion_mask"]
    audio = {key: out[key] for key in trainer.family.row_keys if key not in ("input_ids", "attention_mask")}
    attention = torch.cat([out["prompt_mask"], mask], 1)
    with torch.no_grad():
        logits = model(input_ids=torch.cat([out["prompt_ids"], ids], 1), attention_mask=attention,
                       position_ids=generation_positions(attention), **audio).logits
    model.train()
    logits = logits[:, -ids.shape[1] - 1:-1].float() / trainer.temperature
    logits[..., trainer.family.suppress_token_ids] = float("-inf")
    return logits.log_softmax(-1).gather(-1, ids[..., None]).squeeze(-1) * mask


def test_log_probs_inside_trl_equal_leafrls_own(speech_model, tmp_path):
    """Old-policy, reference and loss log-probs (the loss's after TRL shuffles the rows and splits
    them into its steps_per_generation batches) equal leafrl's for the same rows and completions,
    to 1e-5; the surprisal kept while sampling is that of the distribution sampled from, which
    shows generation read the audio too. Granite Speech with a logits_scaling TRL's own fused head
    would apply (the model's forward does not) scores the distribution the model samples from."""
    from trl.trainer.utils import shuffle_sequence_dict, split_tensor_dict

    name, path = speech_model
    trainer = make_speech_trainer(path, tmp_path)
    if name == "granite_speech":  # TRL's fused head would divide by it; transformers' forward of this class does not
        trainer.model.config.get_text_config().logits_scaling = 4.0
    with torch.no_grad():  # a trained adapter, so that policy and reference differ
        for name, p in trainer.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    trainer.model.train()  # as in a training step (LoRA dropout 0: forwards are deterministic)
    rows = speech_rows(2, 4)
    out = trainer._generate_and_score_completions(rows)
    ids, mask = out["completion_ids"], out["completion_mask"].bool()
    assert out["input_features"].shape[0] == len(rows)  # the audio inputs travel with the rows
    policy, reference = leafrls_own(trainer, rows, ids, mask)
    assert (policy - reference)[mask].abs().max() > 1e-3  # the comparison has content
    torch.testing.assert_close(out["old_per_token_logps"] * mask, policy, atol=1e-5, rtol=0)
    torch.testing.assert_close(out["ref_per_token_logps"] * mask, reference, atol=1e-5, rtol=0)
    kept = -trainer._sampled_surprisal[:, : ids.shape[1]] * mask
    torch.testing.assert_close(kept, sampled_logprobs(trainer, out), atol=1e-4, rtol=0)

    scored = []
    original = trainer._get_per_token_logps_and_entropies
    trainer._get_per_token_logps_and_entropies = lambda *a, **k: scored.append(original(*a, **k)) or scored[-1]
    out["row"] = torch.arange(len(rows))
    trainer.current_gradient_accumulation_steps = 1  # set by the training loop
    for part in split_tensor_dict(shuffle_sequence_dict(out), 2):
        trainer._compute_loss(trainer.model, part)
        logps, entropies, _ = scored[-1]
        part_mask = part["completion_mask"].bool()
        torch.testing.assert_close(logps * part_mask, policy[part["row"]], atol=1e-5, rtol=0)
        assert entropies.shape == logps.shape and (entropies[part_mask] > 0).all()


def test_trains_a_speech_model_and_fork_budget_0_is_trls_grpo(speech_model, tmp_path, trls_advantages):
    """A speech model trains through TRL (its LoRA moves, LEAF's statistics are logged); at
    fork_budget 0 every token's advantage is TRL's GRPO advantage of its response."""
    _, path = speech_model
    trainer = make_speech_trainer(path, tmp_path / "leaf", rows=speech_rows(4, 1), fork_budget=2)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.train()
    assert "leaf/fork_fire_rate" in trainer.state.log_history[0]
    assert any(not torch.equal(p, before[n]) for n, p in trainer.model.named_parameters() if p.requires_grad)

    trainer = make_speech_trainer(path, tmp_path / "grpo", fork_budget=0, temperature=1.5)
    trainer.model.train()
    assert_trls_grpo(trainer._generate_and_score_completions(speech_rows(2, 4)), trls_advantages)


def test_gradient_checkpointing_checkpoints_the_language_models_layers(speech_model, tmp_path):
    """TRL's gradient_checkpointing (its default) on a speech model: transformers refuses it for
    some multimodal classes, so the language model's layers are checkpointed instead, and it trains."""
    from leafrl.models.logprobs import checkpointed

    _, path = speech_model
    trainer = make_speech_trainer(path, tmp_path, rows=speech_rows(4, 1), gradient_checkpointing=True)
    trainer.model.train()
    assert checkpointed(trainer.model)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.train()
    assert any(not torch.equal(p, before[n]) for n, p in trainer.model.named_parameters() if p.requires_grad)


def test_each_run_of_repeated_prompts_is_read_once():
    """Consecutive rows equal in every input are one prompt; equal rows apart, and rows that differ
    in their audio only, are not."""
    ids = torch.tensor([[1, 2], [1, 2], [1, 2], [3, 4], [1, 2], [1, 2]])
    audio = torch.zeros(6, 3, 2)
    audio[2] = 1.0  # row 2: the same text, another clip
    prompts, of_row = distinct_prompts({"input_ids": ids, "attention_mask": torch.ones(6, 2), "features": audio})
    assert of_row.tolist() == [0, 0, 1, 2, 3, 3]
    assert prompts["input_ids"].tolist() == [[1, 2], [1, 2], [3, 4], [1, 2]]
    assert torch.equal(prompts["features"][1], audio[2])
    one, of_one = distinct_prompts({"input_ids": ids[:1], "attention_mask": torch.ones(1, 2)})
    assert of_one.tolist() == [0] and len(one["input_ids"]) == 1


def test_bad_input_is_one_line_naming_the_column_row_or_model(tmp_path):
    from datasets import Dataset
    from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

    path = str(save_tiny_sallm(tmp_path / "model"))
    no_column = [{"id": "a", "prompt": PROMPTS[0]}]
    with pytest.raises(UserError, match="train_dataset: no 'audio' column.*qwen2_audio needs a clip"):
        make_speech_trainer(path, tmp_path, rows=no_column)
    trainer = make_speech_trainer(path, tmp_path)
    trainer.model.train()
    missing = [{"id": "r7", "prompt": PROMPTS[0], "audio": None}] * 4
    with pytest.raises(UserError, match="row 'r7': no audio in column 'audio'"):
        trainer._generate_and_score_completions(missing)
    bad_rate = [{"id": "r8", "prompt": PROMPTS[0], "audio": {"array": noise(1.0), "sampling_rate": 0}}] * 4
    with pytest.raises(UserError, match="r8.*sampling_rate"):
        trainer._generate_and_score_completions(bad_rate)
    too_long = [{"id": "r9", "prompt": PROMPTS[0], "audio": {"array": noise(9.0), "sampling_rate": 16000}}] * 4
    with pytest.raises(UserError, match="r9.*feature window"):
        trainer._generate_and_score_completions(too_long)
    two_turns = [{"id": "r10", "prompt": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
                  "audio": {"array": noise(1.0), "sampling_rate": 16000}}] * 4
    with pytest.raises(UserError, match="r10.*one user message"):
        trainer._generate_and_score_completions(two_turns)

    unknown = Wav2Vec2ForCTC(Wav2Vec2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                            intermediate_size=32, vocab_size=12))
    unknown.config.name_or_path = "tiny-wav2vec2"
    args = LeafGRPOConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    with pytest.raises(UserError, match="model tiny-wav2vec2: model_type 'wav2vec2' is not supported"):
        LeafGRPOTrainer(model=unknown, reward_funcs=length_reward, args=args,
                        train_dataset=Dataset.from_list(no_column))
    model, _ = load_speech_lm(path)
    with pytest.raises(UserError, match="qwen2_audio model needs its family"):
        LeafGRPOTrainer(model=model, reward_funcs=length_reward, args=args, train_dataset=Dataset.from_list(no_column))


def test_a_rows_audio_may_be_a_file_path_resampled_to_the_familys_rate(tmp_path):
    from leafrl.audio.io import write_audio

    path = str(save_tiny_sallm(tmp_path / "model"))
    clip = noise(1.0, rate=8000)
    write_audio(tmp_path / "a.wav", clip, 8000)
    trainer = make_speech_trainer(path, tmp_path)
    trainer.model.train()
    from_file = trainer._generate_and_score_completions(
        [{"id": "f", "prompt": PROMPTS[0], "audio": str(tmp_path / "a.wav")}] * 4)
    from_array = trainer._generate_and_score_completions(
        [{"id": "f", "prompt": PROMPTS[0], "audio": {"array": clip, "sampling_rate": 8000}}] * 4)
    features = from_file["input_features"].numpy(), from_array["input_features"].numpy()
    np.testing.assert_allclose(*features, atol=2e-3)  # the file holds 16-bit samples


SCRIPT = """
import sys, json, torch
sys.path.insert(0, {tests!r})
from test_trl_speech import make_speech_trainer, speech_rows
trainer = make_speech_trainer({model!r}, {out!r}, rows=speech_rows(6, 1), batch=6, per_generation=1)
seen = []
original = type(trainer)._generate_and_score_completions
def recording(self, inputs):
    out = original(self, inputs)
    seen.append([out["advantages"].shape[0], out["input_features"].shape[0], sorted({{r["id"] for r in inputs}})])
    return out
type(trainer)._generate_and_score_completions = recording
trainer.train()
rows = trainer.accelerator.gather_for_metrics([seen], use_gather_object=True)
if trainer.accelerator.is_main_process:
    json.dump({{"processes": trainer.accelerator.num_processes, "seen": rows,
               "log": trainer.state.log_history[0]}}, open({result!r}, "w"))
"""


@pytest.mark.slow
def test_two_processes_train_a_speech_model_with_groups_split_between_them(tmp_path):
    """torchrun, 2 CPU processes (gloo): 3 groups of 4 audio rows over 2 x 6 rows, so one group has
    rows on both; each process carries the audio of its own 6 rows and the run logs LEAF's statistics."""
    from pathlib import Path

    model = save_tiny_sallm(tmp_path / "model")
    summary = torchrun_two(SCRIPT.format(tests=str(Path(__file__).parent), model=str(model),
                                         out=str(tmp_path / "out"), result=str(tmp_path / "result.json")),
                           tmp_path)
    assert summary["processes"] == 2 and "leaf/fork_fire_rate" in summary["log"]
    first = [process[0] for process in summary["seen"]]  # each process's first generation
    assert [[rows, features] for rows, features, _ in first] == [[6, 6], [6, 6]]
    assert set(first[0][2]) & set(first[1][2])  # a prompt's group on both processes


def test_the_example_trains_the_builtin_model_through_trl_and_leafrl_eval_takes_its_adapter(tmp_path):
    """examples/trl/train_builtin.py, one step on a small synthesized task: it writes its BLEU
    before and after and an adapter that ``leafrl eval`` accepts as trained on the built-in model."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from rich.console import Console

    from leafrl import builtin

    task = builtin.prepare_task(Console(quiet=True), tmp_path / "task", seed=3, n_train=12, n_valid=4, n_test=0)
    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "trl"
    subprocess.run([sys.executable, str(root / "examples" / "trl" / "train_builtin.py"), "--steps", "1",
                    "--data", str(task), "--examples", "4", "--out", str(out)], check=True, capture_output=True)
    result = json.loads((out / "result.json").read_text())
    assert result["steps"] == 1 and result["valid_examples"] == 4 and result["seconds_per_step"] > 0
    assert {"before_bleu", "after_bleu", "before_bleu_sampled", "after_bleu_sampled"} <= set(result)
    assert (out / "adapter" / "leafrl_base.json").is_file()
    scored = subprocess.run([sys.executable, "-m", "leafrl.cli", "eval", "--adapter", str(out / "adapter"),
                             "--data", str(task), "--limit", "4", "--passes", "1", "--quiet",
                             "--out", str(tmp_path / "eval")], capture_output=True, text=True)
    assert scored.returncode == 0, scored.stderr[-2000:]
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["rows"] == 4
