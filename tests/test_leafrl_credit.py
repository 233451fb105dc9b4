"""leafrl's own credit (``--algo leafrl``: token_contrast, leafrl_advantages) and the trie segments
behind ``leafrl credit``'s ceiling: hand-computed vectors, equivalence with the plain reference
(tests/reference_leaf.py) on random batches, and invariances."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from reference_leaf import reference_grpo, reference_leafrl, reference_trie_segments

from leafrl.advantages import grpo_advantages
from leafrl.token_credit import leafrl_advantages, token_contrast, trie_segments
from test_advantages import batches, fuzz, to_tensors

# Three responses to one prompt and one to another (rewards 1, 0, 0.5 | 0.3):
#   row 0: 1 2 3    row 1: 1 4 3    row 2: 1 2 5    row 3: 7 7 (group 1, alone)
IDS = torch.tensor([[1, 2, 3], [1, 4, 3], [1, 2, 5], [7, 7, 0]])
MASK = torch.tensor([[1, 1, 1], [1, 1, 1], [1, 1, 1], [1, 1, 0]]).bool()
REWARDS = torch.tensor([1.0, 0.0, 0.5, 0.3])
GROUPS = torch.tensor([0, 0, 0, 1])


def test_token_contrast_by_hand():
    got = token_contrast(IDS, MASK, REWARDS, GROUPS)
    # row 0: token 1 every row holds -> 0; token 2 held by row 2 (0.5) vs the others' mean 0.25 -> +0.25;
    #        token 3 held by row 1 (0) -> -0.25
    # row 1: token 4 held by nobody else -> its own 0 - mean(1, 0.5) = -0.75; token 3 held by row 0 (1) -> +0.25
    # row 2: token 2 held by row 0 (1) vs mean(1, 0) = 0.5 -> +0.5; token 5 alone: 0.5 - 0.5 = 0
    # row 3: a group of one has nothing to compare with -> 0
    expected = torch.tensor([[0, 0.25, -0.25], [0, -0.75, 0.25], [0, 0.5, 0], [0, 0, 0]], dtype=torch.float64)
    torch.testing.assert_close(got, expected)
    assert got.dtype == torch.float64


def test_leafrl_advantages_by_hand():
    # group 0: mean 0.5, std 0.5 -> scale 0.5 + 1e-6; A = (r - 0.5 + contrast) / scale
    got = leafrl_advantages(IDS, MASK, REWARDS, GROUPS)
    expected = torch.tensor([[1.0, 1.5, 0.5], [-1.0, -2.5, -0.5], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert got.dtype == torch.float32 and got[3, 2] == 0  # padding


def test_leafrl_is_grpo_where_every_row_holds_the_same_tokens():
    ids = torch.tensor([[1, 2, 3], [3, 2, 1], [2, 1, 3]])  # the same tokens, in different orders
    mask = torch.ones(3, 3, dtype=torch.bool)
    r = torch.tensor([0.9, 0.1, 0.4])
    assert not token_contrast(ids, mask, r, torch.zeros(3, dtype=torch.long)).any()
    grpo = grpo_advantages(r, torch.zeros(3, dtype=torch.long))
    torch.testing.assert_close(leafrl_advantages(ids, mask, r, torch.zeros(3, dtype=torch.long)),
                               grpo[:, None].expand(3, 3))


def test_trie_segments_by_hand():
    ids = torch.tensor([[1, 2, 3, 4, 5], [1, 2, 9, 4, 5], [1, 2, 3, 4, 7], [8, 8, 8, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1]] * 3 + [[1, 1, 1, 0, 0]]).bool()
    # rows 0-2 share "1 2"; row 1 leaves at 2, row 2 leaves row 0 at 4; row 3 is alone in its group
    assert trie_segments(ids, mask, torch.tensor([0, 0, 0, 1])).tolist() == [
        [0, 0, 1, 1, 2], [0, 0, 1, 1, 1], [0, 0, 1, 1, 2], [0, 0, 0, 0, 0]]


@fuzz
@given(batch=batches())
def test_leafrl_equivalent_to_reference(batch):
    responses, _, rewards, group_ids, _ = batch
    ids, mask, _, r, g = to_tensors(*batch)
    adv = leafrl_advantages(ids, mask, r, g)
    contrast = token_contrast(ids, mask, r, g)
    ref_adv, ref_contrast = reference_leafrl(responses, r.tolist(), group_ids)
    for i, y in enumerate(responses):
        assert contrast[i, : len(y)].tolist() == pytest.approx(ref_contrast[i], abs=1e-5)
        assert adv[i, : len(y)].tolist() == pytest.approx(ref_adv[i], abs=1e-4, rel=1e-4)
        assert not adv[i, len(y):].any() and not contrast[i, len(y):].any()
    # a response's tokens average out to GRPO's advantage where the group's rows hold the same tokens
    grpo = reference_grpo(r.tolist(), group_ids)
    for i, y in enumerate(responses):
        peers = [j for j in range(len(responses)) if group_ids[j] == group_ids[i]]
        if len(peers) > 1 and all(set(responses[j]) == set(y) for j in peers) and y:
            assert adv[i, : len(y)].tolist() == pytest.approx([grpo[i]] * len(y), abs=1e-4)


@fuzz
@given(batch=batches(), data=st.data())
def test_leafrl_ignores_row_order_and_other_groups(batch, data):
    ids, mask, _, r, g = to_tensors(*batch)
    adv = leafrl_advantages(ids, mask, r, g)
    perm = torch.tensor(data.draw(st.permutations(range(len(r)))))
    torch.testing.assert_close(leafrl_advantages(ids[perm], mask[perm], r[perm], g[perm]), adv[perm])
    keep = g == g[0]
    torch.testing.assert_close(leafrl_advantages(ids[keep], mask[keep], r[keep], g[keep]), adv[keep])
    # the padding id does not matter, nor does the value of a distinct id (only equality does)
    relabelled = torch.where(mask, ids * 5 + 11, 3)
    torch.testing.assert_close(leafrl_advantages(relabelled, mask, r, g), adv)


@fuzz
@given(batch=batches())
def test_trie_segments_equivalent_to_reference(batch):
    responses, _, _, group_ids, _ = batch
    ids, mask, _, _, g = to_tensors(*batch)
    got = trie_segments(ids, mask, g)
    expected = reference_trie_segments(responses, group_ids)
    for i, y in enumerate(responses):
        assert got[i, : len(y)].tolist() == expected[i]
        assert not got[i, len(y):].any()


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="rewards"):
        token_contrast(IDS, MASK, REWARDS[:3], GROUPS)
    with pytest.raises(ValueError, match="completion_mask"):
        leafrl_advantages(IDS, MASK.int(), REWARDS, GROUPS)
    with pytest.raises(ValueError, match="rewards"):
        leafrl_advantages(IDS, MASK, torch.tensor([1.0, float("nan"), 0.0, 0.0]), GROUPS)
    with pytest.raises(ValueError, match="group_ids"):
        trie_segments(IDS, MASK, GROUPS[:2])
    empty = torch.zeros(0, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="empty batch"):
        leafrl_advantages(empty, empty.bool(), torch.zeros(0), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="empty batch"):
        trie_segments(empty, empty.bool(), torch.zeros(0, dtype=torch.long))
