"""leafrl.advantages: hand-computed vectors, equivalence with the plain reference, invariances."""

import math
import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference_leaf import reference_grpo, reference_leaf

from leafrl.advantages import LeafConfig, grpo_advantages, leaf_advantages

# ---------------------------------------------------------------------------------------------
# helpers


def pad(responses, surprisal, width=None, pad_id=0):
    """Lists of token lists -> ids [N, T], mask [N, T], surprisal [N, T] (NaN on padding)."""
    t = width if width is not None else max([len(y) for y in responses] + [0])
    n = len(responses)
    ids = torch.full((n, t), pad_id, dtype=torch.long)
    mask = torch.zeros(n, t, dtype=torch.bool)
    sur = torch.full((n, t), math.nan)
    for i, (y, s) in enumerate(zip(responses, surprisal)):
        ids[i, : len(y)] = torch.tensor(y, dtype=torch.long)
        mask[i, : len(y)] = True
        sur[i, : len(y)] = torch.tensor(s, dtype=torch.float32)
    return ids, mask, sur


def run(responses, surprisal, rewards, group_ids, config=LeafConfig(), **kw):
    ids, mask, sur = pad(responses, surprisal, **kw)
    return leaf_advantages(ids, mask, sur, torch.tensor(rewards, dtype=torch.float32),
                           torch.tensor(group_ids), config, return_tree=True)


# The spec's worked example: y1, y2, y3 share 3 tokens, y1, y2 share 7, y4 shares nothing;
# surprisal peaks at positions 3 and 7, so with B = 2 the boundaries are 3 and 7.
EX_Y = [list(range(1, 11)), list(range(1, 8)) + [20, 21, 22], [1, 2, 3] + list(range(30, 37)),
        list(range(40, 50))]
EX_S = [[5.0 if t == 3 else 4.0 if t == 7 else 0.1 * t for t in range(10)] for _ in EX_Y]
EX_R = [0.6, 0.4, 0.2, 0.0]


def spans_of(adv_row, mask_row):
    """Run-length view of one row: [(start, end, value)] of equal consecutive values."""
    out = []
    vals = adv_row[mask_row].tolist()
    for t, v in enumerate(vals):
        if out and abs(out[-1][2] - v) < 1e-9:
            out[-1][1] = t + 1
        else:
            out.append([t, t + 1, v])
    return out


# ---------------------------------------------------------------------------------------------
# (a) hand-computed vectors


def test_worked_example_zscored():
    adv, stats, tree = run(EX_Y, EX_S, EX_R, [0] * 4)
    # Raw: node a (p=3) V=0.4, n=3 -> (0.1 + 0.1)/sqrt(3) = 0.11547; node b (p=7) V=0.5, n=2
    # -> (0.2 + 0.1)/sqrt(2) = 0.21213; tails y1 0.3+0.1, y2 0.1-0.1, y3 -0.1-0.2, y4 2(-0.3).
    # z-score over the 9 spans gives the spec's table.
    expected = [
        [(0, 3, 0.2823), (3, 7, 0.6019), (7, 10, 1.2231)],
        [(0, 3, 0.2823), (3, 7, 0.6019), (7, 10, -0.0994)],
        [(0, 3, 0.2823), (3, 10, -1.0913)],
        [(0, 10, -2.0832)],
    ]
    for k in range(4):
        got = spans_of(adv[k], torch.ones(10, dtype=torch.bool))
        assert [(a, b) for a, b, _ in got] == [(a, b) for a, b, _ in expected[k]]
        for (_, _, v), (_, _, e) in zip(got, expected[k]):
            assert v == pytest.approx(e, abs=1e-4)
    assert stats.boundaries.tolist() == [[3, 7]]
    assert tree.depth.tolist() == [2, 2, 1, 0]
    assert tree.node_size.tolist() == [[3, 2], [3, 2], [3, 0], [0, 0]]
    assert tree.node_id.tolist() == [[0, 0], [0, 0], [0, -1], [-1, -1]]
    raw = tree.span_value[tree.span_valid].tolist()
    assert raw == pytest.approx([0.11547, 0.21213, 0.4, 0.11547, 0.21213, 0.0, 0.11547, -0.3, -0.6],
                                abs=1e-5)
    assert stats.fork_fire_rate == 1.0 and stats.usable_fork_fire_rate == 1.0
    assert stats.fired.tolist() == [[True, True]] and stats.usable.tolist() == [[True, True]]
    assert stats.nodes_per_group == 2.0 and stats.boundaries_per_group == 2.0
    assert stats.mean_path_depth == pytest.approx(5 / 4)
    assert stats.spans_per_response == pytest.approx(9 / 4)
    # shared-span tokens: y1 3 + 4, y2 3 + 4, y3 3 -> 17 of 40
    assert stats.shared_token_frac == pytest.approx(17 / 40)
    assert stats.nonzero_adv_frac == 1.0 and stats.equal_reward_group_frac == 0.0


