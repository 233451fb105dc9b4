"""LEAF span advantages and the GRPO baseline: pure tensor code (torch only). leafrl's own
credit (``--algo leafrl``) is in ``leafrl.token_credit``.

Notation used for tensor shapes:
    N rows (prompts x K responses), T completion tokens, G groups (one per prompt),
    M slots per group in the padded group layout (the largest group's size),
    J boundary slots per group (<= fork_budget B; in "trie" mode <= M - 1), S = J + 1 span slots.

The algorithm is described in ``docs/method.md`` (arXiv 2606.07610), step by step:
  1. boundaries: per group, the B highest-surprisal positions at least D apart
     (D = max(2, floor(L_min / (B + 1)))), shared by all K responses of the group;
  2. nodes: at each boundary p, responses with equal prefix y[:min(p, L)] form a node
     (value = mean member reward, n = member count) when there are at least 2 of them;
  3. spans: a response's path of nodes cuts it into spans; an internal span gets
     (GA + LA) / sqrt(n), GA = V(node) - V(root), LA = V(node) - V(parent), the tail gets
     (r - V(root)) + (r - V(last node));
  4. normalization: z-score over all spans of the group, each span once; tokens take their
     span's value, padding 0.
Everything runs for all groups at once, with a loop over the B boundary rounds only.

Prefix equality is exact, without hashing and without a [G, M, M, T] comparison: with token
ids y as float64 (-1 on padding), two rows share the padded prefix y[:p] iff
sum_{t<p} (y_i,t - y_j,t)^2 = A_i + A_j - 2 C_ij = 0, where A and C come from batched float64
matrix products of integers below 2^53, so every partial sum is exact. Equal padded prefixes
are exactly the spec's keys y[:min(p, L)] (padding differs from every real token).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from leafrl._groups import centred_rewards, common_prefix, group_layout, grpo_terms, padded_tokens
from leafrl._validate import (
    check_choice,
    check_finite,
    check_prefix_mask,
    check_same_device,
    check_tensor,
)

TERMS = ("both", "global", "local")
NORMALIZE = ("span_zscore", "none")
BOUNDARIES = ("surprisal", "trie")
ZSCORE_EPS = 1e-6  # spec step 4: (A - mean) / max(std, eps)
# A node is "usable" when its value differs from its parent's by more than this fraction of
# the group's reward range (sums of equal rewards in different orders differ by ~1e-16).
USABLE_RTOL = 1e-9


@dataclass(frozen=True)
class LeafConfig:
    """LEAF options; defaults are the paper's (authors' released configuration)."""

    fork_budget: int = 2
    """B: boundaries chosen per group, at the highest-surprisal positions at least D apart (paper: 2)."""
    min_prefix_tokens: int = 1
    """The earliest position a boundary may take is max(1, this) (paper: 1)."""
    terms: str = "both"
    """Span credit: GA + LA ("both", paper), GA = V(node) - V(root) only ("global") or LA only ("local")."""
    normalize: str = "span_zscore"
    """"span_zscore" (paper: z-score over the group's spans, each span once) or "none"."""
    boundaries: str = "surprisal"
    """"surprisal" (paper: B high-surprisal positions) or "trie" (every divergence point, no budget).

    "trie" goes beyond the paper: a boundary at every point where the group's responses diverge."""

    def __post_init__(self) -> None:
        for name in ("fork_budget", "min_prefix_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"LeafConfig.{name} must be an int >= 0, got {value!r}")
        check_choice("LeafConfig.terms", self.terms, TERMS)
        check_choice("LeafConfig.normalize", self.normalize, NORMALIZE)
        check_choice("LeafConfig.boundaries", self.boundaries, BOUNDARIES)


@dataclass(frozen=True)
class LeafStats:
    """Per-batch statistics of one ``leaf_advantages`` call (rates are in [0, 1]).

    boundaries: [G, J] chosen positions per group, ascending, -1 where a group has fewer.
    group_ids: [G] the caller's id of each group (row g of ``boundaries``).
    fired / usable: [G, J] bool, boundary slot b of group g produced a node / a node whose
        value differs from its parent's (False on empty slots): the per-position rates.
    """

    boundaries: torch.Tensor
    group_ids: torch.Tensor
    fired: torch.Tensor
    usable: torch.Tensor
    boundaries_per_group: float  # mean number of boundaries chosen per group
    fork_fire_rate: float  # boundaries that produced at least one node / boundaries
    usable_fork_fire_rate: float  # boundaries with a node whose value differs from its parent's
    nodes_per_group: float
    mean_path_depth: float  # nodes on a response's path, mean over responses
    shared_token_frac: float  # real tokens inside node (shared-prefix) spans / real tokens
    spans_per_response: float
    nonzero_adv_frac: float  # real tokens with a nonzero advantage / real tokens
    equal_reward_group_frac: float  # groups whose rewards are all equal (no learning signal)

    def as_dict(self) -> dict[str, float]:
        """The scalar statistics, for logging."""
        return {k: v for k, v in self.__dict__.items() if isinstance(v, float)}


@dataclass(frozen=True)
class LeafTree:
    """The retrospective tree behind one ``leaf_advantages`` call, row by row.

    Shapes: group_index [N] (row -> row of ``LeafStats.boundaries``), depth [N] nodes on the
    path; node_id / node_value / node_size [N, J] the row's node at each boundary, named by
    its first member's row (-1 past the depth), its value V (the mean reward of its members,
    float64) and member count (NaN / 0 past the depth); root_value [G] V of the root (the group's
    mean reward); span_start / span_end / span_value (raw) / span_advantage (normalized) /
    span_valid [N, S]: span s of a row covers tokens [span_start, span_end) and exists only
    where span_valid.
    """

    group_index: torch.Tensor
    depth: torch.Tensor
    node_id: torch.Tensor
    node_value: torch.Tensor
    node_size: torch.Tensor
    root_value: torch.Tensor
    span_start: torch.Tensor
    span_end: torch.Tensor
    span_value: torch.Tensor
    span_advantage: torch.Tensor
    span_valid: torch.Tensor


def _surprisal_boundaries(score: torch.Tensor, length: torch.Tensor, budget: int) -> torch.Tensor:
    """Spec step 1 -> boundaries [G, J = budget], ascending, -1 on empty slots.

    score [G, T]: the group's highest surprisal at each candidate position, -inf elsewhere;
    length [G, M]. Taking, B times, the best candidate at least D from those already
    accepted is exactly the spec's walk down the sorted list. Ties go to the smaller position
    (argmax returns the first maximum).
    """
    g, t = score.shape
    if t == 0 or budget == 0:
        return torch.full((g, 0), -1, dtype=torch.long, device=score.device)
    big = torch.iinfo(torch.long).max
    l_min = torch.where(length > 0, length, big).amin(1)  # [G] shortest non-empty response
    sep = (l_min // (budget + 1)).clamp(min=2)  # [G] D
    pos_t = torch.arange(t, device=score.device)
    picks = []
    score = score.clone()
    for _ in range(budget):  # a loop over the B fork rounds, never over tokens
        top, best = score.max(1)  # [G]; the first maximum, i.e. the smallest position
        picks.append(torch.where(top > -math.inf, best, -1))
        near = (pos_t - best[:, None]).abs_() < sep[:, None]  # [G, T] (all -inf if none left)
        score.masked_fill_(near, -math.inf)
    return _ascending(torch.stack(picks, 1))


def _trie_boundaries(tok: torch.Tensor, length: torch.Tensor, valid: torch.Tensor,
                     first: int) -> torch.Tensor:
    """Extension: every distinct pairwise longest-common-prefix length >= first, i.e. each
    divergence point of the group's prefix trie (and the end of identical responses).

    tok [G, M, T] (-1 on padding), length / valid [G, M] -> boundaries [G, J], ascending, -1
    on empty slots. Costs a [G, M, M, T] comparison, unlike the surprisal boundaries.
    """
    g, m, t = tok.shape
    if t == 0:
        return torch.full((g, 0), -1, dtype=torch.long, device=tok.device)
    lcp = common_prefix(tok, length)  # [G, M, M]
    pair = valid[:, :, None] & valid[:, None, :] & (lcp >= first)
    pair &= ~torch.eye(m, dtype=torch.bool, device=tok.device)
    hit = torch.zeros(g, t + 1, dtype=torch.bool, device=tok.device)
    gi = torch.arange(g, device=tok.device)[:, None, None].expand_as(lcp)
    hit[gi[pair], lcp[pair]] = True  # [G, T + 1]
    p = int(hit.sum(1).max())
    pos = torch.where(hit, torch.arange(t + 1, device=tok.device), -1)
    return _ascending(pos).narrow(1, 0, p)


def _ascending(pos: torch.Tensor) -> torch.Tensor:
    """Sort boundary slots [G, J] ascending with the empty ones (-1) last."""
    key = torch.where(pos < 0, torch.iinfo(torch.long).max, pos)
    return pos.gather(1, key.argsort(1))


def _same_prefix(tok: torch.Tensor, valid: torch.Tensor, bound: torch.Tensor) -> torch.Tensor:
    """same [G, J, M, M]: rows i and j of a group share the padded prefix tok[:p] at each
    valid boundary p (spec step 2's key equality). tok [G, M, T] float64 ids, -1 on padding.

    sum_{t<p} (y_i - y_j)^2 = A_i + A_j - 2 C_ij with C_ij = sum_{t<p} y_i y_j and A_i = C_ii:
    one batched product of integer-valued float64 matrices, exact below 2^53.
    """
    g, m, t = tok.shape
    j_count = bound.shape[1]
    before = (torch.arange(t, device=tok.device) < bound[:, :, None]).to(tok.dtype)  # [G, J, T]
    masked = (tok[:, None, :, :] * before[:, :, None, :]).view(g, j_count * m, t)
    cross = torch.bmm(masked, tok.transpose(1, 2)).view(g, j_count, m, m)  # C_ij
    sq = cross.diagonal(dim1=2, dim2=3)  # [G, J, M] A_i = C_ii
    same = sq[:, :, :, None] + sq[:, :, None, :] - 2 * cross == 0
    pair = valid[:, None, :, None] & valid[:, None, None, :]
    return same & pair & (bound >= 0)[:, :, None, None]


def _validate(completion_ids, completion_mask, surprisal, rewards, group_ids, config) -> None:
    if not isinstance(config, LeafConfig):
        raise ValueError(f"config: expected a LeafConfig, got {type(config).__name__}")
    check_tensor("completion_ids", completion_ids, "int", ndim=2)
    n, t = completion_ids.shape
    if n == 0:
        raise ValueError("completion_ids: empty batch (N = 0 rows)")
    check_tensor("completion_mask", completion_mask, "bool", shape=(n, t))
    check_tensor("surprisal", surprisal, "float", shape=(n, t))
    check_tensor("rewards", rewards, "float", shape=(n,))
    check_tensor("group_ids", group_ids, "int", shape=(n,))
    check_same_device(completion_ids=completion_ids, completion_mask=completion_mask,
                      surprisal=surprisal, rewards=rewards, group_ids=group_ids)
    check_prefix_mask("completion_mask", completion_mask)
    check_finite("rewards", rewards)
    check_finite("surprisal", surprisal, where=completion_mask, what=" on a real token")


def leaf_advantages(
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    surprisal: torch.Tensor,
    rewards: torch.Tensor,
    group_ids: torch.Tensor,
    config: LeafConfig = LeafConfig(),
    return_tree: bool = False,
) -> tuple[torch.Tensor, LeafStats] | tuple[torch.Tensor, LeafStats, LeafTree]:
    """LEAF span-level advantages for a batch of sampled responses, all groups at once.

    Shapes:
        completion_ids   [N, T] int, token ids (>= 0 on real tokens)
        completion_mask  [N, T] bool, True on real tokens, a prefix of each row
        surprisal        [N, T] float, -log p of each sampled token (ignored on padding)
        rewards          [N] float, finite
        group_ids        [N] int, the prompt of each row (any ints; rows need not be adjacent)
        -> advantages    [N, T] float32, 0 on padding; LeafStats; LeafTree if return_tree

    The result depends neither on the order of rows nor on the other groups of the batch.
    Raises ValueError naming the argument on bad input.
    """
    _validate(completion_ids, completion_mask, surprisal, rewards, group_ids, config)
    t = completion_ids.shape[1]
    lay = group_layout(group_ids)
    lengths = completion_mask.sum(1)  # [N]
    length = lay.by_group(lengths, 0)  # [G, M]
    x, reward_range = centred_rewards(rewards, lay)  # [G, M], [G]
    tok = padded_tokens(completion_ids, completion_mask)  # [N, T] float64, -1 on padding

    # Step 1: boundaries [G, J], ascending, -1 on empty slots.
    first = max(1, config.min_prefix_tokens)
    if config.boundaries == "surprisal":
        score = torch.where(completion_mask, surprisal, -math.inf)  # [N, T]
        score[:, :first] = -math.inf
        score = lay.by_group(score, -math.inf).amax(1)  # [G, T] best candidate of the group
        bound = _surprisal_boundaries(score, length, config.fork_budget)
    else:
        bound = _trie_boundaries(lay.by_group(tok, -1.0), length, lay.valid, first)

    # Step 2: nodes. same[g, b, i, j]: rows i, j share their key at boundary b.
    same = _same_prefix(lay.by_group(tok, -1.0), lay.valid, bound)  # [G, J, M, M]
    size = same.sum(3)  # [G, J, M]
    member = size >= 2  # nested: a member at boundary b is a member at every earlier one
    node_value = (same * x[:, None, None, :]).sum(3) / size.clamp(min=1)  # [G, J, M]
    depth = member.sum(1)  # [G, M]
    root = x.sum(1) / lay.valid.sum(1)  # [G]
    first_member = same.to(torch.uint8).argmax(3)  # [G, J, M] slot naming each row's node

    # Step 3: span s < depth belongs to the node at boundary s; span == depth is the tail.
    raw, start, end, internal, span_valid = _spans(x, root, node_value, size, depth, bound, length,
                                                   lay.valid, config.terms)

    # Step 4: normalization over the group's spans, each span once; tokens take their span's.
    adv = _span_zscore(raw, span_valid) if config.normalize == "span_zscore" else raw
    adv = adv.masked_fill(~span_valid, 0.0)
    cut = torch.where(internal[:, :, :-1], start[:, :, 1:], t)  # [G, M, J] next span starts
    advantages = _spread(lay.by_row(adv).float(), lay.by_row(cut), completion_mask)

    stats = _stats(lay, bound, member, first_member, node_value, root, reward_range, depth,
                   internal, start, end, span_valid, adv.float())
    if not return_tree:
        return advantages, stats
    first_row = lay.rows.gather(1, first_member.flatten(1)).view_as(first_member)  # [G, J, M]
    low = lay.by_group(rewards.double(), math.inf).amin(1)  # [G] what centred_rewards took off
    tree = LeafTree(
        group_index=lay.index,
        depth=lay.by_row(depth),
        node_id=lay.by_row(torch.where(member, first_row, -1).transpose(1, 2)),
        node_value=lay.by_row((node_value + low[:, None, None]).masked_fill(~member, math.nan).transpose(1, 2)),
        node_size=lay.by_row((size * member).transpose(1, 2)),
        root_value=root + low,
        span_start=lay.by_row(start), span_end=lay.by_row(end), span_value=lay.by_row(raw),
        span_advantage=lay.by_row(adv), span_valid=lay.by_row(span_valid),
    )
    return advantages, stats, tree


def _spans(x, root, node_value, size, depth, bound, length, valid, terms):
    """Spec step 3: raw span credit and extent, [G, M, S] each (S = J + 1).

    x [G, M] rewards, root [G], node_value / size [G, J, M], depth / length / valid [G, M],
    bound [G, J]. Span s < depth is the row's node at boundary s, span == depth its tail.
    -> raw, start, end, internal (s < depth), span_valid (exists: start < end, s <= depth)
    """
    g, m = x.shape
    j_count = bound.shape[1]
    s_idx = torch.arange(j_count + 1, device=x.device)  # [S]
    internal = s_idx < depth[:, :, None]  # [G, M, S]
    value = torch.where(internal, torch.cat([node_value.transpose(1, 2), x[:, :, None]], 2),
                        x[:, :, None])  # [G, M, S]: a tail is a leaf of value r and n = 1
    count = torch.where(internal, torch.cat([size.transpose(1, 2), size.new_ones(g, m, 1)], 2), 1)
    parent = torch.cat([root[:, None, None].expand(g, m, 1), value[:, :, :-1]], 2)
    ga, la = value - root[:, None, None], value - parent
    credit = {"both": ga + la, "global": ga, "local": la}[terms]
    raw = credit / count.sqrt()
    q = bound.clamp(min=0)[:, None, :].expand(g, m, j_count)  # [G, M, J]
    zero = q.new_zeros(g, m, 1)
    start = torch.cat([zero, q], 2)
    end = torch.where(internal, torch.cat([torch.minimum(q, length[:, :, None]), zero], 2),
                      length[:, :, None])
    span_valid = (s_idx <= depth[:, :, None]) & (start < end) & valid[:, :, None]
    return raw, start, end, internal, span_valid


def _spread(span_adv: torch.Tensor, cut: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Token advantages [N, T]: token t takes span #{b : cut_b <= t}; 0 on padding.

    span_adv [N, S] float32, cut [N, J] ascending span starts (T where a row has no such span).
    """
    n, t = mask.shape
    pos = torch.arange(1, t + 1, device=mask.device, dtype=torch.float32)  # t + 1
    cut = cut.float()
    span = torch.zeros(n, t, device=mask.device)
    step = torch.empty_like(span)
    for b in range(cut.shape[1]):  # a loop over boundary rounds: + 1 from the b-th cut on
        span += torch.sub(pos, cut[:, b:b + 1], out=step).clamp_(0, 1)
    return span_adv.gather(1, span.long()).mul_(mask)


def _span_zscore(raw: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """z-score [G, M, S] spans over each group's valid spans (std with n - 1, floor eps);
    a group with fewer than two spans gets 0."""
    cnt = valid.sum((1, 2))  # [G]
    mean = (raw * valid).sum((1, 2)) / cnt.clamp(min=1)
    dev = (raw - mean[:, None, None]) * valid
    std = ((dev**2).sum((1, 2)) / (cnt - 1).clamp(min=1)).sqrt()
    z = dev / std.clamp(min=ZSCORE_EPS)[:, None, None]
    return z * (cnt >= 2)[:, None, None]


def _stats(lay, bound, member, first_member, node_value, root, reward_range, depth, internal,
           start, end, span_valid, adv32) -> LeafStats:
    g, m = lay.valid.shape
    has_bound = bound >= 0  # [G, J]
    fired = member.any(2) & has_bound  # [G, J]
    parent = torch.cat([root[:, None, None].expand(g, 1, m), node_value[:, :-1]], 1)  # [G, J, M]
    changes = (node_value - parent).abs() > USABLE_RTOL * reward_range[:, None, None]
    usable = (member & changes).any(2) & has_bound
    leader = member & (first_member == torch.arange(m, device=member.device))  # one per node
    span_len = (end - start) * span_valid  # [G, M, S]
    counts = torch.stack([
        has_bound.sum(), fired.sum(), usable.sum(), leader.sum(), depth.sum(),
        (span_len * internal).sum(), span_valid.sum(), (span_len * (adv32 != 0)).sum(),
        (reward_range == 0).sum(), span_len.sum(),
    ]).tolist()  # one host sync for all statistics
    n_bound, fired_n, usable_n, nodes, depth_sum, shared, spans, nonzero, equal, tokens = counts
    rows, groups = lay.index.numel(), max(g, 1)
    values = [n_bound / groups, fired_n / max(n_bound, 1), usable_n / max(n_bound, 1),
              nodes / groups, depth_sum / rows, shared / max(tokens, 1), spans / rows,
              nonzero / max(tokens, 1), equal / groups]
    return LeafStats(bound, lay.ids, fired, usable, *values)


def grpo_advantages(rewards: torch.Tensor, group_ids: torch.Tensor,
                    std_floor: float = 1 / 3) -> torch.Tensor:
    """GRPO baseline: (r - mean) / (max(std, std_floor) + 1e-6) within each group.

    Shapes: rewards [N] float, group_ids [N] int -> advantages [N] float32.
    std is unbiased (n - 1); a group of one response gets 0. std_floor = 1/3 is the
    authors' baseline; 0 gives plain GRPO.
    """
    check_tensor("rewards", rewards, "float", ndim=1)
    if rewards.numel() == 0:
        raise ValueError("rewards: empty batch (N = 0 rows)")
    check_tensor("group_ids", group_ids, "int", shape=tuple(rewards.shape))
    check_same_device(rewards=rewards, group_ids=group_ids)
    if not (isinstance(std_floor, (int, float)) and std_floor >= 0):
        raise ValueError(f"std_floor must be a number >= 0, got {std_floor!r}")
    check_finite("rewards", rewards)
    lay = group_layout(group_ids)
    dev, scale = grpo_terms(rewards, lay, std_floor)
    return lay.by_row(dev / scale[:, None]).float()
