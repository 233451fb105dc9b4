"""LEAF inside TRL: ``LeafGRPOTrainer`` is a ``trl.GRPOTrainer`` whose per-response advantages
are replaced by LEAF's per-token ones [N, T] (TRL's loss takes 2-D advantages), or with
``algo="leafrl"`` by leafrl's own credit (``leafrl.token_credit.leafrl_advantages``). Everything else
(generation, rewards, KL, clipping, logging, accelerate) is TRL's. Supported: trl 1.16 (the
``leafrl[trl]`` extra pins it). With ``fork_budget=0`` the advantages are TRL's GRPO ones.

    from leafrl.integrations.trl import LeafGRPOConfig, LeafGRPOTrainer

    args = LeafGRPOConfig(output_dir="out", num_generations=8, fork_budget=2)  # GRPOConfig + LeafConfig fields
    trainer = LeafGRPOTrainer(model=..., reward_funcs=..., args=args, train_dataset=...)

Speech models (every family leafrl trains with audio): pass ``model`` as a path, a hub name or
``builtin:NAME`` (loaded with ``leafrl.models.load_speech_lm``), or the model together with its
``family``; the dataset holds an audio column (``LeafGRPOConfig.audio_column``, "audio": a file
path, ``{"array", "sampling_rate"}``, ``{"bytes", "path"}``; resampled to the family's rate) beside
its prompt (a string, or one user message after at most one system message). The family builds
each prompt (chat template, audio placeholder) and its audio features; the features follow their
rows through generation, TRL's shuffling and splitting into ``steps_per_generation`` batches, and
every forward TRL makes (old policy, reference, loss). Those forwards score completions with
leafrl's own ``completion_logprobs`` (and its entropies), the function ``leafrl train`` uses, whose
check of the output head's scaling TRL's fused head does not make. The audio encoder and projector
run in eval mode; ``gradient_checkpointing`` checkpoints the language model's layers. vLLM, tools,
environments and ``rollout_func`` are text-only here.

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

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import LogitsProcessorList, StoppingCriteriaList
from trl import GRPOConfig, GRPOTrainer

from leafrl.advantages import LeafConfig, leaf_advantages
from leafrl.audio.io import load_audio
from leafrl.errors import UserError
from leafrl.identity import of_model, save_adapter
from leafrl.integrations.trl_inputs import (
    checkpoint_language_model,
    distinct_prompts,
    outside_language_model,
    row_name,
    speech_model,
    speech_prompt,
    trl_dataset,
    trl_reward,
)
from leafrl.models import ModelFamily, to_model
from leafrl.models.logprobs import completion_logprobs
from leafrl.rollout.batch import as_text, special_texts
from leafrl.rollout.hf import SampledSurprisal
from leafrl.token_credit import leafrl_advantages

ALGOS = ("leaf", "leafrl")
__all__ = ["LeafGRPOConfig", "LeafGRPOTrainer", "leaf_rows", "trl_dataset", "trl_reward"]


@dataclass
class LeafGRPOConfig(GRPOConfig):
    """``trl.GRPOConfig`` with LEAF's options (see ``leafrl.advantages.LeafConfig``, whose defaults they are)."""

    algo: str = field(default="leaf", metadata={"help": "leaf (the paper's span credit) | leafrl (leafrl's credit)"})
    fork_budget: int = field(default=LeafConfig.fork_budget, metadata={"help": "B, boundaries per group"})
    min_prefix_tokens: int = field(default=LeafConfig.min_prefix_tokens, metadata={"help": "earliest boundary"})
    terms: str = field(default=LeafConfig.terms, metadata={"help": "both | global | local"})
    normalize: str = field(default=LeafConfig.normalize, metadata={"help": "span_zscore | none"})
    boundaries: str = field(default=LeafConfig.boundaries, metadata={"help": "surprisal | trie"})
    audio_column: str = field(default="audio", metadata={"help": "the dataset column holding each row's audio "
                                                                 "(speech models)"})

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
    """``trl.GRPOTrainer`` with LEAF's span advantages (or leafrl's credit); ``args`` is a
    ``LeafGRPOConfig``. ``family``: a loaded speech model's (``leafrl.models.load_speech_lm``)."""

    def __init__(self, model: Any, reward_funcs: Any = None, args: LeafGRPOConfig | None = None, *rest: Any,
                 family: ModelFamily | None = None, **kwargs: Any) -> None:
        model, self.family = speech_model(model, family)
        self._rows: list[dict] | None = None  # the rows being generated for (speech models)
        self._audio: dict[str, torch.Tensor] | None = None  # audio inputs of the rows being scored
        if self.family is not None and kwargs.get("processing_class") is None:
            kwargs["processing_class"] = self.family.tokenizer
        # a multimodal class may refuse transformers' checkpointing (some speech models' do): the
        # language model's layers, the trained part, are checkpointed instead, as leafrl train does
        checkpointing = self.family is not None and args is not None and (
            args.gradient_checkpointing or getattr(args, "activation_checkpointing", False))
        if checkpointing:  # both names: transformers 5.2x renamed the option and keeps the old one
            args.gradient_checkpointing = args.activation_checkpointing = False
        super().__init__(model, reward_funcs, args, *rest, **kwargs)
        if checkpointing:
            checkpoint_language_model(self.model)
        if not isinstance(self.args, LeafGRPOConfig):
            raise ValueError(f"LeafGRPOTrainer: args must be a LeafGRPOConfig, got {type(self.args).__name__}")
        if self.multi_objective_aggregation != "sum_then_normalize":
            raise ValueError("LeafGRPOTrainer: LEAF values nodes by their members' mean reward, so it needs one reward "
                             "per completion: multi_objective_aggregation='sum_then_normalize'")
        if self.family is not None:
            self._check_speech(self.train_dataset, self.eval_dataset)
            self._audio_modules = outside_language_model(self.accelerator.unwrap_model(self.model))
        self.leaf = self.args.leaf_config() if self.args.algo == "leaf" else None
        self._leaf_rewards: torch.Tensor | None = None
        self._sampled_surprisal: torch.Tensor | None = None  # [N, T] of the last generation, when kept
        base = self.model.config
        tokenizer = getattr(self.processing_class, "tokenizer", self.processing_class)
        self._base = of_model(base.name_or_path, self.model, tokenizer)  # saved beside each adapter

    def _check_speech(self, train: Any, evaluation: Any) -> None:
        """A speech model's trainer: generation by transformers' ``generate``, an audio column in
        every dataset, and the audio placeholders never sampled (a sampled one would be read as an
        audio slot in the forwards that score the completion)."""
        for name, used in (("use_vllm", self.use_vllm), ("use_transformers_continuous_batching",
                                                           self.use_transformers_continuous_batching),
                           ("tools", self.tools), ("environment_factory", self.environment_factories),
                           ("rollout_func", self.rollout_func)):
            if used:
                raise ValueError(f"LeafGRPOTrainer: {name} is text-only; a speech model generates with "
                                 "transformers' generate")
        column = self.args.audio_column
        splits = evaluation.items() if isinstance(evaluation, dict) else [("eval_dataset", evaluation)]
        for name, dataset in [("train_dataset", train), *splits]:
            columns = getattr(dataset, "column_names", None)
            if columns is not None and column not in columns:
                raise UserError(f"{name}: no {column!r} column, but {self.family.name} needs a clip per prompt "
                                f"(its columns: {', '.join(columns)}; LeafGRPOConfig.audio_column names it)")
        suppressed = sorted({*(self.generation_config.suppress_tokens or []), *self.family.suppress_token_ids})
        self.generation_config.suppress_tokens = suppressed
        self.generation_kwargs["suppress_tokens"] = suppressed  # TRL hands generate both

    @contextmanager
    def _audio_frozen(self) -> Iterator[None]:
        """A speech model's modules outside its language model (audio encoder, projector: frozen) in
        eval mode, so they run without dropout in TRL's training forwards, as in ``leafrl train``."""
        if self.family is None:
            yield
            return
        training = [m for m in self._audio_modules if m.training]
        for module in training:
            module.training = False
        try:
            yield
        finally:
            for module in training:
                module.training = True

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """TRL's save, and beside a LoRA adapter the base model it is trained on, which every
        ``leafrl`` command that takes ``--adapter`` checks (``leafrl.identity``)."""
        super()._save(output_dir, state_dict)
        folder = Path(output_dir or self.args.output_dir)
        if (folder / "adapter_config.json").is_file():
            save_adapter(folder, self._base)

    def _tokenize_prompts(self, prompts: list) -> tuple[list[list[int]], Any, dict]:
        """TRL's, for a text model; for a speech model the family's: each row's prompt built with
        its chat template and audio placeholder, and its audio inputs (kept for the scoring passes)."""
        if self.family is None:
            return super()._tokenize_prompts(prompts)
        family, column = self.family, self.args.audio_column
        if self._rows is None or len(self._rows) != len(prompts):
            raise RuntimeError("LeafGRPOTrainer: prompts to tokenize without their dataset rows")
        specials = special_texts(family.tokenizer)
        texts, audios, names = [], [], []
        for row, prompt in zip(self._rows, prompts):
            text, system = speech_prompt(prompt, f"row {row_name(row, str(prompt))!r}")
            name = row_name(row, text)
            if row.get(column) is None:
                raise UserError(f"row {name!r}: no audio in column {column!r}, but {family.name} needs a clip "
                                "per prompt")
            system = None if system is None else as_text(system, specials)
            texts.append(family.build_prompt(as_text(text, specials), system))
            audios.append(load_audio(row[column], sampling_rate=family.sampling_rate, example_id=name))
            names.append(name)
        encoded = family.encode(texts, audios, names)
        ids, mask = encoded.pop("input_ids"), encoded.pop("attention_mask").bool()
        self._audio = to_model(encoded, self.accelerator.unwrap_model(self.model))
        return [row[keep].tolist() for row, keep in zip(ids, mask)], None, dict(self._audio)

    def _get_per_token_logps_and_entropies(self, model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                                           logits_to_keep: int, batch_size: int | None = None,
                                           compute_entropy: bool = False, compute_aux_loss: bool = False,
                                           **images: Any) -> tuple[torch.Tensor, torch.Tensor | None, Any]:
        """TRL's, for text rows; for rows with audio (``self._audio``, [N, ...] each), leafrl's
        ``completion_logprobs`` (and entropies) of the last ``logits_to_keep`` tokens, ``batch_size``
        rows per forward. Shapes: input_ids / attention_mask [N, P + T]; returns [N, T] each."""
        if self._audio is None:
            return super()._get_per_token_logps_and_entropies(model, input_ids, attention_mask, logits_to_keep,
                                                              batch_size, compute_entropy, compute_aux_loss,
                                                              **images)
        if compute_aux_loss:
            raise ValueError("LeafGRPOTrainer: a mixture-of-experts load-balancing loss is not computed on speech rows")
        t, logps, entropies = logits_to_keep, [], []
        for rows in torch.arange(len(input_ids), device=input_ids.device).split(batch_size or len(input_ids)):
            prompts, of_row = distinct_prompts({"input_ids": input_ids[rows, :-t], "attention_mask": attention_mask[
                rows, :-t], **{key: value[rows] for key, value in self._audio.items()}})
            with self.accelerator.autocast():
                out = completion_logprobs(model, prompts, input_ids[rows, -t:], attention_mask[rows, -t:].bool(),
                                          self.family.keeps_logits, of_row, self.temperature, compute_entropy)
            logps.append(out[0] if compute_entropy else out)
            entropies.append(out[1] if compute_entropy else None)
        return torch.cat(logps), torch.cat(entropies) if compute_entropy else None, None

    def _compute_loss(self, model: Any, inputs: dict) -> torch.Tensor:
        """TRL's loss; the rows' audio inputs (carried in ``inputs`` since generation) go to its forward."""
        if self.family is None:
            return super()._compute_loss(model, inputs)
        self._audio = {key: inputs[key] for key in self.family.row_keys if key not in ("input_ids", "attention_mask")}
        try:
            with self._audio_frozen():
                return super()._compute_loss(model, inputs)
        finally:
            self._audio = None

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
        self._rows = inputs  # read by _tokenize_prompts, which sets self._audio for a speech model
        try:
            with self._audio_frozen():
                out = super()._generate_and_score_completions(inputs)
        finally:
            audio, self._rows, self._audio = self._audio, None, None
        if audio is not None:  # [N, ...] per row: shuffled and split with the rest, read by _compute_loss
            out |= audio
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
            self._audio = audio
            try:
                with torch.no_grad():
                    logp = self._get_per_token_logps_and_entropies(
                        self.model, torch.cat([out["prompt_ids"], ids], 1), torch.cat([out["prompt_mask"], mask], 1),
                        ids.size(1), batch_size=self.args.per_device_train_batch_size)[0]
            finally:
                self._audio = None
        weights = self.reward_weights.to(self._leaf_rewards.device)
        rewards = (self._leaf_rewards * weights).nansum(1)
        rewards[self._leaf_rewards.isnan().all(1)] = torch.nan
        surprisal = None if logp is None else -logp
        out["advantages"], stats = leaf_rows(self.accelerator, ids, mask.bool(), surprisal, rewards,
                                             self.num_generations, self.leaf)
        for key, value in stats.items():
            self._metrics["train"][f"leaf/{key}"].append(value)
        return out
