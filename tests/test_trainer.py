"""leafrl train end to end on a tiny SALLM: paper defaults, both algorithms train and log,
micro-batching changes nothing, and a run killed with SIGKILL resumes exactly."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from conftest import TEXTS, save_tiny_sallm, tone_dataset
from leafrl.checkpoint import latest_checkpoint
from leafrl.config import TrainConfig, apply_overrides, save_config
from leafrl.errors import UserError
from leafrl.rollout.record import load_rollouts
from leafrl.trainer import train

REQUIRED = {"reward_mean", "reward_std", "kl", "loss", "clip_frac", "time/rollout", "time/reward",
            "time/advantages", "time/reference", "time/update"}


def test_defaults_are_the_papers():
    c = TrainConfig()
    assert (c.rollout.rollout_budget, c.leaf.fork_budget, c.optim.lr, c.loss.beta) == (8, 2, 5e-6, 0.02)
    assert (c.loss.clip_low, c.loss.clip_high) == (0.2, 0.2)
    assert (c.lora.rank, c.lora.alpha, c.lora.dropout) == (64, 128, 0.05)
    assert (c.rollout.temperature, c.rollout.top_p, c.rollout.max_new_tokens) == (1.0, 0.9, 200)
    assert (c.reward, c.rollout.prompts_per_step, c.rollout.surprisal) == ("bleu", 6, "processed")
    assert (c.optim.beta1, c.optim.beta2, c.optim.grad_clip, c.optim.weight_decay) == (0.9, 0.95, 1.0, 0.0)
    assert (c.optim.warmup_frac, c.optim.min_lr_ratio, c.loss.agg) == (0.05, 0.1, "seq_mean_token_mean")
    assert (c.optim.minibatch, c.optim.epochs) == (6, 1)  # 48 rows: 8 optimizer steps per rollout step
    assert (c.eval.sampled_passes, c.eval.temperature, c.eval.top_p, c.eval.seed) == (5, 0.9, 0.9, 42)
    assert (c.leaf.min_prefix_tokens, c.leaf.terms, c.leaf.normalize) == (1, "both", "span_zscore")


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    root = tmp_path_factory.mktemp("rl")
    data = tone_dataset(root / "data", n_train=12, n_valid=4)
    save_tiny_sallm(root / "model")
    return data, root / "model"


def tiny_config(setting, out, **over):
    data, model = setting
    cfg = apply_overrides(TrainConfig(), [
        f"data={data}", f"model={model}", f"out={out}", "steps=2", "eval.every=100", "eval.examples=2",
        "save_every=1", "rollout.rollout_budget=3", "rollout.prompts_per_step=2", "rollout.max_new_tokens=6",
        "optim.micro_batch=4", "optim.minibatch=3", "optim.lr=1e-3", "lora.rank=4", "lora.alpha=8",
        "reward=chrf",  # graded from the first random response, unlike BLEU
    ] + [f"{k}={v}" for k, v in over.items()])
    return cfg


@pytest.mark.parametrize("algo", ["leaf", "grpo", "leafrl"])
def test_training_steps_log_and_move_the_adapter(setting, tmp_path, algo):
    from leafrl.summary import RunSummary

    summary = train(tiny_config(setting, tmp_path / algo, algo=algo), quiet=True)
    assert summary.steps == 2 and summary.algo == algo and summary.wall_seconds > 0
    assert RunSummary.load(tmp_path / algo / "summary.json") == summary  # the record, written and read back
    # the paper's protocol: the mean of 5 sampled passes beside the greedy pass
    assert None not in (summary.valid_bleu_sampled_before, summary.valid_bleu_sampled_after,
                        summary.valid_bleu_sampled_std_after, summary.valid_bleu_sampled_p_value)
    rows = [json.loads(line) for line in (tmp_path / algo / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2] and all(REQUIRED <= set(r) for r in steps)
    if algo == "leaf":
        assert {"fork_fire_rate", "usable_fork_fire_rate", "nodes_per_group"} <= set(steps[0])
    from safetensors.torch import load_file

    ckpt = latest_checkpoint(tmp_path / algo)
    weights = load_file(str(ckpt / "adapter" / "adapter_model.safetensors"))
    lora_b = [v for k, v in weights.items() if "lora_B" in k]
    assert lora_b and any(v.abs().sum() > 0 for v in lora_b)  # B starts at zero: the update moved it
    assert (tmp_path / algo / "config.yaml").is_file() and (tmp_path / algo / "tensorboard").is_dir()
    # the last step's rollout groups are saved for `leafrl inspect`: K responses of each prompt
    saved = load_rollouts(tmp_path / algo)
    assert saved.step == 2 and saved.algo == algo and len(saved.groups) == 2
    r = saved.rollout
    assert r.group_ids.tolist() == [0, 0, 0, 1, 1, 1] and r.mask.any(1).all() and (r.surprisal[r.mask] > 0).any()
    assert (r.surprisal[~r.mask] == 0).all() and all(0 <= float(x) <= 1 for x in r.rewards)
    assert [len(p) for p in saved.groups[0].pieces] == r.mask[:3].sum(1).tolist()


def test_micro_batches_do_not_change_the_update(setting, tmp_path):
    """(d) accumulation over micro-batches of 2 equals one batch of all 6 rows (dropout off)."""
    from safetensors.torch import load_file

    weights = []
    for micro in (2, 6):
        out = tmp_path / f"m{micro}"
        train(tiny_config(setting, out, steps=1, **{"optim.micro_batch": micro, "lora.dropout": 0.0}),
              quiet=True)
        weights.append(load_file(str(latest_checkpoint(out) / "adapter" / "adapter_model.safetensors")))
    for key in weights[0]:
        torch.testing.assert_close(weights[0][key], weights[1][key], atol=1e-6, rtol=1e-4)


def test_activation_checkpointing_does_not_change_the_update(setting, tmp_path):
    """gradient_checkpointing=true recomputes the decoder's activations and reads rows whole: the
    adapter after a step is the one without it (dropout off)."""
    from safetensors.torch import load_file

    weights = []
    for on in (False, True):
        out = tmp_path / f"gc-{on}"
        train(tiny_config(setting, out, steps=1, gradient_checkpointing=on, **{"lora.dropout": 0.0}),
              quiet=True)
        weights.append(load_file(str(latest_checkpoint(out) / "adapter" / "adapter_model.safetensors")))
    for key in weights[0]:
        torch.testing.assert_close(weights[1][key], weights[0][key], atol=1e-6, rtol=1e-4)


def test_bfloat16_model_trains_with_float32_lora(setting, tmp_path):
    """model_dtype=bfloat16 on CPU: the base weights load in bfloat16, the LoRA and its optimizer
    stay float32, and a step gives finite metrics."""
    out = tmp_path / "bf16"
    summary = train(tiny_config(setting, out, steps=1, model_dtype="bfloat16"), quiet=True)
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert all(torch.isfinite(torch.tensor(row[k])) for k in ("loss", "kl", "grad_norm", "reward_mean"))
    from safetensors.torch import load_file

    lora = load_file(str(latest_checkpoint(out) / "adapter" / "adapter_model.safetensors"))
    assert {t.dtype for t in lora.values()} == {torch.float32} and summary.steps == 1


def _comparable(rows):
    return [{k: v for k, v in r.items() if not k.startswith("time/") and k != "seconds"} for r in rows if "loss" in r]


@pytest.mark.slow
def test_sigkill_then_resume_repeats_the_uninterrupted_run(setting, tmp_path):
    full = tiny_config(setting, tmp_path / "full", steps=5)
    train(full, quiet=True)
    killed = tiny_config(setting, tmp_path / "killed", steps=5)
    save_config(killed, tmp_path / "killed.yaml")
    cmd = [sys.executable, "-m", "leafrl.cli", "train", "--config", str(tmp_path / "killed.yaml"), "--quiet"]
    proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.time() + 300
    while time.time() < deadline:  # kill as soon as the step-2 checkpoint is complete
        ckpt = latest_checkpoint(tmp_path / "killed")  # the newest one whose manifest verifies
        if ckpt is not None and json.loads((ckpt / "state.json").read_text())["step"] >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    result = subprocess.run([sys.executable, "-m", "leafrl.cli", "train", "--resume", str(tmp_path / "killed"),
                             "--quiet"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    full_rows = _comparable(json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines())
    resumed = {r["step"]: r for r in _comparable(
        json.loads(x) for x in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines())}
    for row in full_rows:
        if row["step"] > 2:
            assert resumed[row["step"]] == pytest.approx(row, rel=1e-5, abs=1e-7)
    saved = yaml.safe_load((tmp_path / "killed" / "config.yaml").read_text())
    assert saved["steps"] == 5


@pytest.mark.slow
def test_two_processes_data_parallel(setting, tmp_path):
    """Data-parallel on CPU (torchrun, gloo): each process samples its own prompts, gradients are
    synced by accelerate's DDP wrapper, and each process decodes half of the held-out rows. On GPUs
    the same run is `accelerate launch -m leafrl.cli train`."""
    import shutil

    data = tmp_path / "data"  # held-out rows with prompts of their own, so their predictions differ
    shutil.copytree(setting[0], data)
    valid = [json.loads(x) for x in (data / "valid.jsonl").read_text().splitlines()]
    for row, prompt in zip(valid, [TEXTS[2], TEXTS[3], TEXTS[0]]):
        row["prompt"] = prompt
    (data / "valid.jsonl").write_text("".join(json.dumps(r) + "\n" for r in valid))
    cfg = tiny_config((data, setting[1]), tmp_path / "ddp", steps=2, **{"eval.examples": 3,
                                                                         "rollout.prompts_per_step": 1})
    save_config(cfg, tmp_path / "ddp.yaml")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "leafrl.cli", "train",
           "--config", str(tmp_path / "ddp.yaml"), "--quiet"]
    # on CPU even where there is a GPU: two processes cannot share one device under NCCL
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["steps"] == 2
    rows = [json.loads(x) for x in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2]  # one log per step, from the main process
    assert latest_checkpoint(tmp_path / "ddp").name == "step-000002"
    # the held-out rows, decoded in two shares, come back whole and in row order: as one process
    # decodes them (the LoRA starts as the identity, so before training the policy is the model)
    from leafrl.data import load_split
    from leafrl.eval.evaluate import evaluate
    from leafrl.models import load_speech_lm

    model, family = load_speech_lm(str(setting[1]))
    e = cfg.eval
    alone = evaluate(model, family, list(load_split(data, "valid"))[:3], max_new_tokens=6,
                     sampled_passes=e.sampled_passes, temperature=e.temperature, top_p=e.top_p, seed=e.seed,
                     batch_size=e.batch_size)
    before = json.loads((tmp_path / "ddp" / "before.json").read_text())
    assert before["predictions"]["greedy"] == alone.greedy.predictions
    assert before["predictions"]["greedy"][1] != before["predictions"]["greedy"][2]  # rows out of order would show
    assert summary["valid_bleu_before"] == pytest.approx(alone.greedy.bleu)


def text_dataset(root):
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 8), ("valid", 2)):
        rows = [{"id": f"{split}{i}", "audio": None, "prompt": f"Count to {i % 3 + 2}.",
                 "reference": " ".join(str(j) for j in range(1, i % 3 + 3)), "task": "count"} for i in range(n)]
        (root / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


@pytest.mark.parametrize("family", ["granite_speech", "text"])
def test_other_families_train_through_the_same_loop(setting, tmp_path, family):
    from conftest import save_granite
    from test_models import save_text

    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (save_granite if family == "granite_speech" else save_text)(model_dir)
    data = setting[0] if family == "granite_speech" else text_dataset(tmp_path / "text")
    cfg = tiny_config((data, model_dir), tmp_path / "run", steps=1)
    summary = train(cfg, quiet=True)
    assert summary.steps == 1
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert REQUIRED <= set(next(r for r in rows if "loss" in r))


def test_out_of_memory_says_what_to_lower(setting, tmp_path, monkeypatch):
    import leafrl.trainer

    def exhausted(run, step, record=None):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(leafrl.trainer, "train_step", exhausted)
    with pytest.raises(UserError, match=r"step 0 .*optim\.micro_batch.*--resume"):
        train(tiny_config(setting, tmp_path / "oom", **{"eval.sampled_passes": 0}), quiet=True)


@pytest.mark.parametrize("kind", ["FSDP", "DEEPSPEED"])
def test_sharded_distribution_is_refused_clearly(setting, tmp_path, monkeypatch, kind):
    """Checkpoints are written by the main process alone: with sharded parameters or optimizer
    states that would hang, so FSDP and DeepSpeed are refused up front, by name."""
    import accelerate
    from accelerate.utils import DistributedType

    class Sharded:
        distributed_type = DistributedType[kind]

        def __init__(self, **kwargs):
            pass

    monkeypatch.setattr(accelerate, "Accelerator", Sharded)
    with pytest.raises(UserError, match=f"distributed_type {kind} is refused.*no sharded run has been tested"):
        train(tiny_config(setting, tmp_path / "sharded"), quiet=True)


# ------------------------------------------------------------------ the authors' update schedule


def _rolled_out(setting, tmp_path, **over):
    """A Run and one rollout step of it: (run, inputs, rollout, adv, ref)."""
    from rich.console import Console

    from leafrl.trainer import advantages, prompts_for, reference_logprobs, rollout_of, score, setup

    cfg = tiny_config(setting, tmp_path, **{"lora.dropout": 0.0, **over})
    run = setup(cfg, Console(quiet=True), resume=False)
    torch.manual_seed(0)
    prompts = prompts_for(0, run.train, cfg.rollout.prompts_per_step, cfg.seed)
    inputs, rollout = rollout_of(run, prompts)
    rollout = score(run, prompts, rollout)
    adv, _ = advantages(cfg, rollout)
    return run, inputs, rollout, adv, reference_logprobs(run, inputs, rollout)


def _plain_objective(run, inputs, rollout, adv, ref, rows, old=None):
    """The spec's objective over ``rows``, written plainly: each row's whole sequence (its
    prompt's real positions, then its completion) in one forward without cache or padding,
    log-probs at the sampling temperature, the clipped surrogate and k3 KL per token, mean over
    the row's tokens, then over rows. ``old``: the old log-probs (None: on-policy)."""
    cfg, k = run.cfg, run.cfg.rollout.rollout_budget
    model = run.policy
    total = 0.0
    for i in rows.tolist():
        n_tok = int(rollout.mask[i].sum())
        ids = rollout.ids[i, :n_tok]
        g = i // k
        prompt = inputs["inputs_embeds"][g][inputs["attention_mask"][g].bool()]
        x = torch.cat([prompt, model.get_input_embeddings()(ids)])[None]
        logits = model(inputs_embeds=x).logits[0, len(prompt) - 1: len(prompt) - 1 + n_tok].float()
        logp = (logits / cfg.rollout.temperature).log_softmax(-1).gather(1, ids[:, None]).squeeze(1)
        before = logp.detach() if old is None else old[i, :n_tok]
        a = adv[i] if adv.dim() == 1 else adv[i, :n_tok]
        ratio = torch.exp(logp - before)
        surrogate = -torch.minimum(ratio * a, ratio.clamp(1 - cfg.loss.clip_low, 1 + cfg.loss.clip_high) * a)
        d = ref[i, :n_tok] - logp
        total = total + (surrogate + cfg.loss.beta * (torch.exp(d) - d - 1)).mean()
    return total / len(rows)


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}


