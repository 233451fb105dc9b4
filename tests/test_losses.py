"""leafrl.losses: hand-derived gradients, clipping and KL at their boundaries, aggregation modes."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from leafrl.losses import loss_normalizer, policy_loss

LOG_HALF = math.log(0.5)


def grad_of(logp, old, adv, mask, ref=None, **kw):
    logp = torch.tensor(logp, dtype=torch.float64, requires_grad=True)
    loss, metrics = policy_loss(logp, torch.tensor(old, dtype=torch.float64),
                                torch.tensor(adv, dtype=torch.float64), torch.tensor(mask),
                                None if ref is None else torch.tensor(ref, dtype=torch.float64), **kw)
    loss.backward()
    return loss.item(), logp.grad.flatten().tolist(), metrics


def test_unclipped_gradient_is_minus_ratio_times_advantage_over_tokens():
    # rho = 1 on both tokens; loss = -(A1 + A2)/2 -> d/dlogp_t = -rho_t A_t / 2
    loss, grad, m = grad_of([[LOG_HALF, LOG_HALF]], [[LOG_HALF, LOG_HALF]], [[1.0, -2.0]],
                            [[True, True]], beta=0.0)
    assert loss == pytest.approx(0.5)
    assert grad == pytest.approx([-0.5, 1.0])
    assert m["clip_frac"] == 0 and m["ratio_mean"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    "ratio, adv, expected_grad, clipped",
    [
        (1.5, 1.0, 0.0, True),  # above 1 + eps with A > 0: min picks the constant 1.2 A
        (1.5, -1.0, 0.75, False),  # above with A < 0: min picks 1.5 A, grad -rho A / 2 = 0.75
        (0.5, -1.0, 0.0, True),  # below 1 - eps with A < 0: clipped
        (0.5, 1.0, -0.25, False),  # below with A > 0: unclipped, -0.5 * 1 / 2
        (1.2, 1.0, -0.6, False),  # exactly at the bound: both branches equal, gradient flows
    ],
)
def test_clipping_at_its_boundaries(ratio, adv, expected_grad, clipped):
    # second token is padding and must not matter
    old = [[LOG_HALF, 0.0]]
    logp = [[LOG_HALF + math.log(ratio), 5.0]]
    _, grad, m = grad_of(logp, old, [[adv, 100.0]], [[True, False]], beta=0.0)
    # one real token: seq-mean divides by 1; d(-rho A)/dlogp = -rho A
    assert grad[0] == pytest.approx(2 * expected_grad, abs=1e-12)
    assert grad[1] == 0.0
    assert m["clip_frac"].item() == (1.0 if clipped else 0.0)


def test_asymmetric_clip_bounds():
    # rho = 1.25: inside [0.8, 1.28] with clip_high 0.28, outside with the default 0.2
    logp, old = [[math.log(1.25)]], [[0.0]]
    _, grad, _ = grad_of(logp, old, [[1.0]], [[True]], beta=0.0, clip_high=0.28)
    assert grad == pytest.approx([-1.25])
    _, grad, _ = grad_of(logp, old, [[1.0]], [[True]], beta=0.0)
    assert grad == pytest.approx([0.0])


def test_k3_kl_value_and_gradient():
    # d = ref - logp = ln 2: kl = e^d - d - 1 = 1 - ln 2; dkl/dlogp = 1 - e^d = -1
    logp = [[LOG_HALF]]
    ref = [[LOG_HALF + math.log(2.0)]]
    loss, grad, m = grad_of(logp, logp, [[0.0]], [[True]], ref, beta=0.1)
    assert m["kl"].item() == pytest.approx(1 - math.log(2))
    assert loss == pytest.approx(0.1 * (1 - math.log(2)))
    assert grad == pytest.approx([-0.1])
    # equal policies: kl 0 and no gradient from it
    loss, grad, m = grad_of(logp, logp, [[0.0]], [[True]], logp, beta=0.1)
    assert loss == 0.0 and grad == [0.0] and m["kl"].item() == 0.0


@pytest.mark.parametrize(
    "agg, kw, expected",
    [
        # per-token loss -A (rho = 1, no KL): row 0 has 1 token (-1), row 1 has 3 (-2, -3, -4)
        ("seq_mean_token_mean", {}, (1.0 + 3.0) / 2),  # mean of row means 1 and 3
        ("token_mean", {}, (1 + 2 + 3 + 4) / 4),
        ("dr_grpo", {"max_tokens": 5}, (1 + 2 + 3 + 4) / (2 * 5)),
    ],
)
def test_aggregation_modes(agg, kw, expected):
    adv = [[-1.0, 9.0, 9.0], [-2.0, -3.0, -4.0]]
    mask = [[True, False, False], [True, True, True]]
    zeros = [[0.0] * 3] * 2
    loss, _, _ = grad_of(zeros, zeros, adv, mask, beta=0.0, agg=agg, **kw)
    assert loss == pytest.approx(expected)


def test_per_response_advantages_broadcast():
    zeros = torch.zeros(2, 3, dtype=torch.float64)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    a, _ = policy_loss(zeros, zeros, torch.tensor([1.0, -2.0], dtype=torch.float64), mask, beta=0.0)
    b, _ = policy_loss(zeros, zeros, torch.tensor([[1.0] * 3, [-2.0] * 3], dtype=torch.float64),
                       mask, beta=0.0)
    assert a.item() == b.item() == pytest.approx((-1.0 + 2.0) / 2)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), agg=st.sampled_from(["seq_mean_token_mean", "token_mean", "dr_grpo"]))
def test_micro_batches_with_normalizer_equal_the_full_batch(data, agg):
    # (d) gradient accumulation over micro-batches is exact when given the batch normalizer
    n, t = data.draw(st.integers(2, 6)), data.draw(st.integers(1, 5))
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 10_000)))
    lengths = torch.randint(0, t + 1, (n,), generator=gen)
    mask = torch.arange(t) < lengths[:, None]
    old = -torch.rand(n, t, generator=gen, dtype=torch.float64)
    ref = -torch.rand(n, t, generator=gen, dtype=torch.float64)
    adv = torch.randn(n, t, generator=gen, dtype=torch.float64)
    base = (old + 0.3 * torch.randn(n, t, generator=gen, dtype=torch.float64)).requires_grad_()
    kw = {"agg": agg, "max_tokens": t}
    full, _ = policy_loss(base, old, adv, mask, ref, **kw)
    (g_full,) = torch.autograd.grad(full, base)
    norm = {"seq_mean_token_mean": float((lengths > 0).sum().clamp(min=1)),
            "token_mean": float(mask.sum().clamp(min=1)), "dr_grpo": float(n * t)}[agg]
    assert loss_normalizer(mask, agg, t) == norm  # the trainer's one normalizer, by hand
    cut = data.draw(st.integers(1, n - 1))
    total = sum(policy_loss(base[s], old[s], adv[s], mask[s], ref[s], normalizer=norm, **kw)[0]
                for s in (slice(0, cut), slice(cut, n)))
    (g_micro,) = torch.autograd.grad(total, base)
    assert total.item() == pytest.approx(full.item(), abs=1e-12)
    torch.testing.assert_close(g_micro, g_full)


def test_approx_kl_is_k3_of_old_against_new():
    # ratios e^0.5 and e^-0.5 on real tokens: k3 = (r - 1) - log r, mean over the two
    logp = torch.tensor([[0.5, -0.5, 9.0]], dtype=torch.float64)
    mask = torch.tensor([[True, True, False]])
    _, m = policy_loss(logp, torch.zeros_like(logp), torch.ones(1, 3, dtype=torch.float64), mask, beta=0.0)
    expected = ((math.exp(0.5) - 1 - 0.5) + (math.exp(-0.5) - 1 + 0.5)) / 2
    assert m["approx_kl"].item() == pytest.approx(expected)


def test_loss_normalizer_checks_its_arguments():
    mask = torch.tensor([[True, False], [False, False]])
    assert loss_normalizer(mask, "seq_mean_token_mean") == 1.0 and loss_normalizer(mask, "token_mean") == 1.0
    assert loss_normalizer(mask, "dr_grpo", 5) == 10.0
    with pytest.raises(ValueError, match="max_tokens"):
        loss_normalizer(mask, "dr_grpo")
    with pytest.raises(ValueError, match="agg"):
        loss_normalizer(mask, "sum")


def test_metrics_report_ratio_range_on_real_tokens_only():
    logp = torch.tensor([[0.1, -0.3, 50.0]], dtype=torch.float64)
    mask = torch.tensor([[True, True, False]])
    _, m = policy_loss(logp, torch.zeros_like(logp), torch.ones(1, 3, dtype=torch.float64), mask,
                       beta=0.0)
    assert m["ratio_max"].item() == pytest.approx(math.exp(0.1))
    assert m["ratio_min"].item() == pytest.approx(math.exp(-0.3))
    assert all(not v.requires_grad for v in m.values())


BAD = [
    ("logprobs", {"logprobs": torch.zeros(2)}),
    ("logprobs", {"logprobs": torch.zeros(0, 3)}),
    ("old_logprobs", {"old_logprobs": torch.zeros(2, 4)}),
    ("advantages", {"advantages": torch.zeros(3)}),
    ("advantages", {"advantages": torch.zeros(2, 3, dtype=torch.long)}),
    ("mask", {"mask": torch.ones(2, 3)}),
    ("ref_logprobs", {"ref_logprobs": None}),
    ("ref_logprobs", {"ref_logprobs": torch.zeros(3, 3)}),
    ("agg", {"agg": "sum"}),
    ("max_tokens", {"agg": "dr_grpo"}),
    ("beta", {"beta": -0.1}),
    ("clip_low", {"clip_low": 1.0}),
]


@pytest.mark.parametrize("name, change", BAD)
def test_bad_input_names_the_argument(name, change):
    kw = dict(logprobs=torch.zeros(2, 3), old_logprobs=torch.zeros(2, 3), advantages=torch.zeros(2, 3),
              mask=torch.ones(2, 3, dtype=torch.bool), ref_logprobs=torch.zeros(2, 3))
    kw.update(change)
    with pytest.raises(ValueError, match=name):
        policy_loss(**kw)


def test_beta_zero_needs_no_reference():
    loss, m = policy_loss(torch.zeros(1, 2), torch.zeros(1, 2), torch.ones(1, 2),
                          torch.ones(1, 2, dtype=torch.bool), beta=0.0)
    assert loss.item() == -1.0 and m["kl"].item() == 0.0
