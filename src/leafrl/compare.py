"""``leafrl compare``: arms (LEAF, GRPO, LEAF variants) trained from the same start with the same
K, steps, prompts, LoRA budget and seeds, then one self-contained report directory.

    OUT/runs/<arm>/seed-<s>/   one ``leafrl train`` run each (resumable; finished ones are reused)
    OUT/report.md              held-out BLEU per arm (mean, 95% t interval over seeds), each arm's
                               paired difference per seed with the reference arm (--reference, the
                               last arm by default), steps to reach the reference, wall time, settings
    OUT/summary.json           the same numbers for scripts (``Comparison``)
    OUT/bleu.png, reward.png, forks.png

Seed s of every arm shares the LoRA initialization, the prompt order and the held-out rows, so
the arms are compared seed by seed (a paired t interval of the per-seed differences).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import yaml
from rich.console import Console

from leafrl._files import write_text_atomic
from leafrl.builtin import locate_data
from leafrl.config import ALGOS, TrainConfig, apply_overrides, from_dict, resolve_paths, to_dict
from leafrl.errors import UserError
from leafrl.eval.stats import curve_mean, paired_difference, steps_to_reach, t_interval
from leafrl.rundir import held
from leafrl.summary import HeldOut, RunSummary
from leafrl.tracking import progress_bar


@dataclass(frozen=True)
class Arm:
    """One compared configuration: ``name`` as the user wrote it (``leaf``, ``grpo``, ``leafrl`` or
    ``leaf:leaf.boundaries=trie:leaf.fork_budget=4``), its algorithm and its --set overrides."""

    name: str
    algo: str
    overrides: tuple[str, ...]

    @property
    def slug(self) -> str:
        """The arm's directory name."""
        return re.sub(r"[^A-Za-z0-9_.=+-]+", "_", self.name.replace(":", "+"))


def parse_arms(spec: str) -> list[Arm]:
    """``--algos``: comma-separated arms, each an algorithm followed by ``:key=value`` overrides."""
    arms = []
    for item in (part.strip() for part in spec.split(",")):
        algo, *overrides = item.split(":")
        if algo not in ALGOS or any("=" not in o for o in overrides):
            raise UserError(f"--algos: {item!r} is not an arm; write {', '.join(ALGOS)}, or an algorithm followed by "
                             "overrides, e.g. leaf:leaf.boundaries=trie")
        arms.append(Arm(item, algo, tuple(overrides)))
    if len(arms) < 2 or len({a.name for a in arms}) != len(arms):
        raise UserError(f"--algos {spec!r}: give at least two different arms")
    return arms


def plan(base: TrainConfig, arms: Sequence[Arm], seeds: Sequence[int], out: Path) -> list[tuple[Arm, int, TrainConfig]]:
    """The runs: every arm at every seed, each in its own directory under ``out/runs``."""
    runs = []
    for arm in arms:
        for seed in seeds:
            cfg = apply_overrides(base, [*arm.overrides, f"algo={arm.algo}", f"seed={seed}",
                                         f"out={out / 'runs' / arm.slug / f'seed-{seed}'}"])
            runs.append((arm, seed, resolve_paths(cfg)))
    return runs


def state_of(cfg: TrainConfig) -> str:
    """"done" (a finished run with these settings), "resume" (a started one) or "new". A directory
    holding a run with other settings is an error: nothing there is overwritten."""
    out = Path(cfg.out)
    saved = out / "config.yaml"
    if not saved.is_file():
        return "new"
    if yaml.safe_load(saved.read_text()) != to_dict(cfg):
        raise UserError(f"{out} holds a run with other settings than this comparison's; give another --out or "
                         "remove that directory")
    return "done" if (out / "summary.json").is_file() else "resume"  # from its checkpoint, or from step 0


START_SETTINGS = ("model", "data", "system", "model_dtype")


