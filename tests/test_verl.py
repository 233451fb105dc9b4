"""The verl adapter on verl's batch layout, reproduced (verl itself is not installed here): the
advantages are LEAF's on the same rows, whatever the uids and their order; other estimators go to
verl's own compute_advantage; install() patches verl's module once."""

import sys
import types

import numpy as np
import pytest
import torch

from leafrl.advantages import LeafConfig, leaf_advantages
from leafrl.integrations.verl import compute_advantage, install, leaf_advantage


def verl_batch(seed=0, n=12, t=9, k=4):
    """A DataProto-like batch: .batch of [bs, T] tensors, .non_tensor_batch["uid"] strings, rows
    of a group not adjacent (verl balances rows across workers)."""
    gen = torch.Generator().manual_seed(seed)
    base = torch.randint(0, 40, (1, t), generator=gen).repeat(n, 1)
    own = torch.randint(0, 40, (n, t), generator=gen)
    ids = torch.where(torch.arange(t) < torch.randint(1, t, (n, 1), generator=gen), base, own)
    mask = (torch.arange(t) < torch.randint(3, t + 1, (n, 1), generator=gen)).long()
    scores = torch.rand(n, generator=gen)
    rewards = torch.zeros(n, t)
    rewards[torch.arange(n), mask.sum(1) - 1] = scores  # the outcome reward on the last response token
    uid = np.array([f"prompt-{g}" for g in torch.randperm(n, generator=gen).remainder(n // k).tolist()], dtype=object)
    batch = {"responses": ids, "response_mask": mask, "old_log_probs": -torch.rand(n, t, generator=gen),
             "token_level_rewards": rewards}
    return types.SimpleNamespace(batch=batch, non_tensor_batch={"uid": uid}), scores


def test_leaf_advantages_from_verls_layout_are_leafs_on_the_same_rows():
    data, scores = verl_batch()
    b = data.batch
    config = LeafConfig(fork_budget=3)
    adv, returns, stats = leaf_advantage(b["responses"], b["response_mask"], b["old_log_probs"],
                                         b["token_level_rewards"], data.non_tensor_batch["uid"], config)
    groups = torch.tensor([int(u.split("-")[1]) for u in data.non_tensor_batch["uid"]])
    want, _ = leaf_advantages(b["responses"], b["response_mask"].bool(), -b["old_log_probs"], scores, groups, config)
    torch.testing.assert_close(adv, want)
    torch.testing.assert_close(returns, adv)
    assert not adv[b["response_mask"] == 0].any() and stats["nodes_per_group"] > 0


def test_compute_advantage_fills_leaf_and_passes_other_estimators_to_verl():
    data, _ = verl_batch(seed=1)
    calls = []

    def verls_own(data, adv_estimator, *args, **kwargs):
        calls.append((adv_estimator, kwargs))
        return data

    out = compute_advantage(data, "leaf", gamma=1.0, lam=1.0, original=verls_own)
    assert out.batch["advantages"].shape == data.batch["responses"].shape and not calls
    compute_advantage(data, types.SimpleNamespace(value="grpo"), gamma=1.0, original=verls_own)
    assert calls and calls[0][1] == {"gamma": 1.0}


def test_install_patches_verls_compute_advantage_once(monkeypatch):
    ray_trainer = types.ModuleType("verl.trainer.ppo.ray_trainer")
    ray_trainer.compute_advantage = lambda data, adv_estimator, **kw: ("verl", adv_estimator)
    for name in ("verl", "verl.trainer", "verl.trainer.ppo"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "verl.trainer.ppo.ray_trainer", ray_trainer)
    sys.modules["verl.trainer.ppo"].ray_trainer = ray_trainer
    install()
    install()  # a second call keeps the first patch
    assert ray_trainer.compute_advantage(None, "grpo") == ("verl", "grpo")
    data, _ = verl_batch(seed=2)
    assert ray_trainer.compute_advantage(data, "leaf") is data and "advantages" in data.batch
    with pytest.raises(KeyError):
        ray_trainer.compute_advantage(types.SimpleNamespace(batch={}, non_tensor_batch={}), "leaf")
