"""One conformance suite for every model family, on tiny random-config instances of the real
transformers classes saved to disk and reloaded through ``load_speech_lm``."""


import numpy as np
import pytest
import torch

from conftest import GRANITE_TEMPLATE, TEXTS, save_granite, save_tiny_sallm
from leafrl.audio.io import AudioError
from leafrl.models import (
    EMBEDDED_KEYS,
    attach_lora,
    checkpoint_activations,
    collate_rows,
    completion_logprobs,
    embed_prompts,
    family_of,
    load_speech_lm,
    repeat_rows,
    slice_rows,
    split_rows,
    to_model,
    trim_padding,
)
from leafrl.models.logprobs import checkpointed
from leafrl.models.tiny import train_tokenizer
from leafrl.rollout.hf import generate_completions


def save_text(path):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tok = train_tokenizer(TEXTS, 320)
    tok.chat_template = GRANITE_TEMPLATE.replace("start_of_role", "im_start").replace(
        "<|end_of_role|>", "\n").replace("<|end_of_text|>", "<|im_end|>")
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1))
    model.generation_config.eos_token_id = tok.eos_token_id
    model.save_pretrained(path)
    tok.save_pretrained(path)


SAVERS = {"qwen2_audio": save_tiny_sallm, "granite_speech": save_granite, "text": save_text}


@pytest.fixture(scope="module", params=sorted(SAVERS))
def loaded(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param)
    SAVERS[request.param](path)
    model, family = load_speech_lm(str(path))
    model.eval()
    return request.param, model, family


def batch(family, n=2):
    rng = np.random.default_rng(0)
    prompts = [family.build_prompt(t) for t in ("Translate the English speech into German.",
                                                  "How many cars are there?")][:n]
    audios = None
    if family.sampling_rate is not None:
        audios = [0.1 * rng.standard_normal(int(family.sampling_rate * s)).astype(np.float32)
                  for s in (1.0, 2.3)][:n]
    return prompts, audios, [f"row{i}" for i in range(n)]


def test_family_and_left_padding(loaded):
    name, _, family = loaded
    assert family.name == name
    inputs = family.encode(*batch(family))
    assert set(inputs) == set(family.row_keys)
    assert all(v.shape[0] == 2 for v in inputs.values())
    assert inputs["attention_mask"][:, -1].all()  # prompts end where generation starts
    assert not inputs["attention_mask"].all()  # the prompts differ in length: one is padded


