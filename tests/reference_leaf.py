"""Plain per-group, pure-Python reference for LEAF span advantages and the GRPO baseline.

Written literally from the algorithm as docs/method.md states it (Steps 1-4 and the GRPO
baseline, from the paper, arXiv 2606.07610) to check the vectorized torch implementation in
tests. No torch, no numpy: lists, dicts, math only. Points the paper leaves open are pinned as
follows:
  * surprisal ties: smaller position first; D uses the shortest NON-EMPTY response.
  * "trie" boundaries (extension): every distinct pairwise LCP >= max(1, min_prefix_tokens).
  * empty responses still take part in grouping (key = ()) and in the root mean V0.
"""
import math


def _lcp(a, b):
    n = 0
    while n < len(a) and n < len(b) and a[n] == b[n]:
        n += 1
    return n


def _boundaries(ys, ss, fork_budget, min_prefix_tokens, boundaries):
    lo = max(1, min_prefix_tokens)
    if boundaries == "trie":
        # extension: every distinct LCP(y_i, y_j), i != j, with p >= max(1, min_prefix_tokens)
        ps = {_lcp(ys[i], ys[j]) for i in range(len(ys)) for j in range(i + 1, len(ys))}
        return sorted(p for p in ps if p >= lo)
    if boundaries != "surprisal":
        raise ValueError(boundaries)
    # Step 1.1: "Candidates: every position t with max(1, min_prefix_tokens) <= t < L_k"
    cands = [(s[t], t) for y, s in zip(ys, ss) for t in range(lo, len(y))]
    nonempty = [len(y) for y in ys if len(y) > 0]
    if not cands or not nonempty:
        return []
    # Step 1.2: "Sort candidates by surprisal, highest first" (ties: smaller t first)
    cands.sort(key=lambda c: (-c[0], c[1]))
    # Step 1.3: "D = max(2, floor(L_min / (B + 1)))"
    D = max(2, min(nonempty) // (fork_budget + 1))
    # Step 1.4: "accept t when |t - t'| >= D for every accepted t'; stop at B accepted"
    accepted = []
    for _, t in cands:
        if len(accepted) >= fork_budget:
            break
        if all(abs(t - a) >= D for a in accepted):
            accepted.append(t)
    return sorted(accepted)


def _group(ys, rs, ss, fork_budget, min_prefix_tokens, terms, normalize, boundaries):
    """One group (local row indices). Returns (bounds, nodes, spans per row, depth per row)."""
    K = len(ys)
    bounds = _boundaries(ys, ss, fork_budget, min_prefix_tokens, boundaries)
    # Step 2: "The root v0 has V(v0) = mean of all K rewards"
    V0 = sum(rs) / K
    # Step 2: "partition the K responses by exact equality of y_k[:p]"; classes >= 2 are nodes
    nodes = []  # (p, members, V, n)
    paths = [[] for _ in range(K)]  # per response: ascending list of node indices
    for p in bounds:
        classes = {}
        for k in range(K):
            classes.setdefault(tuple(ys[k][:min(p, len(ys[k]))]), []).append(k)
        for members in sorted(classes.values()):
            if len(members) >= 2:
                V = sum(rs[m] for m in members) / len(members)
                for m in members:
                    paths[m].append(len(nodes))
                nodes.append((p, members, V, len(members)))
    # Step 3: span advantages from descendant rewards
    spans = [[] for _ in range(K)]  # per response: [start, end, raw]
    for k in range(K):
        L, r = len(ys[k]), rs[k]
        q_prev, V_prev = 0, V0
        for ni in paths[k]:
            q, _, V, n = nodes[ni]
            # "internal span [q_{i-1}, min(q_i, L_k)): A = (GA + LA) / sqrt(n(v_i))"
            GA, LA = V - V0, V - V_prev
            num = {"both": GA + LA, "global": GA, "local": LA}[terms]
            if q_prev < min(q, L):  # "Empty spans (start >= end) do not exist"
                spans[k].append([q_prev, min(q, L), num / math.sqrt(n)])
            q_prev, V_prev = q, V
        # "tail span [q_j, L_k): A = (r_k - V(v0)) + (r_k - V(v_j))" (no node: 2 (r_k - V0))
        ga, la = r - V0, r - V_prev
        tail = {"both": ga + la, "global": ga, "local": la}[terms]
        if q_prev < L:
            spans[k].append([q_prev, L, tail])
    # Step 4: "z-score the raw span advantages over all spans of the group, each span once"
    flat = [sp for row in spans for sp in row]
    if normalize == "span_zscore":
        if len(flat) <= 1:  # "A group with one span in total gets 0."
            finals = [0.0] * len(flat)
        else:
            m = sum(sp[2] for sp in flat) / len(flat)
            std = math.sqrt(sum((sp[2] - m) ** 2 for sp in flat) / (len(flat) - 1))
            finals = [(sp[2] - m) / max(std, 1e-6) for sp in flat]
    elif normalize == "none":
        finals = [sp[2] for sp in flat]
    else:
        raise ValueError(normalize)
    for sp, f in zip(flat, finals):
        sp.append(f)
    return bounds, nodes, spans, [len(p) for p in paths]


def reference_leaf(responses, surprisal, rewards, group_ids, fork_budget=2,
                   min_prefix_tokens=1, terms="both", normalize="span_zscore",
                   boundaries="surprisal"):
    """Returns (advantages per token of each row, same lengths as responses; info dict)."""
    N = len(responses)
    adv = [[0.0] * len(y) for y in responses]
    info = {"boundaries": {}, "nodes": {}, "spans": [[] for _ in range(N)], "depth": [0] * N}
    # each group independently; rows of a group in their original row order
    for gid in dict.fromkeys(group_ids):
        rows = [i for i in range(N) if group_ids[i] == gid]
        bounds, nodes, spans, depth = _group(
            [list(responses[i]) for i in rows], [float(rewards[i]) for i in rows],
            [[float(x) for x in surprisal[i]] for i in rows],
            fork_budget, min_prefix_tokens, terms, normalize, boundaries)
        info["boundaries"][gid] = bounds
        info["nodes"][gid] = [(p, sorted(rows[m] for m in mem), V, n) for p, mem, V, n in nodes]
        for k, i in enumerate(rows):
            info["depth"][i] = depth[k]
            info["spans"][i] = [tuple(sp) for sp in spans[k]]
            # "Every token of a span takes the span's value"
            for start, end, _, final in spans[k]:
                for t in range(start, end):
                    adv[i][t] = final
    return adv, info


def reference_grpo(rewards, group_ids, std_floor=1 / 3):
    """A_k = (r_k - mean(r)) / (max(std(r), std_floor) + 1e-6), unbiased std; singleton -> 0."""
    out = [0.0] * len(rewards)
    for gid in dict.fromkeys(group_ids):
        rows = [i for i in range(len(rewards)) if group_ids[i] == gid]
        if len(rows) < 2:
            continue
        rs = [float(rewards[i]) for i in rows]
        m = sum(rs) / len(rs)
        std = math.sqrt(sum((r - m) ** 2 for r in rs) / (len(rs) - 1))
        for i, r in zip(rows, rs):
            out[i] = (r - m) / (max(std, std_floor) + 1e-6)
    return out


def reference_trie_segments(responses, group_ids):
    """Per row, each token's segment along its path through its group's prefix trie: a new
    segment starts at every position p > 0 where another row of the group stops sharing the
    prefix (p = LCP of the two rows, below the row's length)."""
    out = []
    for i, y in enumerate(responses):
        cuts = {_lcp(y, responses[j]) for j in range(len(responses)) if j != i and group_ids[j] == group_ids[i]}
        out.append([sum(1 for c in cuts if 0 < c <= t) for t in range(len(y))])
    return out


def reference_leafrl(responses, rewards, group_ids, std_floor=1 / 3):
    """leafrl's credit, literally: token t of row i gets
    (r_i - mean(group) + contrast) / (max(std(group), std_floor) + 1e-6), where contrast is the mean
    reward of the group's OTHER rows holding token y_i[t] minus the mean reward of all other rows,
    or r_i minus that mean when no other row holds it. Returns (advantages, contrasts) per row."""
    adv = [[0.0] * len(y) for y in responses]
    contrast = [[0.0] * len(y) for y in responses]
    for gid in dict.fromkeys(group_ids):
        rows = [i for i in range(len(responses)) if group_ids[i] == gid]
        if len(rows) < 2:
            continue
        rs = {i: float(rewards[i]) for i in rows}
        m = sum(rs.values()) / len(rows)
        std = math.sqrt(sum((r - m) ** 2 for r in rs.values()) / (len(rows) - 1))
        for i in rows:
            others = [j for j in rows if j != i]
            mean_others = sum(rs[j] for j in others) / len(others)
            for t, token in enumerate(responses[i]):
                holding = [rs[j] for j in others if token in responses[j]]
                c = (sum(holding) / len(holding) if holding else rs[i]) - mean_others
                contrast[i][t] = c
                adv[i][t] = (rs[i] - m + c) / (max(std, std_floor) + 1e-6)
    return adv, contrast


if __name__ == "__main__":
    # Spec "Worked example": y1,y2,y3 share 3 tokens, y1,y2 share 7, y4 shares nothing.
    ys = [list(range(1, 11)),
          list(range(1, 8)) + [20, 21, 22],
          [1, 2, 3] + list(range(30, 37)),
          list(range(40, 50))]
    ss = [[5.0 if t in (3, 7) else 0.0 for t in range(10)] for _ in ys]
    rs = [0.6, 0.4, 0.2, 0.0]
    adv, info = reference_leaf(ys, ss, rs, [0] * 4, fork_budget=2)
    assert info["boundaries"] == {0: [3, 7]}, info["boundaries"]
    assert [(p, m, n) for p, m, _, n in info["nodes"][0]] == [(3, [0, 1, 2], 3), (7, [0, 1], 2)]
    assert info["depth"] == [2, 2, 1, 0]
    raw = [[0.11547, 0.21213, 0.4], [0.11547, 0.21213, 0.0], [0.11547, -0.3], [-0.6]]
    z = [[0.2823, 0.6019, 1.2231], [0.2823, 0.6019, -0.0994], [0.2823, -1.0913], [-2.0832]]
    spans = [[(0, 3), (3, 7), (7, 10)], [(0, 3), (3, 7), (7, 10)], [(0, 3), (3, 10)], [(0, 10)]]
    for k in range(4):
        got = info["spans"][k]
        assert [(a, b) for a, b, _, _ in got] == spans[k], got
        for (a, b, rv, fv), er, ez in zip(got, raw[k], z[k]):
            assert abs(rv - er) < 1e-4 and abs(fv - ez) < 1e-4, (k, rv, er, fv, ez)
            assert all(abs(adv[k][t] - fv) < 1e-12 for t in range(a, b))
    # the same tree read off the trie (pairwise LCPs 3 and 7; 0 dropped)
    adv_t, info_t = reference_leaf(ys, ss, rs, [0] * 4, boundaries="trie")
    assert info_t["boundaries"] == {0: [3, 7]} and adv_t == adv
    # groups need not be adjacent: interleave with a shifted copy of the example
    g_adv, _ = reference_leaf([ys[0], ys[0], ys[1], ys[1], ys[2], ys[2], ys[3], ys[3]],
                              [ss[0]] * 8, [0.6, 1.6, 0.4, 1.4, 0.2, 1.2, 0.0, 1.0],
                              [7, 9, 7, 9, 7, 9, 7, 9])
    assert all(abs(x - y) < 1e-9 for k in range(4) for a in (g_adv[2 * k], g_adv[2 * k + 1])
               for x, y in zip(a, adv[k]))
    grpo = reference_grpo(rs, [0] * 4)
    assert all(abs(g - e) < 1e-5 for g, e in zip(grpo, [0.9, 0.3, -0.3, -0.9])), grpo
    assert reference_grpo([0.5], [3]) == [0.0]
    print("worked example OK")
