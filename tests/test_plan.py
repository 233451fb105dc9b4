"""leafrl plan: exact parameter counts from the meta device, and memory estimates checked against
what the real tensors take (activations measured with saved_tensors_hooks, the KV cache and the
optimizer state by their bytes)."""

import dataclasses
import math

import pytest
import torch
from typer.testing import CliRunner

from conftest import save_tiny_sallm, tone_dataset
from leafrl.config import TrainConfig
from leafrl.models import attach_lora, checkpoint_activations, completion_logprobs, load_speech_lm, prefill_prompts
from leafrl.plan import OVERHEAD, dimensions, largest_micro_batch, layer_bytes, plan, rollout_bytes, saved_bytes


def save_llama(path, hidden=256, layers=2, ffn=688, heads=8, kv_heads=2, vocab=4000):
    """A random Llama-class text model saved in the HF layout (a tokenizer is not needed here)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(hidden_size=hidden, num_hidden_layers=layers, intermediate_size=ffn, num_attention_heads=heads,
                         num_key_value_heads=kv_heads, vocab_size=vocab, max_position_embeddings=1024)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(path)
    return path


def measured_saved(model, fn):
    """Bytes of the tensors autograd keeps for the backward of ``fn()``, parameters excluded."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen = {}

    def pack(t):
        if t.untyped_storage().data_ptr() not in params:
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


@pytest.mark.parametrize("rank", [4, 32])
def test_parameter_counts_from_the_meta_device_are_exact(tmp_path, rank):
    save_tiny_sallm(tmp_path)
    d = dimensions(str(tmp_path), rank, 2 * rank)
    model, _ = load_speech_lm(str(tmp_path))
    model = attach_lora(model, rank=rank, alpha=2 * rank, dropout=0.0)
    assert d.trainable == sum(p.numel() for p in model.parameters() if p.requires_grad) > 0
    assert d.parameters == sum(p.numel() for p in model.parameters() if not p.requires_grad)
    assert (d.layers, d.hidden, d.context) == (2, 32, 512)


@pytest.mark.parametrize(("dtype", "checkpointing"), [(torch.float32, False), (torch.bfloat16, False),
                                                      (torch.float32, True), (torch.bfloat16, True)])
@pytest.mark.parametrize("shape", [dict(), dict(hidden=384, heads=12, ffn=1024, kv_heads=4, layers=3)])
def test_activation_estimate_matches_what_autograd_keeps(tmp_path, dtype, checkpointing, shape):
    """One micro-batch of 4 rows (own prompts of 40 tokens, 30 response tokens) in the update's
    training mode: the estimate within 12% of the tensors saved for the backward."""
    from transformers import LlamaForCausalLM

    save_llama(tmp_path, **shape)
    model = LlamaForCausalLM.from_pretrained(tmp_path, dtype=dtype)
    model = attach_lora(model, rank=16, alpha=32, dropout=0.0)
    if checkpointing:
        checkpoint_activations(model)
    model.train()
    d = dimensions(str(tmp_path), 16, 32)
    rows, prompt, response = 4, 40, 30
    torch.manual_seed(0)
    inputs = {"input_ids": torch.randint(0, d.vocab, (rows, prompt)),
              "attention_mask": torch.ones(rows, prompt, dtype=torch.long)}
    ids = torch.randint(0, d.vocab, (rows, response))
    mask = torch.ones(rows, response, dtype=torch.bool)
    measured = measured_saved(model, lambda: completion_logprobs(model, inputs, ids, mask, True))
    # k=1: every row has its own prompt; the layer in recompute is not saved in the forward
    estimate = saved_bytes(d, dtype.itemsize, 16, rows, 1, prompt, response, checkpointing)
    if checkpointing:
        estimate -= rows * (prompt + response) * layer_bytes(d, dtype.itemsize, 16)
    assert measured == pytest.approx(estimate, rel=0.12)


