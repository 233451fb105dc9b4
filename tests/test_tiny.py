"""The built-in tiny SALLM: a real Qwen2-Audio-class model whose encoder sees time order."""

import math

import torch

from conftest import TEXTS, TINY
from leafrl.models.tiny import AUDIO, EOS, SPECIAL_TOKENS, build_tiny_sallm, sinusoids


def test_sinusoids_hand_values():
    table = sinusoids(4, 6)  # 3 timescales: 10000 ** (-k / 2) for k = 0, 1, 2
    assert table.shape == (4, 6)
    assert table[0].tolist() == [0, 0, 0, 1, 1, 1]
    assert abs(table[1, 0].item() - math.sin(1.0)) < 1e-7 and abs(table[2, 1].item() - math.sin(2 / 100)) < 1e-7
    assert abs(table[3, 5].item() - math.cos(3 / 10000)) < 1e-7


def test_tiny_model_encoder_positions_and_specials():
    model, processor = build_tiny_sallm(TEXTS, TINY)
    tower = model.model.audio_tower
    torch.testing.assert_close(tower.embed_positions.weight, sinusoids(*tower.embed_positions.weight.shape))
    assert not tower.embed_positions.weight.requires_grad
    tok = processor.tokenizer
    for special in SPECIAL_TOKENS:  # each special is one token
        assert len(tok(special, add_special_tokens=False)["input_ids"]) == 1
    assert model.config.audio_token_index == tok.convert_tokens_to_ids(AUDIO)
    assert model.generation_config.eos_token_id == tok.convert_tokens_to_ids(EOS)
    # time order matters to the encoder: reversing the frames changes its output
    features = torch.randn(1, TINY.n_mels, 2 * tower.max_source_positions)
    with torch.no_grad():
        forward = tower(features).last_hidden_state
        backward = tower(features.flip(-1)).last_hidden_state.flip(1)
    assert not torch.allclose(forward, backward, atol=1e-3)


def test_tiny_chat_template_is_short_and_survives_save(tmp_path):
    from leafrl.models import load_speech_lm
    from leafrl.models.tiny import new_tiny_sallm

    model, family = new_tiny_sallm(TEXTS, TINY)
    prompt = family.build_prompt("How many cars are there?")
    assert prompt == ("<|im_start|>user\n<|audio_bos|><|AUDIO|><|audio_eos|>\nHow many cars are there?<|im_end|>\n"
                      "<|im_start|>assistant\n")  # no default system prompt, no "Audio 1:" label
    assert family.build_prompt("Hi", system="Be brief.").startswith("<|im_start|>system\nBe brief.<|im_end|>\n")
    tok = family.tokenizer
    for role in ("user", "assistant"):  # trained as often as they occur: one token each
        assert len(tok(role, add_special_tokens=False)["input_ids"]) == 1
    family.save(model, str(tmp_path / "m"))
    _, reloaded = load_speech_lm(str(tmp_path / "m"))
    assert reloaded.build_prompt("How many cars are there?") == prompt


def test_audio_frames_are_what_the_forward_merges(tiny_sallm):
    """The alignment stage's frames equal the projected audio inside the model's own forward
    (encoder attention masked past each clip), for clips of different lengths."""
    from conftest import noise

    model, family = tiny_sallm
    prompt = family.build_prompt("What do you hear?")
    inputs = family.encode([prompt, prompt], [noise(0.8, seed=1), noise(2.3, seed=2)], ["a", "b"])
    merged = []
    hook = model.model.multi_modal_projector.register_forward_hook(lambda m, i, out: merged.append(out))
    with torch.no_grad():
        model(**inputs)
        frames, lengths = family.audio_frames(model, inputs)
    hook.remove()
    assert lengths.tolist() == (inputs["input_ids"] == model.config.audio_token_index).sum(1).tolist()
    for row, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(frames[row, :n], merged[0][row, :n])