def test_each_minibatch_gradient_is_the_spec_objective(setting, tmp_path):
    """(b) off-policy too: with old log-probs away from the policy's (some ratios clipped), the
    gradient one minibatch accumulates over micro-batches equals the plain objective's."""
    from leafrl.trainer import minibatch_step

    run, inputs, rollout, adv, ref = _rolled_out(setting, tmp_path, **{"rollout.temperature": 0.7,
                                                                            "optim.micro_batch": 2})
    noise = 0.4 * torch.randn(rollout.ids.shape, generator=torch.Generator().manual_seed(1))
    old = (ref + noise).masked_fill(~rollout.mask, 0.0)  # a policy away from this one
    rows = torch.tensor([5, 0, 3])
    run.model.train()
    metrics = minibatch_step(run, inputs, rollout, adv, ref, old, rows)
    ours = _grads(run.model)
    run.optimizer.zero_grad(set_to_none=True)
    _plain_objective(run, inputs, rollout, adv, ref, rows, old).backward()
    plain = _grads(run.model)
    assert ours.keys() == plain.keys() and ours
    for name in ours:
        torch.testing.assert_close(ours[name], plain[name], atol=1e-6, rtol=1e-4)
    assert metrics["clip_frac"] > 0 and metrics["ratio_min"] < metrics["ratio_max"]


