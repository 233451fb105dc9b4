"""leafrl compare: the arms, the run states, and the report's numbers on synthetic runs with
known answers."""

import json

import pytest
import yaml

from leafrl.compare import Arm, parse_arms, plan, state_of, write_report
from leafrl.config import TrainConfig, save_config, to_dict
from leafrl.summary import HeldOut, RunSummary


def test_parse_arms():
    arms = parse_arms("leaf,grpo,leaf:leaf.boundaries=trie:leaf.fork_budget=4,leafrl")
    assert [a.algo for a in arms] == ["leaf", "grpo", "leaf", "leafrl"]
    assert arms[2].overrides == ("leaf.boundaries=trie", "leaf.fork_budget=4")
    assert arms[2].slug == "leaf+leaf.boundaries=trie+leaf.fork_budget=4"
    for bad in ("leaf", "leaf,leaf", "ppo,grpo", "leaf:fork_budget,grpo"):
        with pytest.raises(ValueError, match="--algos"):
            parse_arms(bad)


def test_plan_pairs_seeds_across_arms(tmp_path):
    runs = plan(TrainConfig(steps=3), parse_arms("leaf,grpo:leaf.fork_budget=1"), [0, 7], tmp_path)
    assert [(a.name, s, c.algo, c.seed) for a, s, c in runs] == [
        ("leaf", 0, "leaf", 0), ("leaf", 7, "leaf", 7), ("grpo:leaf.fork_budget=1", 0, "grpo", 0),
        ("grpo:leaf.fork_budget=1", 7, "grpo", 7)]
    assert runs[3][2].out == str(tmp_path / "runs" / "grpo+leaf.fork_budget=1" / "seed-7")
    assert runs[3][2].leaf.fork_budget == 1 and runs[0][2].steps == 3


def test_state_of_reuses_only_the_same_settings(tmp_path):
    cfg = TrainConfig(out=str(tmp_path / "r"), steps=3)
    assert state_of(cfg) == "new"
    save_config(cfg, tmp_path / "r" / "config.yaml")
    assert state_of(cfg) == "resume"  # started, no checkpoint yet: resumed from step 0 in place
    (tmp_path / "r" / "summary.json").write_text("{}")
    assert state_of(cfg) == "done"
    with pytest.raises(ValueError, match="other settings"):
        state_of(TrainConfig(out=str(tmp_path / "r"), steps=4))