def start_of(cfg: TrainConfig, out: Path) -> Path:
    """Where the comparison in ``out`` keeps the start evaluation of runs like ``cfg``: one file
    per model, data, system prompt, dtype, answer length and evaluation settings (all that decides
    what a run evaluates before its first step), named by their digest."""
    settings = {**{name: getattr(cfg, name) for name in START_SETTINGS}, "max_new_tokens": cfg.rollout.max_new_tokens,
                "eval": {k: v for k, v in to_dict(cfg.eval).items() if k != "every"}}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    return out / "starts" / f"{digest}.json"


def evaluate_starts(runs: Sequence[tuple[Arm, int, TrainConfig, str]], out: Path, console: Console) -> None:
    """The start evaluation of every run that will start from step 0, once per ``start_of`` file
    (kept: a comparison run again reuses it)."""
    from leafrl.trainer import start_evaluation

    for _, _, cfg, _ in runs:
        path = start_of(cfg, out)
        if not path.is_file():
            console.print(f"evaluating the start of the runs once ({cfg.model} on {cfg.data})")
            path.parent.mkdir(parents=True, exist_ok=True)
            start_evaluation(cfg).save(path)


def _train_one(cfg: dict, resume: bool, threads: int, start: str) -> None:
    """One run in a worker process (``threads`` intra-op threads, quiet), given the start's evaluation."""
    import warnings

    import torch
    from transformers.utils import logging as hf_logging

    from leafrl.trainer import train

    warnings.filterwarnings("ignore", category=FutureWarning)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    torch.set_num_threads(threads)
    train(from_dict(TrainConfig, cfg), resume=resume, quiet=True, start=HeldOut.load(Path(start)))


def run_all(runs: list[tuple[Arm, int, TrainConfig]], jobs: int, console: Console, quiet: bool, out: Path) -> None:
    """Train every run not finished yet, ``jobs`` at a time in worker processes (the cores split
    between them), with one progress bar over all their steps; the start they share is evaluated
    once first (``evaluate_starts``)."""
    import multiprocessing
    import os

    todo = [(arm, seed, cfg, state_of(cfg)) for arm, seed, cfg in runs]
    todo = [t for t in todo if t[3] != "done"]
    if len(todo) < len(runs):
        console.print(f"reusing {len(runs) - len(todo)} finished runs")
    if not todo:
        return
    evaluate_starts(todo, out, console)
    jobs = max(1, min(jobs, len(todo)))
    threads = max(1, (os.cpu_count() or 1) // jobs)
    total = sum(cfg.steps for _, _, cfg, _ in todo)
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool, \
            progress_bar("compare", console, quiet) as bar:
        futures = {pool.submit(_train_one, to_dict(cfg), state == "resume", threads, str(start_of(cfg, out))):
                   (arm, seed, cfg) for arm, seed, cfg, state in todo}
        task = bar.add_task("compare", total=total, info="")
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, timeout=2.0, return_when=FIRST_COMPLETED)
            for future in finished:
                arm, seed, cfg = futures[future]
                if (err := future.exception()) is not None:
                    pool.shutdown(wait=False, cancel_futures=True)
                    where = f"run {arm.name} seed {seed} ({cfg.out}) failed"
                    if isinstance(err, UserError):
                        raise UserError(f"{where}: {err}; the runs finished so far are kept, run the same command "
                                        "again to go on") from err
                    raise RuntimeError(f"{where}; the runs finished so far are kept") from err
            done = sum(_last_step(Path(cfg.out)) for _, _, cfg, _ in todo)
            bar.update(task, completed=done, info=f"runs {len(futures) - len(pending)}/{len(futures)}")


def _last_step(out: Path) -> int:
    path = out / "metrics.jsonl"
    if not path.is_file():
        return 0
    lines = path.read_text().splitlines()
    return json.loads(lines[-1])["step"] if lines else 0


# ------------------------------------------------------------------------------ the report


@dataclass(frozen=True)
class OverSeeds:
    """An arm's final held-out BLEU over seeds: the mean with its 95% Student t interval, each
    seed's value, and the value before training (every seed starts from the same model)."""

    mean: float
    ci95: tuple[float, float]
    per_seed: dict[int, float]
    before: float


