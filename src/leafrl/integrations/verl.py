"""LEAF in verl, written against verl 0.9's batch layout (verl is not a dependency: it does not
install beside leafrl's pins on the project's machines, so this adapter is tested on that layout
reproduced, not inside a verl run; examples/verl/ has the launch recipe).

verl's registered advantage estimators receive the token-level rewards, the response mask and
the group index, but not the response tokens or log-probs that LEAF's trees and boundaries need.
So the adapter replaces verl's ``compute_advantage(data, adv_estimator, ...)`` (in
``verl.trainer.ppo.ray_trainer``), which gets the whole batch: for ``algorithm.adv_estimator=leaf``
it reads

    data.batch["responses"]            [bs, T] token ids (right-padded)
    data.batch["response_mask"]        [bs, T] 1 on response tokens
    data.batch["old_log_probs"]        [bs, T] the rollout policy's log-probs (surprisal = -these)
    data.batch["token_level_rewards"]  [bs, T] (summed over T: the outcome reward)
    data.non_tensor_batch["uid"]       [bs] the prompt of each row (any hashable ids)

and writes ``data.batch["advantages"]`` and ``["returns"]`` ([bs, T], 0 off the mask); every other
estimator goes to verl's own function. ``install()`` puts it in place; it must run in the process
that runs ``RayPPOTrainer.fit`` (verl's TaskRunner), as the recipe does.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
import torch

from leafrl.advantages import LeafConfig, leaf_advantages

NAME = "leaf"


def leaf_advantage(responses: torch.Tensor, response_mask: torch.Tensor, old_log_probs: torch.Tensor,
                   token_level_rewards: torch.Tensor, index: Any, config: LeafConfig = LeafConfig(),
                   ) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """(advantages [bs, T], returns [bs, T], LEAF's statistics) from verl's tensors (module docstring)."""
    groups = torch.as_tensor(np.unique(np.asarray(index, dtype=object).astype(str), return_inverse=True)[1],
                             device=responses.device).reshape(-1)
    mask = response_mask.bool()
    adv, stats = leaf_advantages(responses, mask, -old_log_probs.float(), token_level_rewards.float().sum(-1),
                                 groups, config)
    return adv, adv.clone(), stats.as_dict()


def compute_advantage(data: Any, adv_estimator: Any, *args: Any, original: Any = None,
                      leaf_config: LeafConfig = LeafConfig(), **kwargs: Any) -> Any:
    """verl's ``compute_advantage`` with "leaf" added; ``original`` is verl's own, for the rest."""
    if getattr(adv_estimator, "value", adv_estimator) != NAME:
        return original(data, adv_estimator, *args, **kwargs)
    batch = data.batch
    adv, returns, _ = leaf_advantage(batch["responses"], batch["response_mask"], batch["old_log_probs"],
                                     batch["token_level_rewards"], data.non_tensor_batch["uid"], leaf_config)
    batch["advantages"], batch["returns"] = adv, returns
    return data


def install(config: LeafConfig = LeafConfig()) -> None:
    """Make ``algorithm.adv_estimator=leaf`` compute LEAF's advantages in this process's verl."""
    import verl.trainer.ppo.ray_trainer as ray_trainer

    if isinstance(ray_trainer.compute_advantage, partial):  # installed already
        return
    ray_trainer.compute_advantage = partial(compute_advantage, original=ray_trainer.compute_advantage,
                                            leaf_config=config)