def fake_run(out, final, curve, sampled, reward, fork=None):
    """A finished run: before at step 0, evaluations at 2 and 4 (the last in summary/after)."""
    out.mkdir(parents=True)
    save_config(TrainConfig(out=str(out)), out / "config.yaml")
    HeldOut(curve[0], 5.0, 0.0, ["a"], [["a"]]).save(out / "before.json")
    rows = []
    for step in range(1, 5):
        row = {"step": step, "reward_mean": reward * step}
        if fork is not None:
            row.update(fork_fire_rate=fork, usable_fork_fire_rate=fork / 2)
        if step == 2:
            row["valid_bleu"], row["valid_bleu_sampled"] = curve[1], sampled - 1
        rows.append(row)
    rows.append({"step": 4, "valid_bleu": final, "valid_bleu_sampled": sampled})
    (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    RunSummary(algo="leaf", steps=4, processes=1, valid_examples=10, wall_seconds=60.0, valid_bleu_before=curve[0],
               valid_bleu_after=final, valid_bleu_p_value=0.5, valid_bleu_sampled_before=5.0,
               valid_bleu_sampled_after=sampled).save(out / "summary.json")


def test_report_numbers_on_known_runs(tmp_path):
    arms = parse_arms("leaf,grpo")
    # greedy: LEAF 30, 32, 34 vs GRPO 29, 30, 31 -> diffs 1, 2, 3: mean 2, t CI 2 -+ 2.484138
    for seed, (leaf, grpo) in enumerate([(30.0, 29.0), (32.0, 30.0), (34.0, 31.0)]):
        fake_run(tmp_path / "runs" / "leaf" / f"seed-{seed}", leaf, [10.0, 31.0], 20.0 + seed, 0.1, fork=0.6)
        fake_run(tmp_path / "runs" / "grpo" / f"seed-{seed}", grpo, [10.0, 20.0], 20.0, 0.1)
    summary = write_report(tmp_path, arms, [0, 1, 2], TrainConfig(steps=4), arms[-1], wall_seconds=120.0)
    assert summary.arms["leaf"].greedy.mean == pytest.approx(32.0) and summary.arms["grpo"].greedy.mean == 30.0
    assert (summary.headline, summary.reference) == ("leaf", "grpo")
    diff = summary.diffs["leaf"]
    assert diff.greedy.mean == pytest.approx(2.0) and diff.greedy.diffs == [1.0, 2.0, 3.0]
    assert diff.greedy.ci95 == pytest.approx((2 - 2.484138, 2 + 2.484138), abs=1e-5)
    assert diff.sampled.mean == pytest.approx(1.0)  # 20, 21, 22 vs 20
    assert summary.seeds == [0, 1, 2] and summary.steps == 4
    assert summary.wall_seconds == 120.0 and summary.run_seconds_total == 6 * 60.0
    # LEAF's mean curve is 10, 31, 32 at steps 0, 2, 4: it passes GRPO's final 30 at step 2
    assert diff.steps_to_reach_reference == 2
    # the curves' means (trapezoids over steps 0-4): LEAF seed 0 (10, 31, 30): (2 * 20.5 + 2 * 30.5) / 4 = 25.5,
    # GRPO seed 0 (10, 20, 29): (2 * 15 + 2 * 24.5) / 4 = 19.75; the final difference grows by 1 a seed, its share 1/4
    assert diff.curve.diffs == pytest.approx([5.75, 6.0, 6.25])
    leaf = summary.arms["leaf"].greedy
    assert leaf.ci95 == pytest.approx((32 - 4.968275, 32 + 4.968275), abs=1e-5)  # sd 2
    assert leaf.per_seed == {0: 30.0, 1: 32.0, 2: 34.0} and leaf.before == 10.0
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["diffs"]["leaf"]["greedy"]["mean"] == pytest.approx(2.0) and saved["headline"] == "leaf"
    text = (tmp_path / "report.md").read_text()
    assert "| greedy | +1.00 | +2.00 | +3.00 | +2.00 [-0.48, +4.48] | 0.074 |" in text
    assert "to reach grpo's final greedy BLEU (30.00): 2." in text
    assert "| greedy, mean over the learning curve | +5.75 | +6.00 | +6.25 | +6.00 [" in text
    assert yaml.safe_load(text.split("```yaml")[1].split("```")[0])["steps"] == 4
    for png in ("bleu.png", "reward.png", "forks.png"):
        assert (tmp_path / png).stat().st_size > 10_000


def test_any_arm_can_be_the_reference(tmp_path):
    arms = [Arm("grpo", "grpo", ()), Arm("leaf:leaf.terms=global", "leaf", ("leaf.terms=global",))]
    for seed in (0, 1):
        fake_run(tmp_path / "runs" / "grpo" / f"seed-{seed}", 30.0, [10.0, 20.0], 20.0, 0.1)
        fake_run(tmp_path / "runs" / arms[1].slug / f"seed-{seed}", 29.0 + seed, [10.0, 15.0], 20.0, 0.1)
    summary = write_report(tmp_path, arms, [0, 1], TrainConfig(steps=4), arms[0], wall_seconds=1.0)
    assert summary.reference == "grpo" and summary.headline == "leaf:leaf.terms=global"
    assert summary.diffs["leaf:leaf.terms=global"].greedy.mean == pytest.approx(-0.5)
    assert summary.diffs["leaf:leaf.terms=global"].steps_to_reach_reference is None
    assert not (tmp_path / "forks.png").exists()
    # the other way round: the LEAF variant as the reference, GRPO the arm compared with it
    summary = write_report(tmp_path, arms, [0, 1], TrainConfig(steps=4), arms[1], wall_seconds=1.0)
    assert summary.reference == "leaf:leaf.terms=global" and summary.headline == "grpo"
    assert summary.diffs["grpo"].greedy.mean == pytest.approx(0.5) and set(summary.diffs) == {"grpo"}
    assert "## Paired difference, each arm minus leaf:leaf.terms=global" in (tmp_path / "report.md").read_text()
    assert to_dict(TrainConfig())["algo"] == "leaf"


def test_compare_refuses_a_reference_that_is_no_arm(tmp_path):
    from rich.console import Console

    from leafrl.compare import compare
    from leafrl.errors import UserError

    with pytest.raises(UserError, match="--reference ppo: not one of the arms"):
        compare(TrainConfig(), parse_arms("leaf,grpo"), [0], tmp_path, jobs=1, console=Console(quiet=True),
                reference="ppo")


def test_compare_end_to_end_evaluates_the_shared_start_once(tmp_path):
    """Two arms (grpo and leafrl) x one seed on a tiny SALLM, in a worker process: one start file,
    recorded by both runs as their before.json, and a report."""
    from rich.console import Console

    from conftest import save_tiny_sallm, tone_dataset
    from leafrl.compare import compare, start_of
    from leafrl.config import apply_overrides
    from leafrl.summary import HeldOut

    data = tone_dataset(tmp_path / "data", n_train=8, n_valid=4)
    save_tiny_sallm(tmp_path / "model")
    base = apply_overrides(TrainConfig(), [
        f"data={data}", f"model={tmp_path / 'model'}", "steps=2", "eval.every=1", "eval.examples=4",
        "eval.sampled_passes=1", "rollout.rollout_budget=3", "rollout.prompts_per_step=2",
        "rollout.max_new_tokens=6", "optim.lr=5e-2", "lora.rank=4", "lora.alpha=8", "reward=chrf"])
    out = tmp_path / "cmp"
    summary = compare(base, parse_arms("grpo,leafrl"), [0], out, jobs=1, console=Console(quiet=True))
    assert set(summary.arms) == {"grpo", "leafrl"} and (out / "report.md").is_file()
    starts = list((out / "starts").glob("*.json"))
    assert starts == [start_of(base, out)]
    start = HeldOut.load(starts[0])
    for arm in ("grpo", "leafrl"):
        assert HeldOut.load(out / "runs" / arm / "seed-0" / "before.json") == start
    assert start_of(apply_overrides(base, ["eval.every=7"]), out) == starts[0]  # when it evaluates does not count
    assert start_of(apply_overrides(base, ["eval.examples=3"]), out) != starts[0]