@dataclass(frozen=True)
class ArmResult:
    """One arm over its seeds, greedy and (with sampled passes) sampled."""

    algo: str
    overrides: list[str]
    steps: int
    wall_seconds_mean: float
    greedy: OverSeeds
    sampled: OverSeeds | None


@dataclass(frozen=True)
class Difference:
    """An arm minus the reference, seed by seed: the per-seed differences, their mean with its
    95% paired t interval, and the paired t-test's two-sided p."""

    seeds: list[int]
    diffs: list[float]
    mean: float
    ci95: tuple[float, float]
    p_value: float


@dataclass(frozen=True)
class ArmDifference:
    greedy: Difference
    sampled: Difference | None
    steps_to_reach_reference: int | None
    """The first evaluated step where the arm's mean greedy curve reaches the reference's final mean."""
    curve: Difference | None = None
    """The greedy learning curve's mean over training (``eval.stats.curve_mean`` of the held-out
    BLEU at step 0 and every evaluation), seed by seed: faster learning shows here first."""


@dataclass(frozen=True)
class Comparison:
    """summary.json of ``leafrl compare``: every arm over the seeds, and every other arm minus the
    reference arm. ``headline`` is the first arm that is not the reference."""

    seeds: list[int]
    reference: str
    headline: str
    steps: int
    arms: dict[str, ArmResult]
    diffs: dict[str, ArmDifference]
    wall_seconds: float
    """This invocation's wall time (finished runs are reused)."""
    run_seconds_total: float
    """The runs' own wall times, summed."""


