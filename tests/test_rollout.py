"""leafrl.rollout: completion masks, sampling with surprisal from the same call."""

import pytest
import torch

from conftest import noise
from leafrl.models import completion_logprobs, repeat_rows
from leafrl.rollout.batch import encode_targets
from leafrl.rollout.hf import completion_mask, generate_completions


def test_completion_mask_keeps_the_first_eos_and_cuts_after():
    ids = torch.tensor([[5, 6, 9, 7, 9], [9, 1, 1, 1, 1], [1, 2, 3, 4, 5]])
    assert completion_mask(ids, [9]).long().tolist() == [[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]]
    # several end tokens: row 0 starts with one (5), row 2 ends with one
    assert completion_mask(ids, [8, 5]).long().tolist() == [[1, 0, 0, 0, 0], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1]]


def inputs_for(family):
    prompts = [family.build_prompt("Translate the English speech into German.")] * 2
    return family.encode(prompts, [noise(1.0), noise(2.0, seed=1)], ["a", "b"])


@pytest.mark.parametrize("source", ["processed", "raw"])
def test_samples_with_surprisal_of_the_sampled_tokens(tiny_sallm, source):
    model, family = tiny_sallm
    inputs = inputs_for(family)
    torch.manual_seed(0)
    out = generate_completions(model, family, inputs, max_new_tokens=8, num_samples=3, surprisal=source)
    assert out.ids.shape[0] == 6 and out.mask.shape == out.ids.shape == out.surprisal.shape
    assert torch.isfinite(out.surprisal[out.mask]).all() and (out.surprisal[out.mask] >= 0).all()
    assert (out.surprisal[~out.mask] == 0).all()  # padding: 0, the one convention of the rollout record
    assert out.group_ids.tolist() == [0, 0, 0, 1, 1, 1]
    assert (out.ids[~out.mask] == family.pad_token_id).all()
    with torch.no_grad():
        logp = completion_logprobs(model, repeat_rows(inputs, 3, family.row_keys), out.ids, out.mask,
                                   family.keeps_logits)
    if source == "raw":  # the model's own distribution, recomputed by one forward: equal
        torch.testing.assert_close(-logp[out.mask], out.surprisal[out.mask], atol=1e-4, rtol=1e-4)
    else:  # the sampled distribution drops the audio placeholders and renormalizes: p is higher
        assert (out.surprisal[out.mask] <= -logp[out.mask] + 1e-5).all()


def test_top_p_surprisal_is_under_the_nucleus(tiny_sallm):
    """Processed scores renormalize over the nucleus, so p_processed >= p_raw: less surprise."""
    model, family = tiny_sallm
    inputs = inputs_for(family)
    torch.manual_seed(3)
    processed = generate_completions(model, family, inputs, max_new_tokens=6, num_samples=2, top_p=0.5)
    with torch.no_grad():
        raw = -completion_logprobs(model, repeat_rows(inputs, 2, family.row_keys), processed.ids,
                                   processed.mask, family.keeps_logits)
    m = processed.mask
    assert (processed.surprisal[m] <= raw[m] + 1e-5).all()
    assert (processed.surprisal[m] < raw[m] - 1e-3).any()


def test_greedy_is_deterministic_and_needs_no_surprisal(tiny_sallm):
    model, family = tiny_sallm
    inputs = inputs_for(family)
    a = generate_completions(model, family, inputs, max_new_tokens=5, do_sample=False, surprisal=None)
    b = generate_completions(model, family, inputs, max_new_tokens=5, do_sample=False, surprisal=None)
    assert a.surprisal is None and torch.equal(a.ids, b.ids)
    with pytest.raises(ValueError, match="surprisal"):
        generate_completions(model, family, inputs, max_new_tokens=2, surprisal="logits")


def test_encode_targets_appends_eos_and_pads_right(tiny_sallm):
    _, family = tiny_sallm
    ids, mask = encode_targets(family.tokenizer, ["drei rote", "ein blaues Auto und drei"], 7)
    assert ids.shape == mask.shape and mask[:, 0].all()
    lengths = mask.sum(1)
    assert ids[0, lengths[0] - 1] == 7 and ids[1, lengths[1] - 1] == 7
    assert not mask[0, lengths[0]:].any()


def test_suppressed_tokens_are_never_generated(tiny_sallm):
    """A sampled audio placeholder would be read as an audio slot when the response is fed back."""
    model, family = tiny_sallm
    assert model.config.audio_token_index in family.suppress_token_ids
    inputs = inputs_for(family)
    free = generate_completions(model, family, inputs, max_new_tokens=3, do_sample=False, surprisal=None)
    first = free.ids[0, 0].item()
    saved = family.suppress_token_ids
    try:
        family.suppress_token_ids = saved + [first]
        out = generate_completions(model, family, inputs, max_new_tokens=3, do_sample=False, surprisal=None)
    finally:
        family.suppress_token_ids = saved
    assert out.ids[0, 0].item() != first
    assert not torch.isin(out.ids, torch.tensor(saved)).any()