@pytest.mark.parametrize(
    "terms, expected",
    [
        # global: nodes GA/sqrt(n) = 0.1/sqrt3, 0.2/sqrt2; tails r - V0 = 0.3, 0.1, -0.1, -0.3
        ("global", [[0.057735, 0.141421, 0.3], [0.057735, 0.141421, 0.1], [0.057735, -0.1], [-0.3]]),
        # local: LA/sqrt(n) = 0.1/sqrt3, 0.1/sqrt2; tails r - V(v_j) = 0.1, -0.1, -0.2, -0.3
        ("local", [[0.057735, 0.070711, 0.1], [0.057735, 0.070711, -0.1], [0.057735, -0.2], [-0.3]]),
        ("both", [[0.11547, 0.212132, 0.4], [0.11547, 0.212132, 0.0], [0.11547, -0.3], [-0.6]]),
    ],
)
def test_worked_example_terms_raw(terms, expected):
    adv, _, _ = run(EX_Y, EX_S, EX_R, [0] * 4, LeafConfig(terms=terms, normalize="none"))
    for k in range(4):
        got = [v for _, _, v in spans_of(adv[k], torch.ones(10, dtype=torch.bool))]
        assert got == pytest.approx(expected[k], abs=1e-5)


def test_separation_skips_close_boundaries():
    # L_min = 9, B = 2 -> D = max(2, 9 // 3) = 3. Surprisal ranks 4 > 5 > 7: 5 is 1 < D from 4,
    # so the boundaries are 4 and 7.
    s = [0.0] * 9
    s[4], s[5], s[7] = 3.0, 2.0, 1.0
    _, stats, _ = run([[1] * 9, [1] * 9], [s, [0.0] * 9], [1.0, 0.0], [0, 0])
    assert stats.boundaries.tolist() == [[4, 7]]


def test_min_prefix_and_ties_go_to_smaller_position():
    # all surprisal equal: ties resolve to the smallest allowed positions, D = max(2, 8//3) = 2
    s = [1.0] * 8
    _, stats, _ = run([[1] * 8, [2] * 8], [s, s], [1.0, 0.0], [0, 0], LeafConfig(min_prefix_tokens=3))
    assert stats.boundaries.tolist() == [[3, 5]]
    _, stats, _ = run([[1] * 8, [2] * 8], [s, s], [1.0, 0.0], [0, 0], LeafConfig(min_prefix_tokens=0))
    assert stats.boundaries.tolist() == [[1, 3]]  # position 0 is never a boundary


def test_response_shorter_than_boundary():
    # y1 = y2 = [1, 2] (length 2), y3 = [1, 2, 3, 4, 5, 6]; surprisal puts a boundary at 1 and 4.
    # p = 1: key [1] for all three -> node {y1,y2,y3}, V = (1 + 1 + 0)/3 = 2/3, n = 3.
    # p = 4: y1, y2 use their whole sequence [1, 2]; y3 uses [1,2,3,4] -> node {y1, y2}, V = 1.
    # V0 = 2/3. y1 spans: [0,1) (2/3-2/3 + 0)/sqrt3 = 0; [1, min(4, 2)) = [1,2): (1/3 + 1/3)/sqrt2;
    # tail [4, 2) is empty. y3: [0,1) 0; tail [1,6): (0 - 2/3) + (0 - 2/3) = -4/3.
    s = [[0.0, 9.0], [0.0, 9.0], [0.0, 9.0, 0.0, 0.0, 8.0, 0.0]]
    adv, stats, tree = run([[1, 2], [1, 2], [1, 2, 3, 4, 5, 6]], s, [1.0, 1.0, 0.0], [0, 0, 0],
                           LeafConfig(normalize="none"))
    assert stats.boundaries.tolist() == [[1, 4]]
    assert tree.depth.tolist() == [2, 2, 1]
    v = (2 / 3) / math.sqrt(2)
    assert adv[0, :2].tolist() == pytest.approx([0.0, v], abs=1e-6)
    assert adv[1, :2].tolist() == pytest.approx([0.0, v], abs=1e-6)
    assert adv[2].tolist() == pytest.approx([0.0] + [-4 / 3] * 5, abs=1e-6)
    assert tree.span_valid.sum(1).tolist() == [2, 2, 2]