def test_kv_cache_estimate_is_the_cache_a_prefill_keeps(tmp_path):
    from transformers import LlamaForCausalLM

    save_llama(tmp_path)
    model = LlamaForCausalLM.from_pretrained(tmp_path)
    d = dimensions(str(tmp_path), 16, 32)
    rows, prompt = 6, 21
    inputs = {"input_ids": torch.randint(0, d.vocab, (rows, prompt)),
              "attention_mask": torch.ones(rows, prompt, dtype=torch.long)}
    with torch.no_grad():
        cache = prefill_prompts(model.eval(), inputs, torch.arange(rows), True)  # caches prompt - 1 tokens
    held = sum(layer.keys.nbytes + layer.values.nbytes for layer in cache.layers)
    assert held == rollout_bytes(d, 4, rows, prompt - 1, 0) - 2 * 4 * rows * d.vocab  # one step's scores beside
    assert rollout_bytes(d, 4, rows, prompt, 10) - rollout_bytes(d, 4, rows, prompt, 0) == (
        2 * d.layers * d.kv * 10 * rows * 4)  # the cache grows; the surprisal keeps one step's scores


def test_optimizer_estimate_is_adamw_state_and_gradients(tmp_path):
    save_tiny_sallm(tmp_path)
    model, _ = load_speech_lm(str(tmp_path))
    model = attach_lora(model, rank=8, alpha=16, dropout=0.0)
    lora = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(lora)
    sum(p.sum() for p in lora).backward()
    optimizer.step()
    state = sum(t.nbytes for s in optimizer.state.values() for t in s.values() if t.dim() > 0)
    grads = sum(p.grad.nbytes for p in lora)
    cfg = TrainConfig()
    d = dimensions(str(tmp_path), 8, 16)
    assert plan(d, cfg, 4, 50).optimizer == state + grads


def test_the_largest_micro_batch_that_fits_grows_with_the_budget(tmp_path):
    save_llama(tmp_path)
    d = dimensions(str(tmp_path), 64, 128)
    cfg = TrainConfig()
    prompt = 2000  # long prompts: the update, not the rollout, sets the peak
    peaks = [plan(d, cfg, 2, prompt, m).peak for m in range(1, 7)]
    assert peaks == sorted(peaks) and peaks[5] > peaks[3] > peaks[0]  # more rows a pass, more memory
    assert largest_micro_batch(d, cfg, 2, prompt, OVERHEAD) is None
    assert largest_micro_batch(d, cfg, 2, prompt, 10**12) == cfg.optim.minibatch
    middle = (peaks[3] + peaks[4]) // 2 + OVERHEAD
    assert largest_micro_batch(d, cfg, 2, prompt, middle) == 4
    # checkpointing keeps one layer's activations instead of all, but reads every row's prompt whole:
    # it pays on a deep model, not on a 2-layer one whose 6 rows share 3 prompts of 2000 tokens
    checkpointed = TrainConfig(gradient_checkpointing=True)
    deep = dataclasses.replace(d, layers=40)
    assert plan(deep, checkpointed, 2, prompt, 6).update < plan(deep, cfg, 2, prompt, 6).update / 5
    assert plan(d, checkpointed, 2, prompt, 6).update > plan(d, cfg, 2, prompt, 6).update
    assert math.isclose(plan(d, cfg, 2, prompt).weights, d.parameters * 2 + d.trainable * 4)


def test_plan_command_prints_the_components_and_the_micro_batch_that_fits(tmp_path):
    from leafrl.cli import app

    data = tone_dataset(tmp_path / "data", n_train=4, n_valid=2)
    save_tiny_sallm(tmp_path / "model")
    result = CliRunner().invoke(app, ["plan", "--model", str(tmp_path / "model"), "--data", str(data),
                                      "--gpu-memory", "80", "--set", "model_dtype=bfloat16"], terminal_width=200)
    assert result.exit_code == 0, result.output
    for part in ("weights", "optimizer", "rollout", "update", "peak", "micro_batch", "80 GiB", "prompt"):
        assert part in result.output, part
