"""``leafrl compare``: arms (LEAF, GRPO, LEAF variants) trained from the same start with the same
K, steps, prompts, LoRA budget and seeds, then one self-contained report directory.

    OUT/runs/<arm>/seed-<s>/   one ``leafrl train`` run each (resumable; finished ones are reused)
    OUT/report.md              held-out BLEU per arm (mean, 95% t interval over seeds), the paired
                               difference per seed, steps to reach the reference arm, wall time, settings
    OUT/summary.json           the same numbers for scripts
    OUT/bleu.png, reward.png, forks.png

Seed s of every arm shares the LoRA initialization, the prompt order and the held-out rows, so
the arms are compared seed by seed (a paired t interval of the per-seed differences).
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from leafrl._files import write_text_atomic
from leafrl.config import TrainConfig, apply_overrides, from_dict, resolve_paths, to_dict
from leafrl.eval.stats import paired_difference, steps_to_reach, t_interval
from leafrl.tracking import progress_bar


@dataclass(frozen=True)
class Arm:
    """One compared configuration: ``name`` as the user wrote it (``leaf``, ``grpo`` or
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
        if algo not in ("leaf", "grpo") or any("=" not in o for o in overrides):
            raise ValueError(f"--algos: {item!r} is not an arm; write leaf, grpo, or an algorithm followed by "
                             "overrides, e.g. leaf:leaf.boundaries=trie")
        arms.append(Arm(item, algo, tuple(overrides)))
    if len(arms) < 2 or len({a.name for a in arms}) != len(arms):
        raise ValueError(f"--algos {spec!r}: give at least two different arms")
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
        raise ValueError(f"{out} holds a run with other settings than this comparison's; give another --out or "
                         "remove that directory")
    return "done" if (out / "summary.json").is_file() else "resume"  # from its checkpoint, or from step 0


def _train_one(cfg: dict, resume: bool, threads: int) -> dict:
    """One run in a worker process (``threads`` intra-op threads, quiet)."""
    import warnings

    import torch
    from transformers.utils import logging as hf_logging

    from leafrl.trainer import train

    warnings.filterwarnings("ignore", category=FutureWarning)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    torch.set_num_threads(threads)
    return train(from_dict(TrainConfig, cfg), resume=resume, quiet=True)


def run_all(runs: list[tuple[Arm, int, TrainConfig]], jobs: int, console: Console, quiet: bool) -> None:
    """Train every run not finished yet, ``jobs`` at a time in worker processes (the cores split
    between them), with one progress bar over all their steps."""
    import multiprocessing
    import os

    todo = [(arm, seed, cfg, state_of(cfg)) for arm, seed, cfg in runs]
    todo = [t for t in todo if t[3] != "done"]
    if len(todo) < len(runs):
        console.print(f"reusing {len(runs) - len(todo)} finished runs")
    if not todo:
        return
    jobs = max(1, min(jobs, len(todo)))
    threads = max(1, (os.cpu_count() or 1) // jobs)
    total = sum(cfg.steps for _, _, cfg, _ in todo)
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool, \
            progress_bar("compare", console, quiet) as bar:
        futures = {pool.submit(_train_one, to_dict(cfg), state == "resume", threads): (arm, seed, cfg)
                   for arm, seed, cfg, state in todo}
        task = bar.add_task("compare", total=total, info="")
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, timeout=2.0, return_when=FIRST_COMPLETED)
            for future in finished:
                arm, seed, cfg = futures[future]
                if future.exception() is not None:
                    pool.shutdown(wait=False, cancel_futures=True)
                    raise ValueError(f"run {arm.name} seed {seed} ({cfg.out}) failed: {future.exception()}; the "
                                     "runs finished so far are kept, run the same command again to go on") \
                        from future.exception()
            done = sum(_last_step(Path(cfg.out)) for _, _, cfg, _ in todo)
            bar.update(task, completed=done, info=f"runs {len(futures) - len(pending)}/{len(futures)}")


def _last_step(out: Path) -> int:
    path = out / "metrics.jsonl"
    if not path.is_file():
        return 0
    lines = path.read_text().splitlines()
    return json.loads(lines[-1])["step"] if lines else 0


# ------------------------------------------------------------------------------ the report


def load_run(out: Path) -> dict:
    """A finished run: its summary and {step: merged metrics} (the held-out metrics before
    training at step 0; a resumed run's repeated steps keep their last values)."""
    summary = json.loads((out / "summary.json").read_text())
    by_step: dict[int, dict] = {0: json.loads((out / "before.json").read_text())["metrics"]}
    for line in (out / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        by_step.setdefault(row["step"], {}).update(row)
    return {"summary": summary, "steps": dict(sorted(by_step.items()))}


def curve(runs: Sequence[dict], key: str) -> tuple[list[int], list[list[float]]]:
    """The steps where every run logged ``key`` and each run's values there ([runs][steps])."""
    steps = sorted(set.intersection(*[{s for s, row in r["steps"].items() if key in row} for r in runs]))
    return steps, [[r["steps"][s][key] for s in steps] for r in runs]


def summarize(arms: Sequence[Arm], seeds: Sequence[int], results: dict[str, dict[int, dict]]) -> dict:
    """The comparison's numbers from finished runs (``results[arm][seed]`` = ``load_run``).
    The reference arm is GRPO when compared, else the last arm; "diff_*" is the first arm
    minus the reference."""
    reference = next((a for a in arms if a.name == "grpo"), arms[-1])
    out: dict[str, Any] = {"seeds": list(seeds), "reference": reference.name, "arms": {}}
    for arm in arms:
        runs = results[arm.name]
        entry: dict[str, Any] = {"algo": arm.algo, "overrides": list(arm.overrides)}
        for key in ("valid_bleu", "valid_bleu_sampled"):
            if all(f"{key}_after" in runs[s]["summary"] for s in seeds):
                mean, low, high = t_interval([runs[s]["summary"][f"{key}_after"] for s in seeds])
                entry[key] = {"mean": mean, "ci95": [low, high],
                              "per_seed": {s: runs[s]["summary"][f"{key}_after"] for s in seeds},
                              "before": runs[seeds[0]]["summary"][f"{key}_before"]}
        entry["steps"] = runs[seeds[0]]["summary"]["steps"]
        entry["wall_seconds_mean"] = sum(runs[s]["summary"]["wall_seconds"] for s in seeds) / len(seeds)
        out["arms"][arm.name] = entry
    ref = out["arms"][reference.name]
    out["diffs"] = {}
    for arm in arms:
        if arm is reference:
            continue
        entry = out["arms"][arm.name]
        diff = {key: paired_difference(entry[key]["per_seed"], ref[key]["per_seed"])
                for key in ("valid_bleu", "valid_bleu_sampled") if key in entry and key in ref}
        steps, values = curve([results[arm.name][s] for s in seeds], "valid_bleu")
        mean_curve = [sum(v[i] for v in values) / len(values) for i in range(len(steps))]
        diff["steps_to_reach_reference"] = steps_to_reach(steps, mean_curve, ref["valid_bleu"]["mean"])
        out["diffs"][arm.name] = diff
    first = arms[0] if arms[0] is not reference else arms[1]
    for arm in arms:
        if arm.name in ("leaf", "grpo"):
            out[f"{arm.name}_bleu_mean"] = out["arms"][arm.name]["valid_bleu"]["mean"]
            if "valid_bleu_sampled" in out["arms"][arm.name]:
                out[f"{arm.name}_bleu_sampled_mean"] = out["arms"][arm.name]["valid_bleu_sampled"]["mean"]
    d = out["diffs"][first.name]
    out.update(diff_of=f"{first.name} - {reference.name}", diff_mean=d["valid_bleu"]["mean"],
               diff_ci95=d["valid_bleu"]["ci95"], steps=out["arms"][first.name]["steps"])
    if "valid_bleu_sampled" in d:
        out.update(diff_sampled_mean=d["valid_bleu_sampled"]["mean"], diff_sampled_ci95=d["valid_bleu_sampled"]["ci95"])
    return out


def write_report(out: Path, arms: Sequence[Arm], seeds: Sequence[int], base: TrainConfig,
                 wall_seconds: float) -> dict:
    """Read the finished runs, write summary.json, the plots and report.md; returns the summary."""
    from leafrl.viz.plots import band_plot

    results = {arm.name: {s: load_run(out / "runs" / arm.slug / f"seed-{s}") for s in seeds} for arm in arms}
    summary = summarize(arms, seeds, results)
    summary["wall_seconds"] = wall_seconds  # this invocation's: it reuses finished runs
    summary["run_seconds_total"] = sum(r["summary"]["wall_seconds"] for runs in results.values() for r in runs.values())

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
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2))
    write_text_atomic(out / "report.md", report_text(summary, base, arms, bool(forks)))
    return summary


