"""What ``LeafGRPOTrainer`` (``leafrl.integrations.trl``) reads from leafrl: a leafrl dataset and
reward as TRL's (``trl_dataset``, ``trl_reward``), and for speech models the model and its family,
each row's prompt text, the runs of repeated prompts read once, the modules outside the language
model, and checkpointing of the language model's layers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from leafrl.errors import UserError
from leafrl.models import FAMILIES, ModelFamily, checkpoint_activations, family_of, load_speech_lm, locate, model_config
from leafrl.rewards import compute_rewards, resolve_reward


def trl_dataset(data: str, split: str = "train", system: str | None = None) -> Any:
    """A leafrl dataset's ``split`` (a manifest directory, a saved dataset, ``builtin:NAME``) as a
    TRL dataset: ``id``, ``prompt`` (the row's user message, after ``system`` if given), ``audio``
    (as leafrl reads it: a path, bytes or an array with its rate; None on text rows), ``reference``."""
    from datasets import Dataset

    from leafrl.data import load_split

    head = [] if system is None else [{"role": "system", "content": system}]
    return Dataset.from_list([{"id": ex.id, "prompt": [*head, {"role": "user", "content": ex.prompt}],
                               "audio": ex.audio, "reference": ex.reference} for ex in load_split(data, split)])


def trl_reward(name: str = "bleu", bleu_tokenize: str = "auto") -> Callable[..., list[float]]:
    """leafrl's reward ``name`` (``leafrl.rewards.resolve_reward``: bleu, chrf, wer, exact, f1 or
    ``module:function``) as a TRL reward function of the completions and the dataset's ``reference``
    column, scored as ``leafrl train`` scores them (``compute_rewards``, rows named by ``id``)."""
    reward = resolve_reward(name, bleu_tokenize)

    def leafrl_reward(completions: list, reference: list[str], **columns: Any) -> list[float]:
        texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
        return compute_rewards(reward, texts, reference, columns.get("id") or [str(i) for i in range(len(texts))])

    leafrl_reward.__name__ = name.replace(":", ".")  # TRL logs rewards/<name>
    return leafrl_reward


def speech_model(model: Any, family: ModelFamily | None) -> tuple[Any, ModelFamily | None]:
    """(model, family) for the trainer: a speech model's path, hub name or ``builtin:NAME`` loaded
    with ``load_speech_lm``; a loaded speech model with the ``family`` it came with. The family is
    None for a text-only causal LM, which TRL loads and tokenizes itself. A model leafrl does not
    know is refused in one line naming it."""
    name = model if isinstance(model, str) else getattr(model.config, "name_or_path", type(model).__name__)
    try:
        model_type = model_config(model).model_type if isinstance(model, str) else model.config.model_type
        family_of(model_type)  # refuses a model_type leafrl does not know
    except UserError as err:
        raise UserError(f"model {name}: {err}") from None
    speech = model_type in FAMILIES  # the families with audio
    if isinstance(model, str):
        if family is not None:
            raise ValueError("LeafGRPOTrainer: family= goes with a loaded model; a model's path loads its own")
        return load_speech_lm(model) if speech else (locate(model), None)
    if speech and family is None:
        raise UserError(f"model {name}: a {model_type} model needs its family: pass family= as "
                        "leafrl.models.load_speech_lm gives it, or pass the model's path")
    return model, family if speech else None


def speech_prompt(prompt: Any, where: str) -> tuple[str, str | None]:
    """(user text, system text or None) of a TRL prompt, for a family's ``build_prompt``: a string,
    or messages holding one user turn after at most one system turn (their text blocks joined;
    an audio block is where the family puts the row's audio anyway)."""
    if isinstance(prompt, str):
        return prompt, None
    roles = [m.get("role") for m in prompt]
    if roles not in (["user"], ["system", "user"]):
        raise UserError(f"{where}: a speech model's prompt is one user message after at most one system "
                        f"message, got roles {roles}")
    texts = []
    for message in prompt:
        content = message["content"]
        if not isinstance(content, str):
            kinds = {block.get("type") for block in content} - {"text", "audio"}
            if kinds:
                raise UserError(f"{where}: a speech model's prompt holds text and audio, not {sorted(kinds)}")
            content = "".join(block["text"] for block in content if block["type"] == "text")
        texts.append(content)
    return texts[-1], texts[0] if len(texts) == 2 else None


def outside_language_model(model: Any) -> list[Any]:
    """The modules of ``model`` neither in its language model (``get_decoder()``) nor holding it:
    a speech model's audio encoder and projector (and output head)."""
    decoder = model.get_decoder()
    root = next(name for name, module in model.named_modules() if module is decoder)
    return [module for name, module in model.named_modules()
            if not (name == root or name.startswith(root + ".") or name == "" or root.startswith(name + "."))]


def distinct_prompts(prompts: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Rows that repeat the row before them in every input (TRL lays a prompt's completions out in a
    row) kept once: (the distinct rows [G, ...], prompt_of_row [N] into them), so that
    ``completion_logprobs`` runs each prompt and its audio once."""
    same = torch.ones(len(prompts["input_ids"]), dtype=torch.bool, device=prompts["input_ids"].device)
    same[0] = False
    for value in prompts.values():
        same[1:] &= (value[1:] == value[:-1]).flatten(1).all(1)
    return {key: value[~same] for key, value in prompts.items()}, (~same).cumsum(0) - 1


def row_name(row: dict, prompt: str) -> str:
    """How errors name a dataset row: its ``id``, else the start of its prompt."""
    return str(row["id"]) if row.get("id") is not None else f"{prompt[:40]}..." if len(prompt) > 40 else prompt


def checkpoint_language_model(model: Any) -> None:
    """Activation checkpointing of ``model``'s language model layers (``models.checkpoint_activations``),
    and the model's own switch of it, which TRL turns off and on around generation and its no-grad
    passes, made to act on those layers: some multimodal classes refuse transformers' own."""
    decoder = model.get_decoder()
    model.gradient_checkpointing_enable = lambda *args, **kwargs: checkpoint_activations(model)
    model.gradient_checkpointing_disable = getattr(decoder, "activation_checkpointing_disable", None) or \
        decoder.gradient_checkpointing_disable  # its name from transformers 5.2x on
    checkpoint_activations(model)