def test_empty_responses_count_in_root_but_get_no_tokens():
    # y3 is empty: it has no span, but its reward is in V0 = (1 + 0 + 0.5)/3 = 0.5.
    adv, stats, tree = run([[1, 2, 3], [4, 5, 6], []], [[0.0] * 3, [0.0] * 3, []], [1.0, 0.0, 0.5],
                           [0, 0, 0], LeafConfig(normalize="none"))
    assert adv[0].tolist() == pytest.approx([1.0] * 3)  # 2 (1 - 0.5)
    assert adv[1].tolist() == pytest.approx([-1.0] * 3)
    assert adv[2].tolist() == [0.0, 0.0, 0.0]
    assert tree.span_valid[2].sum() == 0
    assert stats.spans_per_response == pytest.approx(2 / 3)


@pytest.mark.parametrize("normalize", ["span_zscore", "none"])
def test_all_equal_rewards_give_exact_zeros(normalize):
    ys = [[1, 2, 3], [1, 2, 4], [5, 6], [1, 2, 3]]
    s = [[0.3, 2.0, 0.1], [0.3, 2.0, 0.1], [0.3, 0.2], [0.3, 2.0, 0.1]]
    adv, stats, _ = run(ys, s, [0.1] * 4, [0] * 4, LeafConfig(normalize=normalize))
    assert torch.equal(adv, torch.zeros_like(adv))
    assert stats.equal_reward_group_frac == 1.0 and stats.usable_fork_fire_rate == 0.0
    bound = stats.boundaries >= 0
    assert stats.fired[bound].any() and not stats.usable.any() and not stats.fired[~bound].any()
    assert stats.nonzero_adv_frac == 0.0


def test_group_of_one_is_zero():
    adv, stats, _ = run([[1, 2, 3, 4]], [[0.0, 1.0, 2.0, 3.0]], [0.7], [5])
    assert torch.equal(adv, torch.zeros_like(adv))
    assert stats.nodes_per_group == 0.0


def test_trie_mode_on_worked_example_matches_surprisal_mode():
    # the pairwise LCPs are 0 (dropped), 3 and 7: the same boundaries as the surprisal walk
    adv_s, _, _ = run(EX_Y, EX_S, EX_R, [0] * 4)
    adv_t, stats, _ = run(EX_Y, EX_S, EX_R, [0] * 4, LeafConfig(boundaries="trie"))
    assert stats.boundaries.tolist() == [[3, 7]]
    torch.testing.assert_close(adv_t, adv_s)


def test_trie_mode_finds_every_divergence_point():
    # divergences at 1 (y3), 2 (y2) and 4 (y1 vs y4); a budget of 1 does not limit the trie
    ys = [[1, 2, 3, 4, 5, 6], [1, 2, 9, 9, 9, 9], [1, 7, 7, 7, 7, 7], [1, 2, 3, 4, 8, 8]]
    _, stats, _ = run(ys, [[0.0] * 6] * 4, [1.0, 0.5, 0.2, 0.0], [0] * 4,
                      LeafConfig(boundaries="trie", fork_budget=1))
    assert stats.boundaries.tolist() == [[1, 2, 4]]
    assert stats.fork_fire_rate == 1.0 and stats.nodes_per_group == 3.0


def test_grpo_hand_values():
    # mean 0.3, std (unbiased) 0.2582 < floor 1/3 -> divide by 1/3: 0.9, 0.3, -0.3, -0.9
    adv = grpo_advantages(torch.tensor(EX_R), torch.zeros(4, dtype=torch.long))
    assert adv.tolist() == pytest.approx([0.9, 0.3, -0.3, -0.9], abs=1e-5)
    # without the floor: (r - 0.3) / 0.258199
    adv = grpo_advantages(torch.tensor(EX_R), torch.zeros(4, dtype=torch.long), std_floor=0.0)
    assert adv.tolist() == pytest.approx([1.161895, 0.387298, -0.387298, -1.161895], abs=1e-5)
    # group of one, equal rewards -> 0; groups in any order
    adv = grpo_advantages(torch.tensor([0.2, 0.5, 0.5, 0.9]), torch.tensor([3, 8, 8, -1]))
    assert adv.tolist() == [0.0, 0.0, 0.0, 0.0]