def test_one_minibatch_of_all_rows_is_one_plain_full_batch_step(setting, tmp_path):
    """(b) minibatch >= N and one epoch: one optimizer step on the on-policy objective of all
    rows, exactly the update before minibatches existed (no extra log-prob pass)."""
    import leafrl.trainer
    from leafrl.schedule import warmup_cosine
    from leafrl.trainer import update

    run, inputs, rollout, adv, ref = _rolled_out(setting, tmp_path / "a", **{"optim.minibatch": 1000})
    calls = []
    original = leafrl.trainer.logprobs_of
    leafrl.trainer.logprobs_of = lambda *a: calls.append(1) or original(*a)
    try:
        metrics = update(run, inputs, rollout, adv, ref, step=0)
    finally:
        leafrl.trainer.logprobs_of = original
    assert calls == [] and metrics["optimizer_steps"] == 1 and metrics["clip_frac"] == 0
    ours = {n: p.detach().clone() for n, p in run.policy.named_parameters() if p.requires_grad}

    plain, *_ = _rolled_out(setting, tmp_path / "b", **{"optim.minibatch": 1000})  # the same LoRA init
    cfg = plain.cfg
    _plain_objective(plain, inputs, rollout, adv, ref, torch.arange(len(rollout.ids))).backward()
    torch.nn.utils.clip_grad_norm_([p for p in plain.policy.parameters() if p.requires_grad], cfg.optim.grad_clip)
    for group in plain.optimizer.param_groups:
        group["lr"] = warmup_cosine(0, cfg.steps, cfg.optim.lr, cfg.optim.warmup_frac, cfg.optim.min_lr_ratio)
    plain.optimizer.step()
    for name, p in plain.policy.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(ours[name], p.detach(), atol=1e-6, rtol=1e-4)


