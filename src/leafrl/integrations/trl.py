"""LEAF inside TRL: ``LeafGRPOTrainer`` is a ``trl.GRPOTrainer`` whose per-response advantages
are replaced by LEAF's per-token ones [N, T] (TRL's loss takes 2-D advantages), or with
``algo="leafrl"`` by leafrl's own credit (``leafrl.token_credit.leafrl_advantages``). Everything else
(generation, rewards, KL, clipping, logging, accelerate) is TRL's. Supported: trl 1.16 (the
``leafrl[trl]`` extra pins it); text models (TRL does not carry audio features into its loss
forward, so speech models train with ``leafrl train``).

    from leafrl.integrations.trl import LeafGRPOConfig, LeafGRPOTrainer

    args = LeafGRPOConfig(output_dir="out", num_generations=8, fork_budget=2)  # GRPOConfig + LeafConfig fields
    trainer = LeafGRPOTrainer(model=..., reward_funcs=..., args=args, train_dataset=...)

TRL may split a prompt's group across processes, so every process gathers the completion ids,
masks, surprisal and rewards of all, builds the trees of every group once, and keeps its own
rows. Surprisal is -log p of each sampled token: vLLM's sampling log-probs when it samples; with
transformers' ``generate``, kept while the tokens are drawn by the logits processor leafrl's own
rollouts use (``leafrl.rollout.hf.SampledSurprisal``), so LEAF adds no forward pass to TRL's
step; with tools or continuous batching, TRL's old-policy log-probs, else one no-grad pass.
Without vLLM all are at TRL's temperature, without top-p (LeafConfig's "raw" source). leafrl's
credit needs none. LEAF's statistics are logged as
``leaf/...``. A saved LoRA adapter records its base model (``leafrl_base.json``), so ``leafrl eval
--adapter`` and the other commands refuse it on another model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import LogitsProcessorList, StoppingCriteriaList
from trl import GRPOConfig, GRPOTrainer

from leafrl.advantages import LeafConfig, leaf_advantages
from leafrl.identity import of_model, save_adapter
from leafrl.rollout.hf import SampledSurprisal
from leafrl.token_credit import leafrl_advantages

ALGOS = ("leaf", "leafrl")


@dataclass
class LeafGRPOConfig(GRPOConfig):
    """``trl.GRPOConfig`` with LEAF's options (see ``leafrl.advantages.LeafConfig``, whose defaults they are)."""

    algo: str = field(default="leaf", metadata={"help": "leaf (the paper's span credit) | leafrl (leafrl's credit)"})
    fork_budget: int = field(default=LeafConfig.fork_budget, metadata={"help": "B, boundaries per group"})
    min_prefix_tokens: int = field(default=LeafConfig.min_prefix_tokens, metadata={"help": "earliest boundary"})
    terms: str = field(default=LeafConfig.terms, metadata={"help": "both | global | local"})
    normalize: str = field(default=LeafConfig.normalize, metadata={"help": "span_zscore | none"})
    boundaries: str = field(default=LeafConfig.boundaries, metadata={"help": "surprisal | trie"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.algo not in ALGOS:
            raise ValueError(f"LeafGRPOConfig.algo must be one of {', '.join(ALGOS)}, got {self.algo!r}")

    def leaf_config(self) -> LeafConfig:
        return LeafConfig(fork_budget=self.fork_budget, min_prefix_tokens=self.min_prefix_tokens, terms=self.terms,
                          normalize=self.normalize, boundaries=self.boundaries)


def leaf_rows(accelerator: Any, ids: torch.Tensor, mask: torch.Tensor, surprisal: torch.Tensor | None,
              all_rewards: torch.Tensor, k: int, config: LeafConfig | None) -> tuple[torch.Tensor, dict[str, float]]:
    """This process's LEAF advantages [n, T] from its rows and everyone's rewards; with config
    None, leafrl's (which reads no surprisal: pass None).

    Shapes: ids / mask / surprisal [n, T] this process's completions (right-padded; rows are the
    process's consecutive share of the gathered batch); all_rewards [N] float over every process,
    NaN for unscorable rows; k: completions per prompt (groups are k consecutive gathered rows).
    Unscorable rows count as their group's mean reward and get advantage 0, as TRL does.
    """
    width = ids.shape[1]
    local = (ids, mask.long()) if config is None else (ids, mask.long(), surprisal.float())
    every = [accelerator.gather(accelerator.pad_across_processes(x, dim=1, pad_index=0)) for x in local]
    rewards = all_rewards.float().view(-1, k)  # [G, k]
    unscorable = rewards.isnan()
    mean = torch.nanmean(rewards, dim=1, keepdim=True).nan_to_num(0.0)
    filled = torch.where(unscorable, mean, rewards).flatten()
    groups = torch.arange(len(filled), device=filled.device) // k
    if config is None:
        adv, stats = leafrl_advantages(every[0], every[1].bool(), filled, groups), None
    else:
        adv, stats = leaf_advantages(every[0], every[1].bool(), every[2].nan_to_num(0.0), filled, groups, config)
    adv = adv.masked_fill(unscorable.flatten()[:, None], 0.0)
    mine = slice(accelerator.process_index * len(ids), (accelerator.process_index + 1) * len(ids))
    return adv[mine, :width], {} if stats is None else stats.as_dict()


class LeafGRPOTrainer(GRPOTrainer):
    """``trl.GRPOTrainer`` with LEAF's span advantages (or leafrl's credit); ``args`` is a ``LeafGRPOConfig``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.args, LeafGRPOConfig):
            raise ValueError(f"LeafGRPOTrainer: args must be a LeafGRPOConfig, got {type(self.args).__name__}")
        if self.multi_objective_aggregation != "sum_then_normalize":
            raise ValueError("LeafGRPOTrainer: LEAF values nodes by their members' mean reward, so it needs one reward "
                             "per completion: multi_objective_aggregation='sum_then_normalize'")
        self.leaf = self.args.leaf_config() if self.args.algo == "leaf" else None
        self._leaf_rewards: torch.Tensor | None = None
        self._sampled_surprisal: torch.Tensor | None = None  # [N, T] of the last generation, when kept
        base = self.model.config
        tokenizer = getattr(self.processing_class, "tokenizer", self.processing_class)
        self._base = of_model(base.name_or_path, self.model, tokenizer)  # saved beside each adapter

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """TRL's save, and beside a LoRA adapter the base model it is trained on, which every
        ``leafrl`` command that takes ``--adapter`` checks (``leafrl.identity``)."""
        super()._save(output_dir, state_dict)
        folder = Path(output_dir or self.args.output_dir)
        if (folder / "adapter_config.json").is_file():
            save_adapter(folder, self._base)

    def _generate_single_turn(self, *args: Any, **kwargs: Any) -> Any:
        """TRL's generation; for LEAF with transformers' ``generate`` (no vLLM, no tools), a logits
        processor keeps each sampled token's surprisal as it is drawn, so no pass is needed for it."""
        if self.leaf is None or self.use_vllm or self.use_transformers_continuous_batching or self.tools:
            return super()._generate_single_turn(*args, **kwargs)
        model = self.accelerator.unwrap_model(self.model_wrapped)
        own = model.__dict__.get("generate")
        original = own or model.generate

        def generate(*args: Any, **kwargs: Any) -> torch.Tensor:
            recorder = SampledSurprisal(self.max_completion_length, self.temperature)  # before TRL's warpers
            sequences = original(*args, logits_processor=LogitsProcessorList([recorder]),
                                 stopping_criteria=StoppingCriteriaList([recorder.read]), **kwargs)
            self._sampled_surprisal = recorder.finish(sequences[:, kwargs["input_ids"].shape[1]:])
            return sequences

        model.generate = generate
        try:
            ids, logprobs = super()._generate_single_turn(*args, **kwargs)
        finally:
            if own is None:
                del model.generate
            else:
                model.generate = own
        return ids, logprobs

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._leaf_rewards = rewards  # [N, functions], gathered across processes by TRL
        return rewards

    def _generate_and_score_completions(self, inputs):
        self._sampled_surprisal = None  # set by this generation's _generate_single_turn, if it keeps it
        out = super()._generate_and_score_completions(inputs)
        if not self.model.training:  # evaluation uses no advantages
            return out
        ids, mask = out["completion_ids"], out["completion_mask"]
        logp = out.get("sampling_per_token_logps")
        if logp is None and self.leaf is not None and (drawn := self._sampled_surprisal) is not None:
            if drawn.shape[0] != ids.shape[0] or drawn.shape[1] < ids.shape[1]:
                raise RuntimeError(f"LeafGRPOTrainer: surprisal of {list(drawn.shape)} sampled tokens for "
                                   f"completions {list(ids.shape)}")
            logp = -drawn[:, : ids.shape[1]].to(ids.device).masked_fill(~mask.bool(), 0.0)
        if logp is None:
            logp = out.get("old_per_token_logps")
        if logp is None and self.leaf is not None:
            with torch.no_grad():
                logp = self._get_per_token_logps_and_entropies(
                    self.model, torch.cat([out["prompt_ids"], ids], 1), torch.cat([out["prompt_mask"], mask], 1),
                    ids.size(1), batch_size=self.args.per_device_train_batch_size)[0]
        weights = self.reward_weights.to(self._leaf_rewards.device)
        rewards = (self._leaf_rewards * weights).nansum(1)
        rewards[self._leaf_rewards.isnan().all(1)] = torch.nan
        surprisal = None if logp is None else -logp
        out["advantages"], stats = leaf_rows(self.accelerator, ids, mask.bool(), surprisal, rewards,
                                             self.num_generations, self.leaf)
        for key, value in stats.items():
            self._metrics["train"][f"leaf/{key}"].append(value)
        return out
