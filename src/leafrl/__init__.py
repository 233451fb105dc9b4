"""leafrl: LEAF (Low-rank Exploration with Adaptive Forking) RL post-training for speech-aware LLMs.

The pure core (torch only) is re-exported here; everything else lives in its own module.
"""

from leafrl.advantages import LeafConfig, LeafStats, LeafTree, grpo_advantages, leaf_advantages
from leafrl.losses import loss_normalizer, policy_loss
from leafrl.token_credit import leafrl_advantages, token_contrast, trie_segments

__version__ = "0.1.0.dev0"

__all__ = [
    "LeafConfig",
    "LeafStats",
    "LeafTree",
    "grpo_advantages",
    "leaf_advantages",
    "leafrl_advantages",
    "loss_normalizer",
    "policy_loss",
    "token_contrast",
    "trie_segments",
    "__version__",
]