def test_repeat_and_slice_rows_follow_rows(loaded):
    _, model, family = loaded
    inputs = family.encode(*batch(family))
    rep = repeat_rows(inputs, 3, family.row_keys)
    assert all(v.shape[0] == 6 for v in rep.values())
    with torch.no_grad():
        one = model(**inputs).logits
        three = model(**rep).logits
        part = model(**slice_rows(rep, slice(3, 6), family.row_keys)).logits
    torch.testing.assert_close(three, one.repeat_interleave(3, 0), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(part, one[1:2].expand(3, -1, -1), atol=1e-5, rtol=1e-4)


def test_generate_and_logprobs_of_given_completions(loaded):
    """The log-probs recomputed by one forward equal those of the sampling call (ratio 1)."""
    _, model, family = loaded
    inputs = family.encode(*batch(family))
    torch.manual_seed(1)
    out = model.generate(**inputs, do_sample=True, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=6,
                         num_return_sequences=2, output_logits=True, return_dict_in_generate=True,
                         pad_token_id=family.pad_token_id, eos_token_id=family.eos_token_ids)
    prompt_len = inputs["input_ids"].shape[1]
    completion = out.sequences[:, prompt_len:]  # [4, T]
    ended = torch.isin(completion, torch.tensor(family.eos_token_ids))
    after_eos = (ended.cumsum(1) - ended.long()) > 0
    mask = ~after_eos
    sampled = torch.stack(out.logits, 1).log_softmax(-1).gather(2, completion[:, :, None])[:, :, 0]
    with torch.no_grad():
        recomputed = completion_logprobs(model, repeat_rows(inputs, 2, family.row_keys), completion,
                                         mask, family.keeps_logits)
    torch.testing.assert_close(recomputed[mask], sampled[mask], atol=1e-4, rtol=1e-4)
    assert not recomputed[~mask].any()
    # a row alone gives the same log-probs as inside the padded batch
    with torch.no_grad():
        alone = completion_logprobs(model, slice_rows(inputs, slice(0, 1), family.row_keys),
                                    completion[:1], mask[:1], family.keeps_logits)
    torch.testing.assert_close(alone, recomputed[:1], atol=1e-4, rtol=1e-4)
    assert len(family.decode(completion)) == 4


def test_embedded_prompts_give_the_same_samples_and_logprobs(loaded):
    """Embedding each prompt once (audio encoder included) and repeating the embeddings K times
    changes nothing: same sampled tokens, same surprisal, same log-probs as the ids path."""
    _, model, family = loaded
    inputs = family.encode(*batch(family))
    embedded = embed_prompts(model, inputs)
    assert set(embedded) == set(EMBEDDED_KEYS)
    assert embedded["inputs_embeds"].shape[:2] == inputs["attention_mask"].shape
    kw = {"max_new_tokens": 6, "temperature": 1.0, "top_p": 0.9}
    torch.manual_seed(3)
    plain = generate_completions(model, family, inputs, num_samples=3, **kw)
    torch.manual_seed(3)
    fast = generate_completions(model, family, repeat_rows(embedded, 3, EMBEDDED_KEYS), **kw)
    assert torch.equal(fast.ids, plain.ids) and torch.equal(fast.mask, plain.mask)
    torch.testing.assert_close(fast.surprisal, plain.surprisal, atol=1e-4, rtol=1e-4, equal_nan=True)
    with torch.no_grad():
        by_ids = completion_logprobs(model, repeat_rows(inputs, 3, family.row_keys), plain.ids, plain.mask,
                                     family.keeps_logits)
        rows, ids, mask = trim_padding(slice_rows(repeat_rows(embedded, 3, EMBEDDED_KEYS), slice(0, 3),
                                                  EMBEDDED_KEYS), plain.ids[:3], plain.mask[:3])
        by_embeds = completion_logprobs(model, rows, ids, mask, family.keeps_logits)
    torch.testing.assert_close(by_embeds, by_ids[:3, : ids.shape[1]], atol=1e-4, rtol=1e-4)
    assert not by_ids[:3, ids.shape[1]:].any()  # trimmed columns held only padding


@pytest.mark.parametrize("embedded", [False, True])
def test_shared_prompts_give_the_log_probs_and_gradients_of_repeated_rows(loaded, embedded):
    """Running each prompt once (prompt_of_row) is the same function as repeating its rows:
    equal log-probs and equal gradients, including a prompt continued by one row only."""
    _, model, family = loaded
    inputs = family.encode(*batch(family))
    if embedded:
        inputs = embed_prompts(model, inputs)
    keys = EMBEDDED_KEYS if embedded else family.row_keys
    of_row = torch.tensor([0, 0, 0, 1])
    torch.manual_seed(0)
    ids = torch.randint(5, len(family.tokenizer) - 8, (4, 5))
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 0, 0]]).bool()
    params = [p for p in model.parameters() if p.is_floating_point()]
    frozen = [p for p in params if not p.requires_grad]

    def value_and_grads(logp):
        grads = torch.autograd.grad((logp * torch.arange(1.0, 6.0)).sum(), params, allow_unused=True)
        return logp.detach(), grads

    try:
        for p in frozen:  # the fixture's model is shared: its flags are put back below
            p.requires_grad_(True)
        repeated = value_and_grads(completion_logprobs(model, slice_rows(inputs, of_row, keys), ids, mask,
                                                       family.keeps_logits))
        shared = value_and_grads(completion_logprobs(model, inputs, ids, mask, family.keeps_logits, of_row))
    finally:
        for p in frozen:
            p.requires_grad_(False)
    torch.testing.assert_close(shared[0], repeated[0], atol=1e-5, rtol=1e-5)
    assert shared[0][mask].lt(0).all() and not shared[0][~mask].any()
    for a, b in zip(shared[1], repeated[1]):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="prompt_of_row"):
        completion_logprobs(model, inputs, ids, mask, family.keeps_logits, torch.tensor([0, 0, 2, 1]))