# ---------------------------------------------------------------------------------------------
# (b) equivalence with the plain per-group reference, and (d) invariances, on random batches


@st.composite
def batches(draw, max_groups=4, max_k=6, max_len=9):
    """Random groups with many shared prefixes (vocab of 3), ties in surprisal and rewards,
    empty responses, identical responses, arbitrary group ids and padding width."""
    n_groups = draw(st.integers(1, max_groups))
    gids = draw(st.lists(st.integers(-50, 50), min_size=n_groups, max_size=n_groups, unique=True))
    responses, surprisal, rewards, group_ids = [], [], [], []
    surprisal_values = st.one_of(st.sampled_from([0.0, 1.0, 2.0]),
                                 st.floats(0, 10, allow_nan=False, width=32))
    reward_values = st.one_of(st.sampled_from([0.0, 0.25, 1.0]), st.floats(-5, 5, width=32))
    for gid in gids:
        for _ in range(draw(st.integers(1, max_k))):
            y = draw(st.lists(st.integers(0, 2), max_size=max_len))
            if responses and group_ids[-1] == gid and draw(st.booleans()):
                y = list(responses[-1])  # an identical response with the same reward
                r = rewards[-1]
            else:
                r = draw(reward_values)
            responses.append(y)
            surprisal.append(draw(st.lists(surprisal_values, min_size=len(y), max_size=len(y))))
            rewards.append(r)
            group_ids.append(gid)
    perm = draw(st.permutations(range(len(responses))))
    extra = draw(st.integers(0, 2))
    return ([responses[i] for i in perm], [surprisal[i] for i in perm], [rewards[i] for i in perm],
            [group_ids[i] for i in perm], extra)