def test_minibatches_make_optimizer_steps_and_clip_on_a_large_step(setting, tmp_path, monkeypatch):
    """8 rows in minibatches of 1: 8 optimizer steps, the schedule counting them; at a large lr the
    later minibatches are off-policy enough for the clip to bind. One minibatch never clips. The
    logged ratio_min / ratio_max are the extremes over all minibatches, not means of theirs."""
    import leafrl.trainer
    from leafrl.trainer import minibatch_order, update

    over = {"rollout.rollout_budget": 4, "optim.lr": 0.05, "optim.warmup_frac": 0.0, "loss.beta": 0.0}
    run, inputs, rollout, adv, ref = _rolled_out(setting, tmp_path, **over, **{"optim.minibatch": 1})
    assert adv.abs().sum() > 0
    seen, original = [], leafrl.trainer.minibatch_step
    monkeypatch.setattr(leafrl.trainer, "minibatch_step", lambda *a: seen.append(original(*a)) or seen[-1])
    metrics = update(run, inputs, rollout, adv, ref, step=0)
    assert metrics["optimizer_steps"] == 8 and metrics["clip_frac"] > 0 and metrics["approx_kl"] > 0
    assert metrics["ratio_min"] == min(m["ratio_min"] for m in seen) < 1 < max(m["ratio_max"] for m in seen)
    assert metrics["ratio_max"] == max(m["ratio_max"] for m in seen)
    assert metrics["clip_frac"] == pytest.approx(sum(m["clip_frac"] for m in seen) / 8)
    assert run.optimizer.state[next(p for p in run.policy.parameters() if p.requires_grad)]["step"] == 8
    # a seeded permutation per epoch: every row once per epoch, the same order for the same seed
    order = minibatch_order(8, 3, 2, seed=7)
    assert [len(o) for o in order] == [3, 3, 2, 3, 3, 2]
    assert sorted(torch.cat(order[:3]).tolist()) == list(range(8)) == sorted(torch.cat(order[3:]).tolist())
    assert all(torch.equal(a, b) for a, b in zip(order, minibatch_order(8, 3, 2, seed=7)))
    assert torch.equal(minibatch_order(8, 8, 1, seed=7)[0], torch.arange(8))  # one minibatch keeps row order