@pytest.mark.parametrize("embedded", [False, True])
def test_activation_checkpointing_gives_the_log_probs_and_gradients_of_the_shared_prompt_cache(tmp_path, loaded,
                                                                                                 embedded):
    """With gradient checkpointing on, transformers drops the cache a checkpointed layer is given,
    so completion_logprobs reads each row whole instead of sharing its prompt's cache: the same
    log-probs and LoRA gradients as without checkpointing (each prompt continued by 1 to 3 rows)."""
    name, _, _ = loaded
    SAVERS[name](tmp_path)
    model, family = load_speech_lm(str(tmp_path))
    model = attach_lora(model, rank=4, alpha=8, dropout=0.0)
    torch.manual_seed(0)
    for p in model.parameters():  # LoRA B starts at 0: give it weight, so the gradients have a path
        if p.requires_grad:
            p.data.normal_(0, 0.1)
    inputs = family.encode(*batch(family))
    if embedded:
        inputs = embed_prompts(model, inputs)
    of_row = torch.tensor([0, 0, 0, 1])
    ids = torch.randint(5, len(family.tokenizer) - 8, (4, 5))
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 0, 0]]).bool()
    lora = [p for p in model.parameters() if p.requires_grad]

    def value_and_grads():
        logp = completion_logprobs(model, inputs, ids, mask, family.keeps_logits, of_row)
        return logp.detach(), torch.autograd.grad((logp * torch.arange(1.0, 6.0)).sum(), lora)

    model.train()
    decoder = {id(m) for m in model.get_decoder().modules()}
    for m in model.modules():  # Granite's audio side (dropout, batch norm) as at evaluation
        if id(m) not in decoder and m is not model:
            m.training = False
    plain = value_and_grads()
    checkpoint_activations(model)
    assert checkpointed(model)
    again = value_and_grads()
    torch.testing.assert_close(again[0], plain[0], atol=1e-5, rtol=1e-5)
    for a, b in zip(again[1], plain[1], strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    assert any(g.abs().sum() > 0 for g in plain[1])


def test_bfloat16_model_gives_float32_log_probs_close_to_the_float32_model(tmp_path, loaded):
    """model_dtype=bfloat16: the log-softmax is taken in float32 from bfloat16 logits, so the
    log-probs are float32 and within bfloat16 rounding of the float32 model's; audio features are
    cast to the encoder's dtype (to_model)."""
    name, _, _ = loaded
    SAVERS[name](tmp_path)
    full, family = load_speech_lm(str(tmp_path), dtype=torch.float32)
    half, _ = load_speech_lm(str(tmp_path), dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16
    inputs = family.encode(*batch(family))
    torch.manual_seed(0)
    ids = torch.randint(5, len(family.tokenizer) - 8, (2, 6))
    mask = torch.ones(2, 6, dtype=torch.bool)
    with torch.no_grad():
        want = completion_logprobs(full.eval(), to_model(inputs, full), ids, mask, family.keeps_logits)
        got = completion_logprobs(half.eval(), to_model(inputs, half), ids, mask, family.keeps_logits)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, atol=0.1, rtol=0.02)


def test_rows_encoded_alone_batch_as_encoded_together(loaded):
    """Where the family says rows encode alone, rows encoded one at a time and collated equal
    the rows encoded together; Granite's features depend on the batch's longest clip, so not."""
    _, _, family = loaded
    prompts, audios, ids = batch(family)
    together = family.encode(prompts, audios, ids)
    parts = [family.encode(prompts[i:i + 1], None if audios is None else audios[i:i + 1], ids[i:i + 1])
             for i in range(2)]
    try:
        alone = collate_rows([row for part in parts for row in split_rows(part)], family.pad_token_id)
        same = set(alone) == set(together) and all(
            alone[k].shape == together[k].shape and torch.equal(alone[k], together[k]) for k in together)
    except RuntimeError:  # Granite: features as long as each clip do not even stack
        same = False
    assert same == family.rows_encode_alone
    # split and collate undo each other, padding included
    again = collate_rows(split_rows(together), family.pad_token_id)
    assert all(torch.equal(again[k], together[k]) for k in together)
    assert split_rows(together)[1]["attention_mask"].all()  # a row on its own carries no padding


def test_trim_padding_drops_only_all_padding_columns():
    inputs = {"inputs_embeds": torch.randn(2, 5, 3), "attention_mask": torch.tensor([[0, 0, 1, 1, 1], [0, 1, 1, 1, 1]])}
    ids = torch.tensor([[4, 5, 0, 0], [6, 0, 0, 0]])
    mask = torch.tensor([[True, True, False, False], [True, False, False, False]])
    rows, ids2, mask2 = trim_padding(inputs, ids, mask)
    assert rows["attention_mask"].tolist() == [[0, 1, 1, 1], [1, 1, 1, 1]]
    torch.testing.assert_close(rows["inputs_embeds"], inputs["inputs_embeds"][:, 1:])
    assert ids2.tolist() == [[4, 5], [6, 0]] and mask2.shape == (2, 2)


def test_lora_starts_as_the_reference_and_trains_only_the_language_model(loaded):
    _, model, family = loaded
    inputs = family.encode(*batch(family))
    with torch.no_grad():
        before = model(**inputs).logits
    peft_model = attach_lora(model, rank=4, alpha=8, dropout=0.0)
    try:
        trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
        assert trainable and all("lora_" in n for n in trainable)
        if family.name != "text":
            assert all("language_model" in n for n in trainable)
        with torch.no_grad():
            after = peft_model(**inputs).logits
            with peft_model.disable_adapter():
                reference = peft_model(**inputs).logits
        torch.testing.assert_close(after, before)  # LoRA B starts at zero
        torch.testing.assert_close(reference, before)
    finally:
        peft_model.unload()


def test_audio_placeholders_are_suppressed_in_responses(loaded):
    _, model, family = loaded
    if family.sampling_rate is None:
        assert family.suppress_token_ids == []
    else:
        assert model.config.audio_token_id in family.suppress_token_ids


def test_audio_rows_are_checked(loaded):
    _, _, family = loaded
    prompts, audios, ids = batch(family)
    if family.sampling_rate is None:
        with pytest.raises(ValueError, match="audios"):
            family.encode(prompts, [np.zeros(10, np.float32)] * 2, ids)
        return
    with pytest.raises(ValueError, match="audios"):
        family.encode(prompts, None, ids)
    if family.max_audio_seconds is not None:
        too_long = np.zeros(int(family.sampling_rate * (family.max_audio_seconds + 0.2)), np.float32)
        with pytest.raises(AudioError, match="row1"):
            family.encode(prompts, [audios[0], too_long], ids)


def test_prompt_lengths_counted_without_encoding_are_what_encode_makes(loaded):
    """The start-up checks measure prompts from the text and the clip length alone
    (preflight.prompt_tokens); that must be the length encode gives, for clips from too short
    for one audio token up to a whole feature window."""
    from types import SimpleNamespace

    from leafrl.preflight import prompt_tokens, shortest_clip

    _, _, family = loaded
    texts = ["Translate the English speech into German.", "How many cars are there? " * 5, "Hi"]
    examples = [SimpleNamespace(prompt=t) for t in texts]
    system = "Answer briefly."
    if family.sampling_rate is None:
        inputs = family.encode([family.build_prompt(t, system) for t in texts], None, ["a", "b", "c"])
        assert prompt_tokens(family, examples, [0, 0, 0], system) == inputs["attention_mask"].sum(1).tolist()
        return
    shortest = shortest_clip(family)
    assert family.audio_tokens(shortest) >= 1 and family.audio_tokens(shortest - 1) < 1
    window = int(family.sampling_rate * (family.max_audio_seconds or 4.0))
    for lengths in ([shortest, shortest + 1, 2 * shortest + 7], [16000, 16001, window]):
        audios = [np.full(n, 0.1, np.float32) for n in lengths]
        inputs = family.encode([family.build_prompt(t, system) for t in texts], audios, ["a", "b", "c"])
        assert prompt_tokens(family, examples, lengths, system) == inputs["attention_mask"].sum(1).tolist()


def test_granite_modality_lora_is_merged_exactly(tmp_path):
    released = save_granite(tmp_path).eval()  # the base model with its modality LoRA on
    merged, family = load_speech_lm(str(tmp_path))
    from peft.tuners.tuners_utils import BaseTunerLayer

    assert not any(isinstance(m, BaseTunerLayer) for m in merged.modules())
    inputs = family.encode(*batch(family))
    with torch.no_grad():
        expected = released(**inputs).logits
        with released.disable_adapter():
            without = released(**inputs).logits
        got = merged(**inputs).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(without, expected, atol=1e-4)  # the modality LoRA matters


def test_unknown_family_lists_the_supported_ones():
    with pytest.raises(ValueError, match="qwen2_audio.*granite_speech|granite_speech.*qwen2_audio"):
        family_of("wav2vec2")
    assert family_of("llama").__name__ == "TextLMFamily"
