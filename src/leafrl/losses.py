"""The policy loss shared by LEAF and GRPO: pure tensor code (torch only).

Notation used for tensor shapes:
    N rows (prompts x K responses), T completion tokens.

Per token (spec, "Policy loss"):
    rho = exp(logp_new - logp_old)
    l_t = -min(rho * A_t, clip(rho, 1 - clip_low, 1 + clip_high) * A_t) + beta * kl_t
    kl_t = exp(d) - d - 1,  d = logp_ref - logp_new      (k3 estimator, >= 0)
then aggregated over tokens by ``agg``:
    "seq_mean_token_mean"  mean over the tokens of each sequence, then over sequences (paper)
    "token_mean"           mean over all tokens of the batch (DAPO)
    "dr_grpo"              sum over all tokens / (N * max_tokens) (Dr. GRPO's constant)
"""

from __future__ import annotations

import torch

from leafrl._validate import check_choice, check_same_device, check_tensor

AGGREGATIONS = ("seq_mean_token_mean", "token_mean", "dr_grpo")


def loss_normalizer(mask: torch.Tensor, agg: str, max_tokens: int | None = None) -> float:
    """The denominator of ``agg``'s final mean over the rows of ``mask`` [N, T] bool: the number of
    sequences with tokens ("seq_mean_token_mean"), of real tokens ("token_mean"), or N * max_tokens
    ("dr_grpo"); at least 1. Pass a whole batch's to each of its micro-batches' ``policy_loss``
    calls and the accumulated gradient is the whole batch's."""
    check_tensor("mask", mask, "bool", ndim=2)
    check_choice("agg", agg, AGGREGATIONS)
    if agg == "dr_grpo":
        if max_tokens is None or max_tokens < 1:
            raise ValueError(f"max_tokens: agg='dr_grpo' needs the generation budget >= 1, got {max_tokens}")
        return float(len(mask) * max_tokens)
    count = (mask.sum(1) > 0).sum() if agg == "seq_mean_token_mean" else mask.sum()
    return float(count.clamp(min=1))


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    ref_logprobs: torch.Tensor | None = None,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    beta: float = 0.02,
    agg: str = "seq_mean_token_mean",
    max_tokens: int | None = None,
    normalizer: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped surrogate with a k3 KL penalty to a reference policy.

    Shapes:
        logprobs      [N, T] float, log-probs of the sampled tokens under the policy (grad)
        old_logprobs  [N, T] float, the same under the policy that sampled them (no grad)
        advantages    [N, T] per token (LEAF) or [N] per response (GRPO, broadcast)
        mask          [N, T] bool, True on real tokens
        ref_logprobs  [N, T] float or None; required when beta > 0
        -> loss: scalar; metrics: dict of detached scalars

    normalizer: the denominator of the final mean (``loss_normalizer`` of the whole batch, to
    make gradient accumulation over micro-batches exact); by default this call's own.
    max_tokens (the generation budget) is required for "dr_grpo". Sequences without tokens
    contribute nothing to any mode. Metrics: clip fractions, the k3 KL to the reference, and
    ``approx_kl``, the k3 estimate of KL(old || new), with the ratio's mean, min and max.
    """
    check_tensor("logprobs", logprobs, "float", ndim=2)
    n, t = logprobs.shape
    if n == 0 or t == 0:
        raise ValueError(f"logprobs: empty batch of shape {[n, t]}")
    check_tensor("old_logprobs", old_logprobs, "float", shape=(n, t))
    check_tensor("mask", mask, "bool", shape=(n, t))
    check_tensor("advantages", advantages, "float")
    if advantages.shape not in ((n, t), (n,)):
        raise ValueError(f"advantages: expected shape [{n}, {t}] or [{n}], got {list(advantages.shape)}")
    check_choice("agg", agg, AGGREGATIONS)
    if not (0 <= clip_low < 1 and clip_high >= 0):
        raise ValueError(f"clip_low must be in [0, 1) and clip_high >= 0, got {clip_low}, {clip_high}")
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    if beta > 0 and ref_logprobs is None:
        raise ValueError("ref_logprobs: required when beta > 0 (pass beta=0 to train without KL)")
    if ref_logprobs is not None:
        check_tensor("ref_logprobs", ref_logprobs, "float", shape=(n, t))
    check_same_device(logprobs=logprobs, old_logprobs=old_logprobs, advantages=advantages, mask=mask)

    adv = advantages[:, None].expand(n, t) if advantages.ndim == 1 else advantages
    ratio = torch.exp(logprobs - old_logprobs)  # [N, T]
    clipped = ratio.clamp(1 - clip_low, 1 + clip_high)
    per_token = -torch.minimum(ratio * adv, clipped * adv)  # [N, T]
    if ref_logprobs is not None:
        d = ref_logprobs - logprobs
        kl = torch.exp(d) - d - 1  # [N, T] k3, >= 0
    else:
        kl = torch.zeros_like(logprobs)
    if beta > 0:
        per_token = per_token + beta * kl

    maskf = mask.to(per_token.dtype)
    if agg == "seq_mean_token_mean":
        total = ((per_token * maskf).sum(1) / maskf.sum(1).clamp(min=1)).sum()
    else:
        total = (per_token * maskf).sum()
    own = loss_normalizer(mask, agg, max_tokens)  # also checks max_tokens for "dr_grpo"
    loss = total / (own if normalizer is None else normalizer)

    with torch.no_grad():
        n_tok = maskf.sum().clamp(min=1)
        low = (ratio < 1 - clip_low) & (adv < 0) & mask  # gradient cut by the lower clip
        high = (ratio > 1 + clip_high) & (adv > 0) & mask
        big, any_token = torch.finfo(ratio.dtype).max, mask.any()
        metrics = {
            "clip_frac": (low | high).sum() / n_tok,
            "clip_frac_low": low.sum() / n_tok,
            "clip_frac_high": high.sum() / n_tok,
            "kl": (kl * maskf).sum() / n_tok,
            "approx_kl": ((ratio - 1 - (logprobs - old_logprobs)) * maskf).sum() / n_tok,
            "ratio_mean": (ratio * maskf).sum() / n_tok,
            "ratio_min": torch.where(any_token, ratio.masked_fill(~mask, big).amin(), 1.0),
            "ratio_max": torch.where(any_token, ratio.masked_fill(~mask, -big).amax(), 1.0),
        }
    return loss, {k: v.detach() for k, v in metrics.items()}