def test_prompts_for_shards_disjoint_and_covers_each_row_once_per_epoch():
    """Each process gets its own prompts (disjoint shards), and over one epoch every training
    row comes exactly once across the processes; the next epoch is a new permutation."""
    from leafrl.trainer import prompts_for

    train = list(range(24))
    per_step, world = 2, 3  # 6 prompts a step, 4 steps an epoch
    for epoch in (0, 1):
        seen = []
        for step in range(epoch * 4, epoch * 4 + 4):
            shards = [prompts_for(step, train, per_step, seed=5, rank=r, world=world) for r in range(world)]
            assert all(len(s) == per_step for s in shards)
            assert not set(shards[0]) & set(shards[1]) and not set(shards[1]) & set(shards[2])
            seen += [x for s in shards for x in s]
        assert sorted(seen) == train
    first = [prompts_for(s, train, per_step, 5, 0, world) for s in range(4)]
    assert first != [prompts_for(s, train, per_step, 5, 0, world) for s in range(4, 8)]
    assert prompts_for(0, train, per_step, 5, 0, 1) == prompts_for(0, train, per_step, 5, 0, 1)


def test_the_start_evaluated_once_is_what_a_run_evaluates_itself(setting, tmp_path):
    """leafrl compare evaluates its runs' shared start once (start_evaluation) and hands it to each
    run: it must be exactly what a run records when it evaluates its start itself."""
    from leafrl.summary import HeldOut
    from leafrl.trainer import start_evaluation

    cfg = tiny_config(setting, tmp_path / "own", **{"eval.sampled_passes": 2, "eval.examples": 4, "steps": 1})
    train(cfg, quiet=True)
    own = HeldOut.load(tmp_path / "own" / "before.json")
    start = start_evaluation(cfg)
    assert (start.greedy, start.sampled, start.bleu) == (own.greedy, own.sampled, own.bleu)
    given = tiny_config(setting, tmp_path / "given", **{"eval.sampled_passes": 2, "eval.examples": 4, "steps": 1})
    marked = HeldOut(12.5, 10.0, 1.0, ["x"] * 4, [["y"] * 4] * 2)  # recorded as given, not evaluated again
    train(given, quiet=True, start=marked)
    assert HeldOut.load(tmp_path / "given" / "before.json") == marked
    rows = [json.loads(line) for line in (tmp_path / "own" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["eval_seconds"] > 0  # the final evaluation's time is logged with its BLEU


@pytest.mark.parametrize("sampled_during", [False, True])
def test_evaluations_during_training_are_greedy_unless_asked(setting, tmp_path, sampled_during):
    out = tmp_path / str(sampled_during)
    cfg = tiny_config(setting, out, **{"eval.every": 1, "eval.sampled_passes": 2,
                                       "eval.sampled_during": sampled_during})
    summary = train(cfg, quiet=True)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    during = next(r for r in rows if r["step"] == 1 and "valid_bleu" in r)
    assert ("valid_bleu_sampled" in during) == sampled_during and during["eval_seconds"] > 0
    # the start and the end always have the paper's sampled passes
    assert None not in (summary.valid_bleu_sampled_before, summary.valid_bleu_sampled_after)


def test_the_first_minibatch_is_exactly_on_policy_and_only_later_rows_get_an_old_pass(setting, tmp_path,
                                                                                       monkeypatch):
    """LoRA dropout 0.05: the first minibatch's ratio is exactly 1 (its own log-probs, detached,
    under the same dropout), and the no-grad pass of the old policy reads only the rows of the
    later minibatches, in the update's train mode."""
    import leafrl.trainer
    from leafrl.trainer import minibatch_order, update

    over = {"lora.dropout": 0.05, "optim.minibatch": 2, "optim.lr": 0.05}
    run, inputs, rollout, adv, ref = _rolled_out(setting, tmp_path, **over)
    seen, passes = [], []
    step, old_pass = leafrl.trainer.minibatch_step, leafrl.trainer.logprobs_of
    monkeypatch.setattr(leafrl.trainer, "minibatch_step", lambda *a: seen.append(step(*a)) or seen[-1])

    def recording(run, inputs, rollout, rows=None):
        passes.append((sorted(rows.tolist()), run.policy.training))
        return old_pass(run, inputs, rollout, rows)

    monkeypatch.setattr(leafrl.trainer, "logprobs_of", recording)
    update(run, inputs, rollout, adv, ref, step=0)
    assert seen[0]["ratio_min"] == seen[0]["ratio_max"] == 1.0
    assert any(m["ratio_min"] != 1.0 or m["ratio_max"] != 1.0 for m in seen[1:])  # dropout and the steps
    first = minibatch_order(len(rollout.ids), 2, 1, run.cfg.seed * 1_000_003)[0].tolist()
    assert passes == [(sorted(set(range(len(rollout.ids))) - set(first)), True)]


def test_prompt_grouped_minibatches_span_two_prompts_and_take_each_row_once_an_epoch():
    from leafrl.schedule import minibatch_order

    order = minibatch_order(48, 6, 2, seed=3, group=8)  # the paper's step: 6 prompts x K 8, minibatches of 6
    assert len(order) == 16 and all(len(rows) == 6 for rows in order)
    for epoch in (order[:8], order[8:]):
        assert sorted(torch.cat(epoch).tolist()) == list(range(48))
    assert max(len(set((rows // 8).tolist())) for rows in order) == 2
    assert max(len(set((rows // 8).tolist())) for rows in minibatch_order(48, 6, 2, seed=3)) > 2  # random order
    every = torch.cat(order[:8]).view(6, 8)
    assert not all(torch.equal(row, row.sort().values) for row in every)  # rows shuffled inside their prompt
    assert torch.cat(order[:8]).tolist() != torch.cat(order[8:]).tolist()  # a new order each epoch
    assert all(torch.equal(a, b) for a, b in zip(order, minibatch_order(48, 6, 2, seed=3, group=8)))
    with pytest.raises(ValueError, match="groups of 8"):
        minibatch_order(44, 6, 1, seed=3, group=8)


def _adapter(run, step):
    from safetensors.torch import load_file

    return load_file(str(run / "checkpoints" / f"step-{step:06d}" / "adapter" / "adapter_model.safetensors"))


def test_each_pass_over_the_training_set_restarts_the_optimizer_and_schedule_and_resumes_exactly(setting, tmp_path):
    """12 training rows, 2 prompts a step: 6 RL steps a pass, 2 optimizer steps each. At step 6 a
    new pass starts a fresh AdamW (its step count from 0) and a fresh warmup-cosine schedule over
    the rest of the run; a run stopped at the boundary and resumed ends where an uninterrupted
    one does, bit for bit."""
    over = {"steps": 8, "optim.warmup_frac": 0.25}
    train(tiny_config(setting, tmp_path / "a", **over), quiet=True)
    lr = [json.loads(line)["lr"] for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()
          if "loss" in json.loads(line)]
    assert lr[6] > lr[5] and lr[7] < lr[6]  # the restart's warmup, then its decay
    state = torch.load(tmp_path / "a" / "checkpoints" / "step-000008" / "optimizer.pt", weights_only=True)
    assert {int(s["step"]) for s in state["state"].values()} == {4}  # 2 RL steps x 2 since the restart
    train(tiny_config(setting, tmp_path / "b", **{**over, "steps": 6}), quiet=True)
    train(apply_overrides(tiny_config(setting, tmp_path / "b", **over), []), resume=True, quiet=True)
    assert _adapter(tmp_path / "a", 8).keys() == _adapter(tmp_path / "b", 8).keys()
    for name, value in _adapter(tmp_path / "a", 8).items():
        assert torch.equal(value, _adapter(tmp_path / "b", 8)[name]), name
    train(tiny_config(setting, tmp_path / "c", **over, **{"optim.warm_restarts": False}), quiet=True)
    state = torch.load(tmp_path / "c" / "checkpoints" / "step-000008" / "optimizer.pt", weights_only=True)
    assert {int(s["step"]) for s in state["state"].values()} == {16}