def load_run(out: Path) -> dict:
    """A finished run: its summary and {step: merged metrics} (the held-out metrics before
    training at step 0; a resumed run's repeated steps keep their last values)."""
    by_step: dict[int, dict] = {0: HeldOut.load(out / "before.json").metrics()}
    for line in (out / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        by_step.setdefault(row["step"], {}).update(row)
    return {"summary": RunSummary.load(out / "summary.json"), "steps": dict(sorted(by_step.items()))}


def curve(runs: Sequence[dict], key: str) -> tuple[list[int], list[list[float]]]:
    """The steps where every run logged ``key`` and each run's values there ([runs][steps])."""
    steps = sorted(set.intersection(*[{s for s, row in r["steps"].items() if key in row} for r in runs]))
    return steps, [[r["steps"][s][key] for s in steps] for r in runs]


def over_seeds(runs: dict[int, dict], decoding: str) -> OverSeeds | None:
    """``decoding``'s final BLEU of ``runs`` ({seed: load_run}), None when a run has none."""
    after = {s: r["summary"].bleu(decoding, "after") for s, r in runs.items()}
    if any(v is None for v in after.values()):
        return None
    mean, low, high = t_interval(list(after.values()))
    return OverSeeds(mean, (low, high), after, next(iter(runs.values()))["summary"].bleu(decoding, "before"))


def summarize(arms: Sequence[Arm], seeds: Sequence[int], results: dict[str, dict[int, dict]], reference: Arm,
              wall_seconds: float) -> Comparison:
    """The comparison's numbers from finished runs (``results[arm][seed]`` = ``load_run``), each
    arm against ``reference``."""
    entries = {}
    for arm in arms:
        runs = results[arm.name]
        entries[arm.name] = ArmResult(arm.algo, list(arm.overrides), runs[seeds[0]]["summary"].steps,
                                      sum(runs[s]["summary"].wall_seconds for s in seeds) / len(seeds),
                                      over_seeds(runs, "greedy"), over_seeds(runs, "sampled"))
    ref = entries[reference.name]
    ref_steps, ref_values = curve([results[reference.name][s] for s in seeds], "valid_bleu")
    diffs = {}
    for arm in arms:
        if arm is reference:
            continue
        entry = entries[arm.name]
        sampled = None
        if entry.sampled is not None and ref.sampled is not None:
            sampled = Difference(**paired_difference(entry.sampled.per_seed, ref.sampled.per_seed))
        steps, values = curve([results[arm.name][s] for s in seeds], "valid_bleu")
        mean_curve = [sum(v[i] for v in values) / len(values) for i in range(len(steps))]
        areas = None
        if steps == ref_steps:
            areas = Difference(**paired_difference(dict(zip(seeds, (curve_mean(steps, v) for v in values))),
                                                   dict(zip(seeds, (curve_mean(steps, v) for v in ref_values)))))
        diffs[arm.name] = ArmDifference(Difference(**paired_difference(entry.greedy.per_seed, ref.greedy.per_seed)),
                                        sampled, steps_to_reach(steps, mean_curve, ref.greedy.mean), areas)
    headline = next(a.name for a in arms if a is not reference)
    total = sum(r["summary"].wall_seconds for runs in results.values() for r in runs.values())
    return Comparison(list(seeds), reference.name, headline, entries[headline].steps, entries, diffs, wall_seconds,
                      total)


def write_report(out: Path, arms: Sequence[Arm], seeds: Sequence[int], base: TrainConfig, reference: Arm,
                 wall_seconds: float) -> Comparison:
    """Read the finished runs, write summary.json, the plots and report.md."""
    from leafrl.viz.plots import band_plot

    results = {arm.name: {s: load_run(out / "runs" / arm.slug / f"seed-{s}") for s in seeds} for arm in arms}
    summary = summarize(arms, seeds, results, reference, wall_seconds)

    def series(key: str, smooth: int = 1) -> dict[str, tuple[list[int], list[list[float]]]]:
        found = {arm.name: curve(list(results[arm.name].values()), key) for arm in arms}
        return {name: (steps, _smooth(v, smooth)) for name, (steps, v) in found.items() if steps}

    band_plot(out / "bleu.png", [("greedy", series("valid_bleu")), ("sampled, mean of passes",
                                                                      series("valid_bleu_sampled"))],
              "held-out BLEU (lowercased) vs RL step", "BLEU", f"mean over {len(seeds)} seeds; band: min to max")
    band_plot(out / "reward.png", [("training reward", series("reward_mean", 10))], "training reward vs step",
              "mean reward", f"rolling mean over 10 steps; band: min to max over {len(seeds)} seeds")
    forks = {f"{name}: fires": s for name, s in series("fork_fire_rate", 10).items()}
    usable = {f"{name}: usable": s for name, s in series("usable_fork_fire_rate", 10).items()}
    if forks:
        band_plot(out / "forks.png", [("fork-fire rate", {**forks, **usable})], "LEAF fork-fire rate vs step",
                  "share of boundaries", "rolling mean over 10 steps; usable: a node whose value differs from "
                  "its parent's")
    write_text_atomic(out / "summary.json", json.dumps(dataclasses.asdict(summary), indent=2))
    write_text_atomic(out / "report.md", report_text(summary, base, arms, bool(forks)))
    return summary


def _smooth(values: list[list[float]], window: int) -> list[list[float]]:
    """Trailing rolling mean of each run's values."""
    if window <= 1:
        return values
    return [[sum(v[max(0, i - window + 1):i + 1]) / len(v[max(0, i - window + 1):i + 1]) for i in range(len(v))]
            for v in values]


def interval(ci95: Sequence[float], seeds: int, *, signed: bool = False) -> str:
    """A 95% interval over ``seeds`` seeds as "[low, high]"; one seed leaves no spread to estimate
    it from, so "[n/a: one seed]"."""
    sign = "+" if signed else ""
    return "[n/a: one seed]" if seeds < 2 else f"[{ci95[0]:{sign}.2f}, {ci95[1]:{sign}.2f}]"


def _ci(entry: OverSeeds) -> str:
    return f"{entry.mean:.2f} {interval(entry.ci95, len(entry.per_seed))}"


def report_text(summary: Comparison, base: TrainConfig, arms: Sequence[Arm], forks: bool) -> str:
    """report.md: the tables, the plots and the exact settings."""
    seeds = summary.seeds
    lines = [f"# {' vs '.join(a.name for a in arms)}: {summary.steps} steps, seeds {seeds}", "",
             f"Held-out BLEU (sacrebleu, lowercased) after training; mean over {len(seeds)} seeds with its 95% "
             "Student t interval. Every arm starts from the same model, with the same prompts, K, LoRA budget and "
             "seeds.", "",
             "| arm | greedy | sampled (mean of passes) | before (greedy / sampled) | wall per run |",
             "|---|---|---|---|---|"]
    for name, entry in summary.arms.items():
        sampled = _ci(entry.sampled) if entry.sampled is not None else "-"
        before = f"{entry.greedy.before:.2f}" + (f" / {entry.sampled.before:.2f}" if entry.sampled is not None else "")
        wall = f"{entry.wall_seconds_mean / 60:.1f} min"
        lines.append(f"| {name} | {_ci(entry.greedy)} | {sampled} | {before} | {wall} |")
    ref = summary.reference
    lines += ["", f"## Paired difference, each arm minus {ref}, seed by seed", "",
              "Mean of the per-seed differences with its 95% paired t interval and the paired t-test's two-sided p.",
              ""]
    for name, diff in summary.diffs.items():
        lines += [f"### {name} - {ref}", "", "| decoding | " + " | ".join(f"seed {s}" for s in seeds)
                  + " | mean [95% CI] | p |", "|---|" + "---|" * (len(seeds) + 2)]
        for label, d in (("greedy", diff.greedy), ("sampled", diff.sampled),
                         ("greedy, mean over the learning curve", diff.curve)):
            if d is not None:
                per_seed = " | ".join(f"{x:+.2f}" for x in d.diffs)
                p = f"{d.p_value:.3f}" if len(d.seeds) > 1 else "n/a: one seed"
                lines.append(f"| {label} | {per_seed} | {d.mean:+.2f} {interval(d.ci95, len(d.seeds), signed=True)} "
                             f"| {p} |")
        reach = diff.steps_to_reach_reference
        reached = f"{reach}." if reach is not None else "not reached."
        lines += ["", f"Steps for {name} (mean over seeds, at the evaluations) to reach {ref}'s final greedy BLEU "
                      f"({summary.arms[ref].greedy.mean:.2f}): {reached}", ""]
    lines += ["## Plots", "", "![held-out BLEU](bleu.png)", "", "![training reward](reward.png)", ""]
    if forks:
        lines += ["![fork-fire rate](forks.png)", ""]
    lines += [f"Wall time of the command that wrote this report: {summary.wall_seconds / 60:.1f} min (finished runs "
              f"are reused); the runs' own wall times add up to {summary.run_seconds_total / 60:.1f} min.", "",
              "## Settings", "", "Every run: these settings, with the arm's overrides, `algo` and `seed`.", "",
              "```yaml", yaml.safe_dump({k: v for k, v in to_dict(base).items() if k not in ("out", "seed")},
                                        sort_keys=False).rstrip(), "```", "",
              "| arm | algo | overrides |", "|---|---|---|"]
    lines += [f"| {a.name} | {a.algo} | {' '.join(a.overrides) or '-'} |" for a in arms]
    return "\n".join(lines) + "\n"


def compare(base: TrainConfig, arms: Sequence[Arm], seeds: Sequence[int], out: Path, *, jobs: int,
            console: Console, quiet: bool = False, reference: str | None = None) -> Comparison:
    """Train (or reuse) every run, then write the report; each arm is compared with ``reference``
    (an arm's name; the last arm when None)."""
    if not seeds or len(set(seeds)) != len(seeds):
        raise UserError(f"--seeds: give distinct seeds, got {list(seeds)}")
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    ref = arms[-1] if reference is None else next((a for a in arms if a.name == reference), None)
    if ref is None:
        raise UserError(f"--reference {reference}: not one of the arms ({', '.join(a.name for a in arms)})")
    started = time.time()
    locate_data(base.data)  # a built-in task is synthesized once, before the workers start
    base = dataclasses.replace(base, out=str(out))
    with held(out, names=()):  # one comparison writes here at a time; each run holds its own directory
        runs = plan(base, arms, seeds, out)
        run_all(runs, jobs, console, quiet, out)
        return write_report(out, arms, seeds, base, ref, time.time() - started)
