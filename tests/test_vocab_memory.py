"""Vocabulary-sized memory: ``completion_logprobs`` computes its log-probs from the output head in
chunks (never [N, T, V] at once) and rollouts read the surprisal as they sample (never T steps of
[N, V] scores), with the numbers of the plain implementations they replaced (the readable
references in reference_logprobs.py) on tiny random-config models of several families."""

from types import SimpleNamespace

import pytest
import torch

from conftest import TEXTS, TINY, noise
from leafrl.models import EMBEDDED_KEYS, attach_lora, checkpoint_activations, embed_prompts, load_speech_lm, repeat_rows
from leafrl.models import logprobs as models_logprobs
from leafrl.models.logprobs import LastPositionHead, checkpointed, completion_logprobs
from leafrl.rollout.hf import SampledSurprisal, generate_completions
from reference_logprobs import reference_logprobs, reference_rollout


def text_model(kind, vocab=300):
    """A tiny random causal LM of a text family, in eval mode."""
    import transformers

    small = dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                 num_key_value_heads=1, max_position_embeddings=256)
    configs = {"llama": ("LlamaConfig", "LlamaForCausalLM", {}),
               "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {}),
               "granite": ("GraniteConfig", "GraniteForCausalLM", {"logits_scaling": 4.0}),
               "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", {"final_logit_softcapping": 0.05, "head_dim": 16}),
               "cohere": ("CohereConfig", "CohereForCausalLM", {"logit_scale": 0.25})}
    config_name, model_name, extra = configs[kind]
    torch.manual_seed(0)
    config = getattr(transformers, config_name)(**small, **extra)
    return getattr(transformers, model_name)(config).eval()


def text_prompts(vocab=300):
    """Two left-padded prompts of 7 and 4 tokens."""
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(3, vocab, (2, 7), generator=generator)
    attention = torch.ones(2, 7, dtype=torch.long)
    attention[1, :3] = 0
    return {"input_ids": ids.masked_fill(attention == 0, 0), "attention_mask": attention}


TEXT_FAMILIES = ["llama", "qwen2", "granite", "gemma2", "cohere"]
FAMILIES = [*TEXT_FAMILIES, "qwen2_audio", "granite_speech", "granite_speech_scaled"]


@pytest.fixture(scope="module")
def speech_models(tmp_path_factory):
    """(model, family) of a tiny Qwen2-Audio and of a tiny Granite Speech, loaded as users load them."""
    from conftest import save_granite
    from leafrl.models.tiny import new_tiny_sallm

    qwen, qwen_family = new_tiny_sallm(TEXTS, TINY)
    path = tmp_path_factory.mktemp("granite_speech")
    save_granite(path)
    granite, granite_family = load_speech_lm(str(path))
    return {"qwen2_audio": (qwen.eval(), qwen_family), "granite_speech": (granite.eval(), granite_family)}


@pytest.fixture(params=FAMILIES)
def case(request, speech_models):
    """(name, model, prompts [2 rows], keeps_logits, vocab)."""
    name = request.param
    if name in TEXT_FAMILIES:
        yield name, text_model(name), text_prompts(), True, 300
        return
    model, family = speech_models[name.removesuffix("_scaled")]
    text = model.config.get_text_config()
    saved = getattr(text, "logits_scaling", None)
    if name == "granite_speech_scaled":
        # the released checkpoints' text config says logits_scaling 8 or 16, but transformers 5's
        # Granite Speech returns its head's output unscaled: the log-probs must follow the model
        text.logits_scaling = 4.0
    prompts = [family.build_prompt("Translate the English speech into German."), family.build_prompt("Count.")]
    inputs = family.encode(prompts, [noise(1.0), noise(1.7, seed=1)], ["a", "b"])
    yield name, model, inputs, family.keeps_logits, len(family.tokenizer)
    text.logits_scaling = saved