def _smooth(values: list[list[float]], window: int) -> list[list[float]]:
    """Trailing rolling mean of each run's values."""
    if window <= 1:
        return values
    return [[sum(v[max(0, i - window + 1):i + 1]) / len(v[max(0, i - window + 1):i + 1]) for i in range(len(v))]
            for v in values]


def _ci(entry: dict) -> str:
    low, high = entry["ci95"]
    return f"{entry['mean']:.2f} [{low:.2f}, {high:.2f}]"


def report_text(summary: dict, base: TrainConfig, arms: Sequence[Arm], forks: bool) -> str:
    """report.md: the tables, the plots and the exact settings."""
    seeds = summary["seeds"]
    lines = [f"# {' vs '.join(a.name for a in arms)}: {summary['steps']} steps, seeds {seeds}", "",
             f"Held-out BLEU (sacrebleu, lowercased) after training; mean over {len(seeds)} seeds with its 95% "
             "Student t interval. Every arm starts from the same model, with the same prompts, K, LoRA budget and "
             "seeds.", "",
             "| arm | greedy | sampled (mean of passes) | before (greedy / sampled) | wall per run |",
             "|---|---|---|---|---|"]
    for name, entry in summary["arms"].items():
        sampled = _ci(entry["valid_bleu_sampled"]) if "valid_bleu_sampled" in entry else "-"
        before = f"{entry['valid_bleu']['before']:.2f}" + (
            f" / {entry['valid_bleu_sampled']['before']:.2f}" if "valid_bleu_sampled" in entry else "")
        lines.append(f"| {name} | {_ci(entry['valid_bleu'])} | {sampled} | {before} | "
                     f"{entry['wall_seconds_mean'] / 60:.1f} min |")
    ref = summary["reference"]
    lines += ["", f"## Paired difference, each arm minus {ref}, seed by seed", "",
              "Mean of the per-seed differences with its 95% paired t interval and the paired t-test's two-sided p.",
              ""]
    for name, diff in summary["diffs"].items():
        lines += [f"### {name} - {ref}", "", "| decoding | " + " | ".join(f"seed {s}" for s in seeds)
                  + " | mean [95% CI] | p |", "|---|" + "---|" * (len(seeds) + 2)]
        for key, label in (("valid_bleu", "greedy"), ("valid_bleu_sampled", "sampled")):
            if key in diff:
                d = diff[key]
                per_seed = " | ".join(f"{x:+.2f}" for x in d["diffs"])
                lines.append(f"| {label} | {per_seed} | {d['mean']:+.2f} [{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}] "
                             f"| {d['p_value']:.3f} |")
        reach = diff["steps_to_reach_reference"]
        lines += ["", f"Steps for {name} (mean over seeds, at the evaluations) to reach {ref}'s final greedy BLEU "
                      f"({summary['arms'][ref]['valid_bleu']['mean']:.2f}): "
                      + (f"{reach}." if reach is not None else "not reached."), ""]
    lines += ["## Plots", "", "![held-out BLEU](bleu.png)", "", "![training reward](reward.png)", ""]
    if forks:
        lines += ["![fork-fire rate](forks.png)", ""]
    lines += [f"Wall time of the command that wrote this report: {summary['wall_seconds'] / 60:.1f} min (finished runs "
              f"are reused); the runs' own wall times add up to {summary['run_seconds_total'] / 60:.1f} min.", "",
              "## Settings", "", "Every run: these settings, with the arm's overrides, `algo` and `seed`.", "",
              "```yaml", yaml.safe_dump({k: v for k, v in to_dict(base).items() if k not in ("out", "seed")},
                                        sort_keys=False).rstrip(), "```", "",
              "| arm | algo | overrides |", "|---|---|---|"]
    lines += [f"| {a.name} | {a.algo} | {' '.join(a.overrides) or '-'} |" for a in arms]
    return "\n".join(lines) + "\n"


def compare(base: TrainConfig, arms: Sequence[Arm], seeds: Sequence[int], out: Path, *, jobs: int,
            console: Console, quiet: bool = False) -> dict:
    """Train (or reuse) every run, then write the report; returns its summary."""
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds: give distinct seeds, got {list(seeds)}")
    started = time.time()
    base = dataclasses.replace(base, out=str(out))
    runs = plan(base, arms, seeds, out)
    run_all(runs, jobs, console, quiet)
    return write_report(out, arms, seeds, base, time.time() - started)