configs = st.builds(
    LeafConfig,
    fork_budget=st.integers(0, 3),
    min_prefix_tokens=st.integers(0, 3),
    terms=st.sampled_from(["both", "global", "local"]),
    normalize=st.sampled_from(["span_zscore", "none"]),
    boundaries=st.sampled_from(["surprisal", "trie"]),
)
# LEAF_FUZZ=5000 pytest ... for a longer hunt than CI's
fuzz = settings(max_examples=int(os.environ.get("LEAF_FUZZ", "300")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


def to_tensors(responses, surprisal, rewards, group_ids, extra):
    width = max([len(y) for y in responses] + [0]) + extra
    ids, mask, sur = pad(responses, surprisal, width=width, pad_id=7)
    return ids, mask, sur, torch.tensor(rewards, dtype=torch.float32), torch.tensor(group_ids)


@fuzz
@given(batch=batches(), config=configs)
def test_equivalent_to_reference(batch, config):
    responses, surprisal, rewards, group_ids, extra = batch
    ids, mask, sur, r, g = to_tensors(*batch)
    adv, stats, tree = leaf_advantages(ids, mask, sur, r, g, config, return_tree=True)
    # the reference sees the same float32-rounded numbers
    ref, info = reference_leaf(responses, [[float(x) for x in row[m]] for row, m in zip(sur, mask)],
                               r.tolist(), group_ids, config.fork_budget, config.min_prefix_tokens,
                               config.terms, config.normalize, config.boundaries)
    for i, y in enumerate(responses):
        assert adv[i, : len(y)].tolist() == pytest.approx(ref[i], abs=1e-4, rel=1e-4)
        assert not adv[i, len(y):].any()
    got_bounds = {int(gid): [int(p) for p in row if p >= 0]
                  for gid, row in zip(stats.group_ids, stats.boundaries)}
    assert got_bounds == info["boundaries"]
    assert tree.depth.tolist() == info["depth"]
    assert tree.span_valid.sum(1).tolist() == [len(s) for s in info["spans"]]
    n_nodes = sum(len(v) for v in info["nodes"].values())
    assert stats.nodes_per_group == pytest.approx(n_nodes / len(info["nodes"]))
    # the same nodes: (boundary, members) from node_id, and their values
    got_nodes = set()
    for i, gid in enumerate(group_ids):
        for b, node in enumerate(tree.node_id[i].tolist()):
            if node >= 0:
                members = tuple((tree.node_id[:, b] == node).nonzero().flatten().tolist())
                got_nodes.add((got_bounds[gid][b], members))
    assert got_nodes == {(p, tuple(m)) for v in info["nodes"].values() for p, m, _, _ in v}
    # the per-boundary flags: a boundary fired where the reference made a node there
    fired = {int(gid): sorted(int(p) for p, f in zip(row, flags) if f)
             for gid, row, flags in zip(stats.group_ids, stats.boundaries, stats.fired)}
    assert fired == {gid: sorted({p for p, _, _, _ in info["nodes"].get(gid, [])}) for gid in fired}
    assert not (stats.usable & ~stats.fired).any()
    assert stats.fired.sum() / max(int((stats.boundaries >= 0).sum()), 1) == pytest.approx(stats.fork_fire_rate)


@fuzz
@given(batch=batches(), config=configs, data=st.data())
def test_row_order_and_other_groups_do_not_matter(batch, config, data):
    ids, mask, sur, r, g = to_tensors(*batch)
    adv, _ = leaf_advantages(ids, mask, sur, r, g, config)
    perm = torch.tensor(data.draw(st.permutations(range(len(r)))))
    adv_p, _ = leaf_advantages(ids[perm], mask[perm], sur[perm], r[perm], g[perm], config)
    torch.testing.assert_close(adv_p, adv[perm], atol=1e-5, rtol=1e-5)
    # one group alone gives the same advantages as inside the batch
    keep = g == g[0]
    adv_1, _ = leaf_advantages(ids[keep], mask[keep], sur[keep], r[keep], g[keep], config)
    torch.testing.assert_close(adv_1, adv[keep], atol=1e-5, rtol=1e-5)


@fuzz
@given(batch=batches(), config=configs)
def test_invariants(batch, config):
    responses, _, rewards, group_ids, _ = batch
    ids, mask, sur, r, g = to_tensors(*batch)
    adv, stats = leaf_advantages(ids, mask, sur, r, g, config)
    assert adv.dtype == torch.float32 and adv.shape == ids.shape
    assert torch.isfinite(adv).all()
    assert not adv[~mask].any()  # padding is zero
    # identical responses with equal rewards in one group get identical advantages
    for i in range(len(responses)):
        for j in range(i):
            if group_ids[i] == group_ids[j] and responses[i] == responses[j] and rewards[i] == rewards[j]:
                assert torch.equal(adv[i], adv[j])
    for name, value in stats.as_dict().items():
        if name.endswith(("_rate", "_frac")):
            assert 0.0 <= value <= 1.0, name
    again, _ = leaf_advantages(ids, mask, sur, r, g, config)
    assert torch.equal(adv, again)  # deterministic


@fuzz
@given(data=st.data(), config=configs)
def test_no_shared_prefix_is_one_tail_span_per_response(data, config):
    # distinct first tokens: no node can form, every response is one span 2 (r - V0)
    k = data.draw(st.integers(1, 6))
    firsts = data.draw(st.lists(st.integers(0, 50), min_size=k, max_size=k, unique=True))
    ys = [[f] + data.draw(st.lists(st.integers(0, 2), max_size=6)) for f in firsts]
    rs = data.draw(st.lists(st.floats(-2, 2, width=32), min_size=k, max_size=k))
    sur = [data.draw(st.lists(st.floats(0, 5, width=32), min_size=len(y), max_size=len(y))) for y in ys]
    adv, stats, tree = run(ys, sur, rs, [1] * k, config)
    assert stats.nodes_per_group == 0.0 and tree.depth.sum() == 0
    mean = sum(rs) / k
    raw = [{"both": 2.0, "global": 1.0, "local": 1.0}[config.terms] * (x - mean) for x in rs]
    if config.normalize == "span_zscore":
        m = sum(raw) / k
        std = math.sqrt(sum((a - m) ** 2 for a in raw) / (k - 1)) if k > 1 else 0.0
        raw = [(a - m) / max(std, 1e-6) if k > 1 else 0.0 for a in raw]
    for i, y in enumerate(ys):
        assert adv[i, : len(y)].tolist() == pytest.approx([raw[i]] * len(y), abs=1e-4, rel=1e-4)


@fuzz
@given(rewards=st.lists(st.floats(-5, 5, width=32), min_size=1, max_size=12),
       groups=st.data(), floor=st.sampled_from([0.0, 1 / 3, 1.0]))
def test_grpo_equivalent_to_reference(rewards, groups, floor):
    gids = groups.draw(st.lists(st.integers(-3, 3), min_size=len(rewards), max_size=len(rewards)))
    r = torch.tensor(rewards, dtype=torch.float32)
    adv = grpo_advantages(r, torch.tensor(gids), std_floor=floor)
    ref = reference_grpo(r.tolist(), gids, std_floor=floor)
    assert adv.tolist() == pytest.approx(ref, abs=1e-4, rel=1e-4)


# ---------------------------------------------------------------------------------------------
# bad input: one row per case, each naming the offending argument


def good():
    ids, mask, sur = pad(EX_Y, EX_S)
    return dict(completion_ids=ids, completion_mask=mask, surprisal=sur,
                rewards=torch.tensor(EX_R), group_ids=torch.zeros(4, dtype=torch.long))


def _set(key, fn):
    def apply(kw):
        kw[key] = fn(kw[key])
        return kw
    return apply


def _nan_reward(r):
    r = r.clone()
    r[2] = math.nan
    return r


def _inf_surprisal(s):
    s = s.clone()
    s[1, 4] = math.inf
    return s


def _hole(m):
    m = m.clone()
    m[2, 3] = False
    return m


BAD = [
    ("completion_ids", _set("completion_ids", lambda x: x.float())),
    ("completion_ids", _set("completion_ids", lambda x: x[0])),
    ("completion_ids", _set("completion_ids", lambda x: -x)),
    ("completion_mask", _set("completion_mask", lambda x: x.long())),
    ("completion_mask", _set("completion_mask", lambda x: x[:, :5])),
    ("completion_mask", _set("completion_mask", _hole)),
    ("surprisal", _set("surprisal", lambda x: x.long())),
    ("surprisal", _set("surprisal", lambda x: x[:3])),
    ("surprisal", _set("surprisal", _inf_surprisal)),
    ("rewards", _set("rewards", lambda x: x[:3])),
    ("rewards", _set("rewards", lambda x: x.long())),
    ("rewards", _set("rewards", _nan_reward)),
    ("rewards", _set("rewards", lambda x: x.tolist())),
    ("group_ids", _set("group_ids", lambda x: x.float())),
    ("group_ids", _set("group_ids", lambda x: x[None])),
]


@pytest.mark.parametrize("name, corrupt", BAD)
def test_bad_input_names_the_argument(name, corrupt):
    with pytest.raises(ValueError, match=name):
        leaf_advantages(**corrupt(good()))


def test_nan_surprisal_on_padding_is_ignored():
    kw = good()
    kw["completion_mask"][3, 5:] = False
    kw["surprisal"][3, 5:] = math.nan
    adv, _ = leaf_advantages(**kw)
    assert torch.isfinite(adv).all() and not adv[3, 5:].any()


@pytest.mark.parametrize("field, value", [("fork_budget", -1), ("fork_budget", 1.5),
                                          ("min_prefix_tokens", -2), ("terms", "all"),
                                          ("normalize", "batch"), ("boundaries", "random")])
def test_bad_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=f"LeafConfig.{field}"):
        LeafConfig(**{field: value})


def test_grpo_bad_input():
    with pytest.raises(ValueError, match="rewards"):
        grpo_advantages(torch.tensor([0.1, math.inf]), torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="group_ids"):
        grpo_advantages(torch.tensor([0.1, 0.2]), torch.tensor([0, 0, 1]))
    with pytest.raises(ValueError, match="std_floor"):
        grpo_advantages(torch.tensor([0.1, 0.2]), torch.tensor([0, 0]), std_floor=-1)


def test_empty_batch_is_an_error_but_empty_width_is_not():
    with pytest.raises(ValueError, match="completion_ids"):
        leaf_advantages(torch.zeros(0, 5, dtype=torch.long), torch.zeros(0, 5, dtype=torch.bool),
                        torch.zeros(0, 5), torch.zeros(0), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="rewards"):
        grpo_advantages(torch.zeros(0), torch.zeros(0, dtype=torch.long))
    adv, stats = leaf_advantages(torch.zeros(3, 0, dtype=torch.long), torch.zeros(3, 0, dtype=torch.bool),
                                 torch.zeros(3, 0), torch.tensor([1.0, 0.0, 0.5]),
                                 torch.tensor([0, 0, 1]))
    assert adv.shape == (3, 0) and stats.spans_per_response == 0.0
