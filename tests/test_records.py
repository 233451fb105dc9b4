"""The records, one per concept: the rollout (in memory and on disk) and what a run leaves
(HeldOut, RunSummary, SFTSummary), each written in one place and read back typed."""

import json
from types import SimpleNamespace

import pytest
import torch

from leafrl.errors import UserError
from leafrl.rollout.record import GroupInfo, Rollout, concat, grouped, load_rollouts, save_rollouts
from leafrl.summary import HeldOut, RunSummary, SFTSummary


def rollout(groups, k, width, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 50, (groups * k, width), generator=g)
    lengths = torch.randint(1, width + 1, (groups * k,), generator=g)
    mask = torch.arange(width) < lengths[:, None]
    surprisal = torch.rand(groups * k, width, generator=g).masked_fill(~mask, 0.0)
    return Rollout(ids.masked_fill(~mask, 0), mask, surprisal, grouped(k, groups))


def test_grouped_scored_and_first_groups():
    r = rollout(3, 2, 5)
    assert r.group_ids.tolist() == [0, 0, 1, 1, 2, 2] and r.n_groups == 3 and r.rewards is None
    s = r.scored([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    assert s.rewards.dtype == torch.float32 and torch.equal(s.ids, r.ids) and r.rewards is None
    two = s.first_groups(2)
    assert two.group_ids.tolist() == [0, 0, 1, 1] and torch.equal(two.ids, s.ids[:4])
    assert two.rewards.tolist() == pytest.approx([0.1, 0.2, 0.3, 0.4])


def test_concat_renumbers_groups_and_pads_with_each_fields_padding():
    a, b = rollout(2, 2, 3, seed=1).scored([1.0] * 4), rollout(1, 2, 5, seed=2).scored([2.0] * 2)
    c = concat([a, b], pad_token_id=99)
    assert c.ids.shape == (6, 5) and c.group_ids.tolist() == [0, 0, 1, 1, 2, 2]
    assert (c.ids[:4, 3:] == 99).all() and not c.mask[:4, 3:].any() and (c.surprisal[:4, 3:] == 0).all()
    assert torch.equal(c.ids[4:], b.ids) and c.rewards.tolist() == [1.0] * 4 + [2.0] * 2
    unscored = concat([rollout(1, 2, 3), rollout(1, 2, 3)], pad_token_id=0)
    assert unscored.rewards is None


def test_saved_rollouts_read_back_as_the_same_record(tmp_path):
    r = rollout(2, 3, 6).scored([0.5, 0.25, 0.0, 1.0, 0.75, 0.5])
    lengths = r.mask.sum(1).tolist()
    infos = [GroupInfo(f"g{g}", "ast", "p", "ref", [f"text {i}" for i in range(3)],
                       [[f"t{j}" for j in range(int(lengths[g * 3 + i]))] for i in range(3)]) for g in range(2)]
    save_rollouts(tmp_path / "rollouts" / "step-000007.json", 7, "leaf", infos, r)
    saved = load_rollouts(tmp_path)  # a run directory: its newest rollout file
    assert (saved.step, saved.algo, saved.groups) == (7, "leaf", infos)
    width = max(lengths)
    for field in ("ids", "mask", "surprisal", "group_ids", "rewards"):
        torch.testing.assert_close(getattr(saved.rollout, field), getattr(r, field)[:, :width] if
                                   getattr(r, field).dim() == 2 else getattr(r, field))


def test_a_bad_rollout_file_is_named(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"step": 1, "algo": "leaf", "groups": [{"id": "g", "task": "t", "prompt": "p",
                                                                          "reference": "r", "responses": [
                                                                              {"text": "x", "pieces": ["a"],
                                                                               "ids": [1, 2], "surprisal": [],
                                                                               "reward": 0.0}]}]}))
    with pytest.raises(UserError, match=f"{path}.*differ in length"):
        load_rollouts(path)
    with pytest.raises(UserError, match="no saved rollouts"):
        load_rollouts(tmp_path)


def test_run_records_round_trip_and_name_a_file_that_is_not_one(tmp_path):
    held = HeldOut(10.0, 20.0, 1.5, ["a", "b"], [["a", "c"], ["b", "b"]])
    held.save(tmp_path / "before.json")
    assert HeldOut.load(tmp_path / "before.json") == held
    assert held.metrics() == {"valid_bleu": 10.0, "valid_bleu_sampled": 20.0, "valid_bleu_sampled_std": 1.5}
    assert HeldOut(10.0, None, None, ["a"], []).metrics() == {"valid_bleu": 10.0}
    summary = RunSummary(algo="grpo", steps=3, processes=1, valid_examples=2, wall_seconds=1.0, valid_bleu_before=1.0,
                         valid_bleu_after=2.0, valid_bleu_p_value=0.5)
    summary.save(tmp_path / "summary.json")
    assert RunSummary.load(tmp_path / "summary.json") == summary and summary.decodings == ["greedy"]
    assert summary.bleu("greedy", "after") == 2.0 and summary.p_value("greedy") == 0.5
    sft = SFTSummary(model="m", data="d", steps=1, train_examples=2, valid_examples=1, valid_bleu_before=0.0,
                     valid_bleu_after=1.0, wall_seconds=1.0, model_dir="x")
    sft.save(tmp_path / "sft.json")
    assert SFTSummary.load(tmp_path / "sft.json") == sft
    (tmp_path / "other.json").write_text('{"algo": "leaf", "loss": 1}')
    with pytest.raises(UserError, match="other.json: not a leafrl RunSummary"):
        RunSummary.load(tmp_path / "other.json")
    with pytest.raises(UserError, match="other.json: not a leafrl held-out evaluation"):
        HeldOut.load(tmp_path / "other.json")
    with pytest.raises(UserError, match="missing.json: cannot read it"):
        RunSummary.load(tmp_path / "missing.json")


def test_group_infos_decode_each_groups_responses():
    from leafrl.rollout.record import group_infos

    tokenizer = SimpleNamespace(batch_decode=lambda rows, skip_special_tokens: [f"<{r[0]}>" for r in rows])
    family = SimpleNamespace(tokenizer=tokenizer, decode=lambda ids: [" ".join(map(str, row.tolist())) for row in ids])
    r = Rollout(torch.tensor([[5, 6, 0], [7, 0, 0], [8, 9, 4]]), torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1]]).bool(),
                None, torch.tensor([0, 0, 1]))
    examples = [SimpleNamespace(id=f"e{g}", task="ast", prompt="p", reference="r") for g in range(2)]
    infos = group_infos(family, examples, r)
    assert [i.id for i in infos] == ["e0", "e1"] and [len(i.texts) for i in infos] == [2, 1]
    assert infos[0].pieces == [["<5>", "<6>"], ["<7>"]] and infos[1].pieces == [["<8>", "<9>", "<4>"]]
