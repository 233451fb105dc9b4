"""verl's PPO entry point with LEAF's advantages: ``algorithm.adv_estimator=leaf``.

Written for verl 0.9 (``pip install verl==0.9.1`` in its own environment, with leafrl); not run by
the project (verl does not install beside leafrl's pins on its machines). Launch as verl's own
``main_ppo``, with the usual Hydra overrides, for example GRPO's recipe with the estimator changed:

    python examples/verl/main_leaf.py algorithm.adv_estimator=leaf actor_rollout_ref.rollout.n=8 \\
        data.train_files=... actor_rollout_ref.model.path=... trainer.n_gpus_per_node=8

LEAF's options come from the environment (LEAF_FORK_BUDGET, LEAF_TERMS, LEAF_NORMALIZE,
LEAF_BOUNDARIES, LEAF_MIN_PREFIX_TOKENS), read in the TaskRunner process that runs the training
loop, where the adapter must be installed.
"""

import os

import hydra
import ray
from verl.trainer.main_ppo import TaskRunner, run_ppo

from leafrl.advantages import LeafConfig


def leaf_config() -> LeafConfig:
    given = {"fork_budget": int, "min_prefix_tokens": int, "terms": str, "normalize": str, "boundaries": str}
    return LeafConfig(**{name: kind(os.environ[f"LEAF_{name.upper()}"]) for name, kind in given.items()
                         if f"LEAF_{name.upper()}" in os.environ})


class LeafTaskRunner(TaskRunner):
    def run(self, config):
        from leafrl.integrations.verl import install

        install(leaf_config())
        return super().run(config)


@hydra.main(config_path="pkg://verl.trainer.config", config_name="ppo_trainer", version_base=None)
def main(config):
    run_ppo(config, task_runner_class=ray.remote(num_cpus=1)(LeafTaskRunner))


if __name__ == "__main__":
    main()