def completions(vocab, n=5, t=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab - 8, (n, t), generator=generator)
    lengths = torch.tensor([6, 2, 1, 6, 4])[:n]
    return ids, torch.arange(t)[None] < lengths[:, None]


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_log_probs_equal_the_plain_implementation(case, temperature):
    """Shared prompts (prompt_of_row, G = 2 < N = 5), temperature 1 and not: the same numbers as
    taking the log-softmax of the model's full logits, for every family (Granite's logits scaling,
    Gemma 2's softcapping, Cohere's logit scale included)."""
    _, model, inputs, keeps_logits, vocab = case
    ids, mask = completions(vocab)
    of_row = torch.tensor([0, 0, 1, 1, 1])
    with torch.no_grad():
        want = reference_logprobs(model, inputs, ids, mask, keeps_logits, of_row, temperature)
        got = completion_logprobs(model, inputs, ids, mask, keeps_logits, of_row, temperature)
    assert got.dtype == torch.float32 and got.shape == ids.shape
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert not got[~mask].any() and got[mask].lt(0).all()


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_entropies_and_their_gradients_equal_the_plain_implementation(case, temperature, monkeypatch):
    """With ``entropy`` (TRL's trainer logs and may regularize it): the same log-probs, and each
    position's entropy and its gradient equal the full softmax's, the head run 2 positions at a time."""
    _, model, inputs, keeps_logits, vocab = case
    monkeypatch.setattr(models_logprobs, "LOGITS_PER_CHUNK", 2 * vocab)
    ids, mask = completions(vocab)
    of_row = torch.tensor([0, 0, 1, 1, 1])
    head = model.get_output_embeddings().weight
    flag = head.requires_grad

    def value_and_grad(fn):
        logp, ent = fn(model, inputs, ids, mask, keeps_logits, of_row, temperature, entropy=True)
        return logp.detach(), ent.detach(), torch.autograd.grad((ent * torch.arange(1.0, 7.0)).sum(), head)[0]

    try:
        head.requires_grad_(True)
        want, got = value_and_grad(reference_logprobs), value_and_grad(completion_logprobs)
    finally:
        head.requires_grad_(flag)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    assert not got[1][~mask].any() and got[1][mask].gt(0).all() and got[2].abs().max() > 0


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_gradients_of_all_parameters_equal_the_plain_implementation(case, temperature, monkeypatch):
    """With grad, every float parameter trainable: equal log-probs and equal gradients, the head
    run 2 positions at a time (many chunks, each recomputed in the backward)."""
    _, model, inputs, keeps_logits, vocab = case
    monkeypatch.setattr(models_logprobs, "LOGITS_PER_CHUNK", 2 * vocab)
    ids, mask = completions(vocab, seed=1)
    of_row = torch.tensor([0, 1, 1, 0, 1])
    params = [p for p in model.parameters() if p.is_floating_point()]
    flags = [p.requires_grad for p in params]
    weights = torch.arange(1.0, 7.0)

    def value_and_grads(fn):
        logp = fn(model, inputs, ids, mask, keeps_logits, of_row, temperature)
        grads = torch.autograd.grad((logp * weights).sum(), params, allow_unused=True)
        return logp.detach(), grads

    try:
        for p in params:
            p.requires_grad_(True)
        want = value_and_grads(reference_logprobs)
        got = value_and_grads(completion_logprobs)
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
    torch.testing.assert_close(got[0], want[0], atol=1e-5, rtol=1e-5)
    compared = 0
    for a, b in zip(got[1], want[1], strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
            compared += 1
    assert compared > 0


@pytest.mark.parametrize("embedded", [False, True])
def test_lora_gradients_under_activation_checkpointing_equal_the_plain_implementation(speech_models, embedded):
    """The checkpointed path (each row runs whole) with a LoRA and embedded prompts or not."""
    _, family = speech_models["qwen2_audio"]
    from leafrl.models.tiny import new_tiny_sallm

    model, _ = new_tiny_sallm(TEXTS, TINY)
    model = attach_lora(model, rank=4, alpha=8, dropout=0.0)
    torch.manual_seed(0)
    for p in model.parameters():  # LoRA B starts at 0: give it weight, so the gradients have a path
        if p.requires_grad:
            p.data.normal_(0, 0.1)
    inputs = family.encode([family.build_prompt("Count.")] * 2, [noise(1.0), noise(1.4, seed=2)], ["a", "b"])
    if embedded:
        inputs = embed_prompts(model, inputs)
    model.train()
    checkpoint_activations(model)
    assert checkpointed(model)
    ids, mask = completions(len(family.tokenizer), n=4)
    of_row = torch.tensor([0, 0, 1, 1])
    lora = [p for p in model.parameters() if p.requires_grad]
    results = []
    for fn in (reference_logprobs, completion_logprobs):
        logp = fn(model, inputs, ids, mask, family.keeps_logits, of_row, 0.8)
        results.append((logp.detach(), torch.autograd.grad((logp * torch.arange(1.0, 7.0)).sum(), lora)))
    torch.testing.assert_close(results[1][0], results[0][0], atol=1e-5, rtol=1e-5)
    for a, b in zip(results[1][1], results[0][1], strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_no_call_of_the_output_head_computes_more_than_a_chunk(monkeypatch):
    """The model's own forward computes the logits of its last position only; each chunk at most
    LOGITS_PER_CHUNK logits, and never a [N, T, V] block."""
    model = text_model("llama")
    monkeypatch.setattr(models_logprobs, "LOGITS_PER_CHUNK", 3 * 300)
    sizes = []
    handle = model.get_output_embeddings().register_forward_hook(lambda m, args, out: sizes.append(out.numel()))
    ids, mask = completions(300)
    try:
        with torch.no_grad():
            completion_logprobs(model, text_prompts(), ids, mask, True, torch.tensor([0, 0, 1, 1, 1]))
    finally:
        handle.remove()
    assert max(sizes) <= 5 * 300  # the prefill and the forward: one position per row (5 rows)
    assert sum(sizes) >= int(mask.sum()) * 300  # every completion token was scored


def test_a_family_whose_logits_are_not_its_heads_output_is_refused():
    """A transformation of the head's output that the config does not name would give wrong
    log-probs silently: completion_logprobs refuses, naming the model class."""
    model = text_model("llama")

    def unknown(module, args, out):
        out.logits = out.logits * 3.0 + 1.0
        return out

    handle = model.register_forward_hook(unknown)
    ids, mask = completions(300)
    try:
        with torch.no_grad(), pytest.raises(RuntimeError, match="LlamaForCausalLM"):
            completion_logprobs(model, text_prompts(), ids, mask, True, torch.tensor([0, 0, 1, 1, 1]))
    finally:
        handle.remove()


def test_the_last_position_head_hands_the_head_one_position():
    model = text_model("qwen2")
    inputs = text_prompts()
    with torch.no_grad(), LastPositionHead(model) as last:
        out = model(**inputs)
    assert out.logits.shape == (2, 1, 300) and last.hidden.shape == (2, 7, 32)
    with torch.no_grad():
        torch.testing.assert_close(out.logits, model(**inputs).logits[:, -1:])
    assert not model.get_output_embeddings()._forward_pre_hooks  # removed on exit


def text_family(eos=(5,), suppress=(7,)):
    return SimpleNamespace(suppress_token_ids=list(suppress), pad_token_id=0, eos_token_ids=list(eos),
                           keeps_logits=True)


ROLLOUTS = [dict(temperature=1.0, top_p=1.0), dict(temperature=0.7, top_p=0.8), dict(temperature=1.3, top_p=0.95),
            dict(do_sample=False)]


@pytest.mark.parametrize("settings", ROLLOUTS, ids=["t1", "t0.7-p0.8", "t1.3-p0.95", "greedy"])
@pytest.mark.parametrize("source", ["processed", "raw"])
@pytest.mark.parametrize("prompts", ["text", "qwen2_audio", "qwen2_audio_embedded"])
def test_rollout_surprisal_equals_the_kept_scores(speech_models, settings, source, prompts, monkeypatch):
    """Same seed, same sampled ids; the surprisal read as the tokens are sampled equals the one
    read from every step's kept scores ("processed": after suppression, temperature, top-p) or
    logits ("raw"); generate is never asked to keep them."""
    if prompts == "text":
        model, family, inputs = text_model("llama"), text_family(), text_prompts()
    else:
        model, family = speech_models["qwen2_audio"]
        inputs = family.encode([family.build_prompt("Count.")] * 2, [noise(1.0), noise(1.4, seed=2)], ["a", "b"])
        if prompts.endswith("embedded"):
            inputs = repeat_rows(embed_prompts(model, inputs), 1, EMBEDDED_KEYS)
    kw = dict(max_new_tokens=9, num_samples=3, surprisal=source, **settings)
    torch.manual_seed(4)
    want = reference_rollout(model, family, inputs, **kw)
    real_generate = model.generate

    def generate(**kwargs):
        assert not kwargs.get("output_scores") and not kwargs.get("output_logits")
        return real_generate(**kwargs)

    monkeypatch.setattr(model, "generate", generate)
    torch.manual_seed(4)
    got = generate_completions(model, family, inputs, **kw)
    assert torch.equal(got.ids, want.ids) and torch.equal(got.mask, want.mask)
    assert torch.equal(got.group_ids, want.group_ids)
    torch.testing.assert_close(got.surprisal, want.surprisal, atol=1e-5, rtol=1e-5)
    assert got.surprisal.dtype == torch.float32 and torch.isfinite(got.surprisal).all()


def test_sampled_surprisal_reads_each_token_from_the_scores_of_its_step():
    """As generate calls them: the processor with the step's scores, then the stopping criterion
    with the token sampled from them (no scores kept past it); a step generate undoes (a deferred
    stop) beyond max_new_tokens is dropped."""
    torch.manual_seed(0)
    steps = [torch.randn(2, 11) for _ in range(4)]
    ids = torch.randint(0, 11, (2, 4))
    want = torch.stack([-s.log_softmax(-1).gather(1, ids[:, t:t + 1]).squeeze(1) for t, s in enumerate(steps)], 1)
    prompt = torch.zeros(2, 3, dtype=torch.long)
    tokens = torch.cat([ids, torch.randint(0, 11, (2, 1))], 1)  # a 5th: a step generate undoes
    for extra in (False, True):
        recorder = SampledSurprisal(max_new_tokens=4)
        for t, scores in enumerate(steps + [torch.randn(2, 11)] * extra):
            assert recorder(torch.cat([prompt, tokens[:, :t]], 1), scores) is scores
            assert not recorder.read(torch.cat([prompt, tokens[:, :t + 1]], 1), None).any()
            assert recorder.pending is None
        torch.testing.assert_close(recorder.finish(ids), want)
        torch.testing.assert_close(recorder.finish(ids[:, :3]), want[:, :3])