def test_encode_examples_refuses_a_modality_mismatch(tiny_sallm):
    from leafrl.data import Example
    from leafrl.rollout.batch import encode_examples

    _, family = tiny_sallm
    with pytest.raises(ValueError, match="'q1'.*needs a clip"):
        encode_examples(family, [Example("q1", None, "2 + 2 =", "4", "math")])


def test_encoded_rows_equal_encoding_each_batch_and_read_each_row_once(tiny_sallm, monkeypatch):
    from types import SimpleNamespace

    from leafrl.data.schema import Example
    from leafrl.rollout.batch import EncodedRows, encode_examples

    _, family = tiny_sallm
    rows = [Example(f"r{i}", (noise(0.4 + 0.2 * i, seed=i), 16000), ["What do you hear?", "Count the cars."][i % 2],
                    "vier", "ast") for i in range(5)]
    encoded = EncodedRows(family, rows)
    calls = []
    real_encode = family.encode
    monkeypatch.setattr(family, "encode", lambda prompts, *a: calls.append(len(prompts)) or real_encode(prompts, *a))
    for idx in ([3, 0, 1], [1, 4, 3, 2], [2, 0]):
        expected = encode_examples(family, [rows[i] for i in idx])
        got = encoded(idx)
        assert set(got) == set(expected) and all(torch.equal(got[k], expected[k]) for k in expected)
    # per batch: encode_examples reads all its rows, the cache only those it has not seen (3, 2, none)
    assert calls == [3, 3, 4, 2, 2] and sorted(encoded.rows) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="granite_speech.*cache_inputs=false"):
        EncodedRows(SimpleNamespace(name="granite_speech", rows_encode_alone=False), rows)


def test_the_checkpoints_reshaping_generation_settings_are_turned_off(tiny_sallm):
    """A checkpoint's generation_config may reshape sampling (repetition penalty, n-gram bans,
    banned words, a minimum length, top-k...); rollouts sample without them, so the sampled
    tokens and their processed surprisal equal those of a checkpoint that sets none."""
    from leafrl.rollout.hf import reshaping_settings

    model, family = tiny_sallm
    inputs = inputs_for(family)
    config = model.generation_config

    def sample():
        torch.manual_seed(0)
        return generate_completions(model, family, inputs, max_new_tokens=12, num_samples=3, top_p=0.9)

    plain = sample()
    assert reshaping_settings(model) == {}
    changed = {"repetition_penalty": 3.0, "no_repeat_ngram_size": 1, "bad_words_ids": [[7], [8]],
               "min_new_tokens": 10, "min_length": 10, "top_k": 3, "typical_p": 0.5, "min_p": 0.2}
    saved = {name: getattr(config, name) for name in changed}
    try:
        for name, value in changed.items():
            setattr(config, name, value)
        assert reshaping_settings(model) == changed
        again = sample()
    finally:
        for name, value in saved.items():
            setattr(config, name, value)
    assert torch.equal(again.ids, plain.ids)
    torch.testing.assert_close(again.surprisal, plain.surprisal, equal_nan=True)


@pytest.mark.parametrize("k", [16, 1024])
def test_the_nucleus_found_among_the_top_k_is_the_top_p_warpers(k):
    """Rows of every sharpness (a nucleus of 1 token to most of the vocabulary: inside the top k,
    and past it, where the whole-vocabulary warper takes over) keep exactly the tokens
    transformers' TopPLogitsWarper keeps, with their scores untouched."""
    from transformers import TopPLogitsWarper

    from leafrl.rollout.hf import Nucleus

    gen = torch.Generator().manual_seed(3)
    scale = torch.tensor([0.3, 1.0, 2.0, 4.0, 8.0, 30.0]).repeat_interleave(4)[:, None]  # [24, 1]
    scores = torch.randn(24, 5000, generator=gen) * scale
    ids = torch.zeros(24, 2, dtype=torch.long)
    for top_p in (0.5, 0.9, 0.99):
        ours, theirs = Nucleus(top_p, k)(ids, scores.clone()), TopPLogitsWarper(top_p)(ids, scores.clone())
        assert torch.equal(ours, theirs), top_p
    kept = (~Nucleus(0.9, k)(ids, scores.clone()).isinf()).sum(1)
    assert kept.min() == 1 and kept.max() > k  # both paths were taken
    small = torch.randn(3, 100, generator=gen)
    assert torch.equal(Nucleus(0.9, 1024)(ids[:3], small.clone()), TopPLogitsWarper(0.9)(ids[:3], small.clone()))
