"""Decode a held-out set and score it: a greedy pass and sampled passes, corpus BLEU."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from leafrl._files import write_text_atomic
from leafrl.eval.metrics import bleu_tokenizer, corpus_bleu, paired_bootstrap
from leafrl.models.base import ModelFamily, to_model
from leafrl.rollout.batch import encode_examples
from leafrl.rollout.hf import generate_completions
from leafrl.summary import HeldOut


@dataclass(frozen=True)
class EvalResult:
    bleu: float  # lowercased corpus BLEU (the paper's evaluation)
    bleu_cased: float
    predictions: list[str]
    truncated: list[bool]  # per prediction: cut at max_new_tokens before an end-of-sequence token


@dataclass(frozen=True)
class Evaluation:
    greedy: EvalResult
    sampled: list[EvalResult]  # one per sampled pass

    @property
    def sampled_bleu(self) -> float:
        """The mean BLEU of the sampled passes (the paper's number)."""
        return sum(r.bleu for r in self.sampled) / len(self.sampled)


def evaluate(model: Any, family: ModelFamily, examples: Sequence[Any], *, max_new_tokens: int, sampled_passes: int,
             temperature: float, top_p: float, seed: int, batch_size: int, progress: Any = None,
             bleu_tokenize: str = "auto") -> Evaluation:
    """One greedy pass and ``sampled_passes`` sampled passes over ``examples``, each scored
    against the references (BLEU tokenized by ``bleu_tokenize``, an eval.bleu_tokenize setting).

    Each batch is encoded once for all passes, and its sampled passes are drawn together: one
    generate call of ``sampled_passes`` samples per prompt (sharing the prompt's cache), sample j
    of every prompt making pass j. Sampling is seeded once with ``seed``, so a call repeats.
    progress: an optional callable ``progress(n_done)`` for a progress bar.
    """
    if sampled_passes < 0:
        raise ValueError(f"sampled_passes must be >= 0, got {sampled_passes}")
    references = [ex.reference for ex in examples]
    tokenize = bleu_tokenizer(bleu_tokenize, references)  # a missing tokenizer fails before decoding
    torch.manual_seed(seed)
    was_training = model.training
    model.eval()
    greedy: list[str] = []
    sampled: list[list[str]] = [[] for _ in range(sampled_passes)]
    cut: list[bool] = []
    cut_sampled: list[list[bool]] = [[] for _ in range(sampled_passes)]
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        inputs = to_model(encode_examples(family, chunk), model)
        out = generate_completions(model, family, inputs, do_sample=False, max_new_tokens=max_new_tokens,
                                   surprisal=None)
        greedy += [p.strip() for p in family.decode(out.ids)]
        cut += out.truncated(family.eos_token_ids, max_new_tokens).tolist()
        if sampled_passes:
            out = generate_completions(model, family, inputs, num_samples=sampled_passes, do_sample=True,
                                       max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                       surprisal=None)
            texts = [p.strip() for p in family.decode(out.ids)]
            ended = out.truncated(family.eos_token_ids, max_new_tokens).tolist()
            for j in range(sampled_passes):  # row i * passes + j is sample j of prompt i
                sampled[j] += texts[j::sampled_passes]
                cut_sampled[j] += ended[j::sampled_passes]
        if progress is not None:
            progress(len(greedy))
    model.train(was_training)
    return Evaluation(score_predictions(greedy, references, cut, tokenize),
                      [score_predictions(texts, references, c, tokenize) for texts, c in zip(sampled, cut_sampled)])


def score_predictions(predictions: list[str], references: list[str], truncated: list[bool],
                      tokenize: str = "auto") -> EvalResult:
    """Lowercased and cased corpus BLEU of ``predictions`` against ``references``, tokenized by
    ``tokenize`` (an eval.bleu_tokenize setting)."""
    return EvalResult(corpus_bleu(predictions, references, tokenize=tokenize),
                      corpus_bleu(predictions, references, lowercase=False, tokenize=tokenize), predictions, truncated)


WER_TASKS = ("asr", "transcribe", "transcription")  # tasks whose output is a transcript: WER is reported


def held_out_of(policy: Any, family: ModelFamily, valid: Sequence[Any], cfg: Any, sampled_passes: int, rank: int = 0,
                processes: int = 1) -> HeldOut:
    """A run's held-out evaluation of ``policy`` (eval mode) on ``valid``, as ``cfg`` (a
    ``TrainConfig``: its ``eval`` section, ``rollout.max_new_tokens``) sets it: corpus BLEU of a
    greedy pass and the mean (and spread) of ``sampled_passes`` sampled ones, predictions in row
    order. Process ``rank`` of ``processes`` decodes rows rank, rank + processes, ...; all are
    scored whole. What ``leafrl train`` writes in before.json and after.json."""
    e = cfg.eval
    rows = list(range(rank, len(valid), processes))
    result = evaluate(policy, family, [valid[i] for i in rows], max_new_tokens=cfg.rollout.max_new_tokens,
                      sampled_passes=sampled_passes, temperature=e.temperature, top_p=e.top_p, seed=e.seed + rank,
                      batch_size=e.batch_size, bleu_tokenize=e.bleu_tokenize)

    def in_row_order(values: list) -> list:
        if processes == 1:
            return values
        from accelerate.utils import gather_object

        return [value for _, value in sorted(gather_object(list(zip(rows, values))))]

    references = [ex.reference for ex in valid]
    greedy, *sampled = [score_predictions(in_row_order(r.predictions), references, in_row_order(r.truncated),
                                          e.bleu_tokenize)
                        for r in (result.greedy, *result.sampled)]
    passes = torch.tensor([r.bleu for r in sampled])
    return HeldOut(greedy.bleu, float(passes.mean()) if sampled else None,
                   (float(passes.std()) if len(passes) > 1 else 0.0) if sampled else None,
                   greedy.predictions, [r.predictions for r in sampled])


def metrics_report(examples: Sequence[Any], evaluation: Evaluation, *, bertscore_model: str | None = None,
                   tokenize: str = "auto") -> dict:
    """Every text metric (``leafrl.eval.metrics.text_metrics``) of the greedy pass and the mean and
    std over the sampled passes, over all rows ("all") and per task when the rows have several.
    WER is reported for transcription tasks (``WER_TASKS``). BLEU is tokenized by ``tokenize``
    (an eval.bleu_tokenize setting), decided once on all the rows."""
    from leafrl.eval.metrics import text_metrics

    tasks = sorted({ex.task for ex in examples})
    parts = {"all": list(range(len(examples)))} if len(tasks) > 1 else {}
    parts.update({task: [i for i, ex in enumerate(examples) if ex.task == task] for task in tasks})
    tokenize = bleu_tokenizer(tokenize, [ex.reference for ex in examples])
    out = {}
    for name, rows in parts.items():
        refs = [examples[i].reference for i in rows]
        wer = all(examples[i].task in WER_TASKS for i in rows)

        def score(predictions: list[str], refs: list[str] = refs, rows: list[int] = rows, wer: bool = wer) -> dict:
            return text_metrics([predictions[i] for i in rows], refs, wer=wer, bertscore_model=bertscore_model,
                                tokenize=tokenize)

        entry: dict[str, Any] = {"rows": len(rows), "greedy": score(evaluation.greedy.predictions),
                                 "truncated_greedy": sum(evaluation.greedy.truncated[i] for i in rows)}
        if evaluation.sampled:
            passes = [score(r.predictions) for r in evaluation.sampled]
            values = {key: torch.tensor([p[key] for p in passes], dtype=torch.float64) for key in passes[0]}
            entry["sampled"] = {key: {"mean": float(v.mean()), "std": float(v.std()) if len(v) > 1 else 0.0}
                                for key, v in values.items()}
        out[name] = entry
    return out


def significance(before: HeldOut, after: HeldOut, references: list[str],
                 tokenize: str = "auto") -> tuple[float, float | None]:
    """Paired bootstrap p-values (rows resampled, 1000 times) of the greedy change and of the
    change of the sampled passes' mean (None without sampled passes): is it more than the choice
    of held-out rows explains? BLEU is tokenized by ``tokenize`` (an eval.bleu_tokenize setting)."""
    greedy = paired_bootstrap([before.greedy], [after.greedy], references, tokenize=tokenize)["p_value"]
    if not (before.sampled and after.sampled):
        return greedy, None
    return greedy, paired_bootstrap(before.sampled, after.sampled, references, tokenize=tokenize)["p_value"]


@dataclass(frozen=True)
class EvalReport:
    """metrics.json of ``leafrl eval``: what was scored, ``metrics_report``'s metrics per part
    ("all" and each task), and on the built-in local task the per-slot errors
    (``leafrl.data.local_corpus.slot_report``: "greedy", and "sampled" over the sampled passes)."""

    model: str
    adapter: str | None
    data: str
    split: str
    rows: int
    sampled_passes: int
    meteor: str
    """How METEOR matched words (exact+stem, plus WordNet synonyms where the corpus is installed)."""
    bleu_signature: dict[str, str]
    """sacrebleu's signature of "bleu" and "bleu_cased": its tokenizer (eval.bleu_tokenize), case, version."""
    bertscore: str
    metrics: dict[str, dict]
    slots: dict[str, dict] | None = None


def slots_of(data: Any, references: list[str], greedy: list[str], sampled: list[list[str]]) -> dict | None:
    """The per-slot errors of the greedy and sampled predictions when ``data`` is the built-in local
    task (``builtin:local``), else None."""
    from leafrl.builtin import builtin_name
    from leafrl.data.local_corpus import slot_report

    if builtin_name(data) != "local":
        return None
    return {"greedy": slot_report(references, [greedy]),
            **({"sampled": slot_report(references, sampled)} if sampled else {})}


def evaluate_split(cfg: Any, adapter: Path | None, split: str, limit: int | None, bertscore_model: str | None,
                   out: Path, console: Console, quiet: bool) -> EvalReport:
    """``leafrl eval``: decode the first ``limit`` rows of ``split`` with ``cfg.model`` (+ the LoRA
    ``adapter``), greedy and ``eval.sampled_passes`` sampled passes, score every metric and write
    metrics.json and predictions.jsonl (id, task, reference, greedy, sampled) to ``out``."""
    from leafrl.eval.analysis import examples_of, load_policy
    from leafrl.eval.metrics import bleu_signature, meteor_matching
    from leafrl.tracking import progress_bar

    e = cfg.eval
    examples = examples_of(cfg, split, limit)
    tokenize = bleu_tokenizer(e.bleu_tokenize, [ex.reference for ex in examples])  # fails before the model loads
    model, family = load_policy(cfg, adapter, examples, split)
    with progress_bar("eval", console, quiet) as bar:
        task = bar.add_task("eval", total=len(examples), info=f"greedy + {e.sampled_passes} sampled")
        result = evaluate(model, family, examples, max_new_tokens=cfg.rollout.max_new_tokens,
                          sampled_passes=e.sampled_passes, temperature=e.temperature, top_p=e.top_p, seed=e.seed,
                          batch_size=e.batch_size, progress=lambda n: bar.update(task, completed=n),
                          bleu_tokenize=tokenize)
    report = EvalReport(cfg.model, None if adapter is None else str(adapter), cfg.data, split, len(examples),
                        e.sampled_passes, meteor_matching(),
                        {"bleu": bleu_signature(tokenize), "bleu_cased": bleu_signature(tokenize, lowercase=False)},
                        bertscore_model or "skipped: no --bertscore-model (leafrl never downloads one)",
                        metrics_report(examples, result, bertscore_model=bertscore_model, tokenize=tokenize),
                        slots_of(cfg.data, [ex.reference for ex in examples], result.greedy.predictions,
                                 [r.predictions for r in result.sampled]))
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "metrics.json", json.dumps(dataclasses.asdict(report), indent=2))
    rows = [{"id": ex.id, "task": ex.task, "reference": ex.reference, "greedy": result.greedy.predictions[i],
             "sampled": [r.predictions[i] for r in result.sampled]} for i, ex in enumerate(examples)]
    write_text_atomic(out / "predictions.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return report
