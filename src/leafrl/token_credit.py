"""leafrl's own credit (``--algo leafrl``) and the segments of the LEAF prefix trie: pure tensor
code (torch only), beside the paper's estimators in ``leafrl.advantages``.

Notation used for tensor shapes: N rows (prompts x K responses), T completion tokens, G groups
(one per prompt), M slots per group, U distinct token ids in the batch.

- ``leafrl_advantages``: GRPO's advantage plus each token's ``token_contrast``, the mean reward
  of the group's other responses holding the same token against the others' mean
  (docs/method.md, "leafrl's own credit");
- ``trie_segments``: each token's run of tokens shared by the same set of its group's responses,
  the finest credit the group's prefix trie can tell apart (``leafrl credit``'s ceiling).
"""

from __future__ import annotations

import torch

from leafrl._groups import common_prefix, group_layout, grpo_terms, padded_tokens
from leafrl._validate import check_finite, check_prefix_mask, check_same_device, check_tensor


def trie_segments(completion_ids: torch.Tensor, completion_mask: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """Each token's segment along its row's path through its group's prefix trie.

    Shapes: completion_ids [N, T] int, completion_mask [N, T] bool (a prefix of each row),
    group_ids [N] int -> segments [N, T] long (0, 1, ... along each row; 0 on padding).

    A segment is a run of tokens shared by the same set of the group's rows: row i's segments
    start at 0 and at every lcp(i, j) > 0 of another row j (where j's path leaves i's). Nothing
    the group's rewards say tells apart the tokens of one segment.
    """
    check_tensor("completion_ids", completion_ids, "int", ndim=2)
    check_tensor("completion_mask", completion_mask, "bool", shape=tuple(completion_ids.shape))
    check_tensor("group_ids", group_ids, "int", shape=(completion_ids.shape[0],))
    check_prefix_mask("completion_mask", completion_mask)
    n, t = completion_ids.shape
    if n == 0:
        raise ValueError("completion_ids: empty batch (N = 0 rows)")
    if t == 0:
        return completion_ids.new_zeros(n, 0)
    lay = group_layout(group_ids)
    tok = lay.by_group(padded_tokens(completion_ids, completion_mask), -1.0)  # [G, M, T]
    g, m, _ = tok.shape
    lcp = common_prefix(tok, lay.by_group(completion_mask.sum(1), 0))  # [G, M, M]
    other = lay.valid[:, :, None] & lay.valid[:, None, :] & ~torch.eye(m, dtype=torch.bool, device=tok.device)
    cut = torch.zeros(g, m, t + 1, dtype=torch.long, device=tok.device)
    cut.scatter_(2, torch.where(other, lcp, 0), 1)  # a cut where another row leaves (0: none)
    cut[:, :, 0] = 0
    return lay.by_row(cut.cumsum(2)[:, :, :t]).masked_fill(~completion_mask, 0)


def token_contrast(completion_ids: torch.Tensor, completion_mask: torch.Tensor, rewards: torch.Tensor,
                   group_ids: torch.Tensor) -> torch.Tensor:
    """What the rest of the group says about each token: the mean reward of the OTHER rows of
    the group whose response holds the same token id (anywhere), minus the mean reward of all the
    other rows. A token no other row holds has only its own row's result to go by: r_i minus the
    other rows' mean. 0 on padding and in a group of one.

    Shapes: completion_ids [N, T] int, completion_mask [N, T] bool (a prefix of each row),
    rewards [N] float, group_ids [N] int -> contrast [N, T] float64.

    A token every row holds gets 0; a token held by some others is credited by how those others
    did, whatever its own row's reward (leave-one-out). Two sorts of the batch's real tokens
    (``torch.unique``) find the rows holding each (group, token id): memory and time grow with
    the tokens, whatever the vocabulary.
    """
    check_tensor("completion_ids", completion_ids, "int", ndim=2)
    n, t = completion_ids.shape
    if n == 0:
        raise ValueError("completion_ids: empty batch (N = 0 rows)")
    check_tensor("completion_mask", completion_mask, "bool", shape=(n, t))
    check_tensor("rewards", rewards, "float", shape=(n,))
    check_tensor("group_ids", group_ids, "int", shape=(n,))
    check_same_device(completion_ids=completion_ids, completion_mask=completion_mask, rewards=rewards,
                      group_ids=group_ids)
    check_prefix_mask("completion_mask", completion_mask)
    check_finite("rewards", rewards)
    device = completion_ids.device
    lay = group_layout(group_ids)
    r = rewards.double()
    contrast = torch.zeros(n, t, dtype=torch.float64, device=device)
    if not completion_mask.any():
        return contrast
    row = torch.arange(n, device=device)[:, None].expand(n, t)[completion_mask]  # [n_real]
    group = lay.index[row]
    ids = completion_ids[completion_mask]
    # each (group, token id) once: key u; then each (row, u) once: the rows holding u
    _, key = torch.unique(group * (int(ids.max()) + 1) + ids, return_inverse=True)  # [n_real] in [0, U)
    u = int(key.max()) + 1
    held = torch.unique(row * u + key)  # [P] distinct (row, key) pairs
    holding_row, holding_key = held // u, held % u
    rows_holding = torch.bincount(holding_key, minlength=u).double()  # [U]
    reward_holding = torch.zeros(u, dtype=torch.float64, device=device).index_add_(0, holding_key, r[holding_row])
    g = lay.ids.numel()
    size = torch.bincount(lay.index, minlength=g).double()  # [G]
    total = torch.zeros(g, dtype=torch.float64, device=device).index_add_(0, lay.index, r)  # [G]
    others_holding = rows_holding[key] - 1.0  # [n_real]: the row itself holds it
    mean_holding = (reward_holding[key] - r[row]) / others_holding.clamp(min=1.0)
    mean_others = (total[group] - r[row]) / (size[group] - 1.0).clamp(min=1.0)
    alone = torch.where(size[group] > 1, r[row] - mean_others, 0.0)
    contrast[completion_mask] = torch.where(others_holding > 0, mean_holding - mean_others, alone)
    return contrast


def leafrl_advantages(completion_ids: torch.Tensor, completion_mask: torch.Tensor, rewards: torch.Tensor,
                      group_ids: torch.Tensor, std_floor: float = 1 / 3) -> torch.Tensor:
    """leafrl's credit (``--algo leafrl``): GRPO's response advantage plus each token's
    ``token_contrast``, on GRPO's scale:
    A_it = (r_i - mean + contrast_it) / (max(std, std_floor) + 1e-6) within each group.

    Shapes: completion_ids [N, T] int, completion_mask [N, T] bool, rewards [N] float,
    group_ids [N] int -> advantages [N, T] float32, 0 on padding.

    Every token of a response shares its reward's advantage, as in GRPO; within the response a
    token is credited above or below that by how the group's other responses that hold it did.
    Same K responses, no extra decoding, no critic.
    """
    contrast = token_contrast(completion_ids, completion_mask, rewards, group_ids)
    lay = group_layout(group_ids)
    dev, scale = grpo_terms(rewards, lay, std_floor)  # [G, M], [G]
    out = (lay.by_row(dev)[:, None] + contrast) / scale[lay.index, None]
    return out.masked_fill_(~completion_mask, 0.0).float()
